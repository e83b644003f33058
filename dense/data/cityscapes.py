"""Cityscapes semantic segmentation: label table and a validating torch Dataset.

Layout (the official one, as downloaded from cityscapes-dataset.com)::

    root/leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png     RGB, uint8
    root/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      L, uint8 labelIds

Ground truth is stored as *labelIds* (0..33, the ids of ``cityscapesscripts.helpers.labels``);
training and evaluation use the 19 *trainIds* (0..18) with 255 = ignore. The mapping is taken
from cityscapesscripts, never retyped, so it is the one the official evaluator uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from PIL import Image
from torch.utils.data import Dataset

from dense.constants import IGNORE_INDEX
from dense.data.report import DataError, ids_text

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "LABEL_ID_TO_TRAIN_ID",
    "NUM_CLASSES",
    "TRAIN_ID_TO_LABEL_ID",
    "VALID_LABEL_IDS",
    "CityscapesDataError",
    "CityscapesSegmentation",
    "colorize_train_ids",
    "label_ids_to_train_ids",
    "looks_like_train_ids",
    "train_ids_to_label_ids",
]


# Labels evaluated by the benchmark: ignoreInEval False. Their trainIds are 0..18, one labelId each.
_EVAL_LABELS = sorted((lb for lb in _CS_LABELS if not lb.ignoreInEval), key=lambda lb: lb.trainId)
NUM_CLASSES = len(_EVAL_LABELS)
assert [lb.trainId for lb in _EVAL_LABELS] == list(range(NUM_CLASSES)), "unexpected Cityscapes label table"

CITYSCAPES_CLASSES: tuple[str, ...] = tuple(lb.name for lb in _EVAL_LABELS)
"""The 19 class names, indexed by trainId (road, sidewalk, ..., bicycle)."""

CITYSCAPES_PALETTE: np.ndarray = np.array([lb.color for lb in _EVAL_LABELS], dtype=np.uint8)
"""[19, 3] uint8 RGB colours of the official label table, indexed by trainId."""

VALID_LABEL_IDS: frozenset[int] = frozenset(lb.id for lb in _CS_LABELS if lb.id >= 0)
"""Values a gtFine_labelIds PNG may contain (0..33; 'license plate' has id -1 and is never drawn)."""


def _build_label_lut() -> np.ndarray:
    # 256 entries so a uint8 image can index it directly; anything not evaluated -> 255.
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lb in _CS_LABELS:
        if lb.id >= 0 and not lb.ignoreInEval and 0 <= lb.trainId < NUM_CLASSES:
            lut[lb.id] = lb.trainId
    return lut


LABEL_ID_TO_TRAIN_ID: np.ndarray = _build_label_lut()
"""[256] uint8 lookup: labelId -> trainId (0..18), 255 for void / not evaluated / unknown values."""

TRAIN_ID_TO_LABEL_ID: np.ndarray = np.zeros(256, dtype=np.uint8)
"""[256] uint8 lookup: trainId -> labelId; 255 and any other non-class value -> 0 ('unlabeled')."""
for _lb in _EVAL_LABELS:
    TRAIN_ID_TO_LABEL_ID[_lb.trainId] = _lb.id

_COLOR_LUT = np.zeros((256, 3), dtype=np.uint8)
_COLOR_LUT[:NUM_CLASSES] = CITYSCAPES_PALETTE


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a labelIds array of any shape to trainIds (uint8, 255 = ignore), vectorised.

    Values outside 0..255 (possible in wider integer arrays) map to 255.
    """
    a = np.asarray(label_ids)
    if a.dtype != np.uint8:
        # a plain uint8 cast would wrap 263 to 7 (road): send out-of-range values to 255 first
        a = np.where((a >= 0) & (a <= 255), a, IGNORE_INDEX).astype(np.uint8)
    return LABEL_ID_TO_TRAIN_ID[a]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map trainIds (any integer array, 255 or out of range -> 'unlabeled' 0) to uint8 labelIds."""
    a = np.asarray(train_ids)
    a = np.where((a >= 0) & (a < NUM_CLASSES), a, IGNORE_INDEX).astype(np.uint8)
    return TRAIN_ID_TO_LABEL_ID[a]


def colorize_train_ids(train_ids: np.ndarray) -> np.ndarray:
    """[H, W] trainIds -> [H, W, 3] uint8 RGB in the Cityscapes palette (ignore = black)."""
    a = np.asarray(train_ids)
    a = np.where((a >= 0) & (a < NUM_CLASSES), a, IGNORE_INDEX).astype(np.uint8)
    return _COLOR_LUT[a]


class CityscapesDataError(DataError):
    """A Cityscapes folder that is not in the official layout or holds broken files."""


# labelIds that are void (not evaluated) but whose numbers are trainIds of common classes
# (9 parking / terrain, 10 rail track / sky, 14-16 guard rail, bridge, tunnel / truck, bus, train,
# 18 polegroup / bicycle): rare in real labelIds, frequent in trainIds.
_TRAIN_ID_TELLS = frozenset({9, 10, 14, 15, 16, 18})


def looks_like_train_ids(values: set[int] | frozenset[int]) -> bool:
    """Whether label values seen over a whole folder look like trainIds (0..18, 255) rather than
    labelIds: nothing above 18 (real labelIds have sky 23, vegetation 21, car 26 almost
    everywhere) and one of the void labelIds that are common trainIds (sky is 10)."""
    values = set(values) - {IGNORE_INDEX}
    return bool(values) and max(values) < NUM_CLASSES and bool(values & _TRAIN_ID_TELLS)


def _raise_all(problems: list[tuple[str, str]]) -> None:
    """Raise one error for every (kind, "path: message") problem: the first one in full, then the
    count of each kind and the first files (so a user fixes them all at once)."""
    if not problems:
        return
    text = problems[0][1]
    if len(problems) > 1:
        kinds: dict[str, list[str]] = {}
        for kind, msg in problems:
            kinds.setdefault(kind, []).append(msg.split(": ", 1)[0])
        text += f"; {len(problems)} problems in all: " + "; ".join(
            f"{len(v)} x {k} {ids_text(v, 5)}" for k, v in kinds.items()
        )
    raise CityscapesDataError(text)


IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
SPLITS = ("train", "val", "test")
_SCAN_VERSION = 1


@dataclass(frozen=True)
class CityscapesSample:
    """One scanned image: ``name`` is ``<city>_<seq>_<frame>``; ``label`` is None when absent."""

    name: str
    image: Path
    label: Path | None


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dense" / "cityscapes-scan"


def _label_values(path: Path) -> list[int]:
    """Decode one label PNG fully and return its sorted distinct values.

    A bincount over the uint8 buffer is ~1 ms per 1024x2048 label (np.unique sorts: ~30x slower);
    PNG decoding dominates and releases the GIL, so the scan runs in a thread pool.
    """
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt PNG data
        raise CityscapesDataError(f"{path}: cannot decode label PNG: {e}") from e
    if arr.dtype != np.uint8 or arr.ndim != 2:  # the header check in _scan should stop these
        raise CityscapesDataError(f"{path}: label is {arr.dtype} {arr.shape}, expected 8-bit single channel")
    counts = np.bincount(arr.reshape(-1), minlength=256)
    return np.flatnonzero(counts).tolist()


def _header(path: Path, what: str) -> tuple[tuple[int, int], str]:
    # PIL reads only the header until pixel data is requested: cheap size / mode check.
    try:
        with Image.open(path) as im:
            return im.size, im.mode
    except (OSError, SyntaxError, ValueError) as e:
        raise CityscapesDataError(f"{path}: cannot read {what} PNG: {e}") from e


class CityscapesSegmentation(Dataset):
    """Cityscapes fine annotations for semantic segmentation.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: "train", "val" or "test".
        transform: called as ``transform(image=HxWx3 uint8, mask=HxW uint8 trainIds)`` and must
            return a dict with ``image`` and ``mask`` numpy arrays (an albumentations Compose, see
            :mod:`dense.data.seg_transforms`); None keeps the full-resolution arrays.
        require_labels: a missing gtFine label is an error; default True except for "test"
            (public test labels are dummies). A missing optional label gives an all-255 mask.
        check_values: read every label at construction and reject values outside the
            Cityscapes label table (0..33). Costs one decode per label; results are cached.
        cache_dir: where to cache the value scan, keyed by each label's size and mtime, so an
            edited file is re-read. None: ``$XDG_CACHE_HOME/dense/cityscapes-scan``; False: off.
        num_workers: threads for the value scan (PNG decoding releases the GIL).

    Raises:
        CityscapesDataError at construction (before any training step), naming the file and the
        problem: missing folders, no images, an image without its label, a label without its
        image (always, even when labels are optional), an unreadable PNG, an image that is not
        RGB, a label that is not single channel, a label whose size differs from its image,
        label values outside the label table. Images are only header-checked here: a truncated
        image still fails in ``__getitem__``.

    Each sample is a dict:
        ``image``: float32 tensor [3, H, W] in [0, 1];
        ``mask``: int64 tensor [H, W] with trainIds 0..18 and 255 = ignore;
        ``name``: ``<city>_<seq>_<frame>``; ``path``: the image path (str).
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE
    num_classes = NUM_CLASSES
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        transform: Callable[..., dict[str, Any]] | None = None,
        require_labels: bool | None = None,
        check_values: bool = True,
        cache_dir: str | os.PathLike | None | bool = None,
        num_workers: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.require_labels = split != "test" if require_labels is None else require_labels
        self.samples = self._scan()
        if check_values:
            self._check_label_values(cache_dir, num_workers)
        self._seeded_key: tuple[int, int] | None = None

    # ------------------------------------------------------------------ scan
    def _scan(self) -> list[CityscapesSample]:
        img_dir = self.root / "leftImg8bit" / self.split
        gt_dir = self.root / "gtFine" / self.split
        if not img_dir.is_dir():
            raise CityscapesDataError(
                f"{img_dir}: image folder not found; expected the official layout "
                f"<root>/leftImg8bit/{self.split}/<city>/<city>_<seq>_<frame>{IMAGE_SUFFIX}"
            )
        if self.require_labels and not gt_dir.is_dir():
            raise CityscapesDataError(
                f"{gt_dir}: label folder not found; expected "
                f"<root>/gtFine/{self.split}/<city>/<city>_<seq>_<frame>{LABEL_SUFFIX}"
            )
        images = sorted(img_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not images:
            hint = ""
            if any(img_dir.glob(f"*{IMAGE_SUFFIX}")):
                hint = f"; images must sit in per-city folders: {img_dir}/<city>/"
            raise CityscapesDataError(f"{img_dir}: no <city>/*{IMAGE_SUFFIX} files found{hint}")
        labels: dict[str, Path] = {}
        if gt_dir.is_dir():
            labels = {p.relative_to(gt_dir).as_posix(): p for p in gt_dir.glob(f"*/*{LABEL_SUFFIX}")}

        samples = []
        problems: list[tuple[str, str]] = []  # (kind, "path: message"), every file, not only the first
        for img in images:
            name = img.name[: -len(IMAGE_SUFFIX)]
            rel = f"{img.parent.name}/{name}{LABEL_SUFFIX}"
            lab = labels.pop(rel, None)
            if lab is None and self.require_labels:
                problems.append(
                    ("image without label", f"{img}: image has no label; expected {gt_dir / rel}")
                )
                continue
            try:
                (iw, ih), imode = _header(img, "image")
                if imode != "RGB":
                    problems.append(("image not RGB", f"{img}: image mode is {imode}, expected 8-bit RGB"))
                if lab is not None:
                    (lw, lh), lmode = _header(lab, "label")
                    if lmode not in ("L", "P"):
                        hint = " (is this a _gtFine_color.png?)" if lmode in ("RGB", "RGBA") else ""
                        problems.append(
                            (
                                "label not single-channel",
                                f"{lab}: label mode is {lmode}, expected a single-channel 8-bit labelIds "
                                f"PNG{hint}",
                            )
                        )
                    elif (iw, ih) != (lw, lh):
                        problems.append(
                            (
                                "label size differs from image",
                                f"{lab}: label size {lw}x{lh} differs from image size {iw}x{ih} ({img})",
                            )
                        )
            except CityscapesDataError as e:
                problems.append(("unreadable PNG", str(e)))
                continue
            samples.append(CityscapesSample(name=name, image=img, label=lab))
        # A label without its image is a broken download / copy whether or not labels are required.
        for orphan in labels.values():
            expected = img_dir / orphan.parent.name / (orphan.name[: -len(LABEL_SUFFIX)] + IMAGE_SUFFIX)
            problems.append(("label without image", f"{orphan}: label has no image; expected {expected}"))
        _raise_all(problems)
        return samples

    def _check_label_values(self, cache_dir: os.PathLike | str | bool | None, workers: int | None) -> None:
        paths = [s.label for s in self.samples if s.label is not None]
        if not paths:
            return
        cache_path = None
        if cache_dir is not False:
            base = _default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
            key = hashlib.sha1(str(paths[0].parent.parent.resolve()).encode()).hexdigest()[:16]
            cache_path = base / f"{self.split}-{key}.json"
        cache: dict[str, Any] = {}
        if cache_path is not None and cache_path.is_file():
            try:
                data = json.loads(cache_path.read_text())
                if data.get("version") == _SCAN_VERSION:
                    cache = data["files"]
            except (OSError, ValueError, KeyError):
                cache = {}  # a broken cache is only a lost speed-up

        entries: dict[str, dict[str, Any]] = {}
        todo: list[tuple[str, Path, os.stat_result]] = []
        for p in paths:
            st = p.stat()
            key = str(p.resolve())
            hit = cache.get(key)
            if (
                isinstance(hit, dict)
                and isinstance(hit.get("values"), list)
                and hit.get("size") == st.st_size
                and hit.get("mtime_ns") == st.st_mtime_ns
            ):
                entries[key] = hit
            else:
                todo.append((key, p, st))
        if todo:
            workers = workers or min(8, os.cpu_count() or 1)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda t: _label_values(t[1]), todo))
            for (key, _p, st), values in zip(todo, results):
                entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "values": values}
            if cache_path is not None:
                # saved before the check: fixing one bad file then re-reads only that file
                self._write_cache(cache_path, {**cache, **entries})
        # Check every file (cached or not); the error names the first bad file in sorted order, then all.
        problems: list[tuple[str, str]] = []
        seen: set[int] = set()
        for p in paths:
            values = entries[str(p.resolve())]["values"]
            seen.update(values)
            bad = sorted(set(values) - VALID_LABEL_IDS)
            if bad:
                problems.append(
                    (
                        "label values outside the table",
                        f"{p}: label values {bad} are not Cityscapes labelIds "
                        f"(valid: 0..{max(VALID_LABEL_IDS)}); "
                        "is this a trainIds or colour PNG instead of *_gtFine_labelIds.png?",
                    )
                )
        _raise_all(problems)
        if looks_like_train_ids(seen):
            raise CityscapesDataError(
                f"{paths[0].parent.parent}: the labels look like trainIds, not labelIds: every value over "
                f"{len(paths)} files is in 0..{NUM_CLASSES - 1} ({sorted(seen)}) and the void labelIds "
                "9, 10, 14, 15, 16, 18 (rare in labelIds, common trainIds) occur; write labelIds in "
                "*_gtFine_labelIds.png (dense.data.cityscapes.train_ids_to_label_ids converts trainIds)"
            )

    @staticmethod
    def _write_cache(path: Path, files: dict[str, Any]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # write then rename: concurrent DDP ranks never see a half-written file
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump({"version": _SCAN_VERSION, "files": files}, f)
            os.replace(tmp, path)
        except OSError:
            pass  # read-only home: scanning still worked, only the cache is lost

    # ------------------------------------------------------------- samples
    def __len__(self) -> int:
        return len(self.samples)

    def _reseed_transform(self) -> None:
        # albumentations keeps its own RNG; forked DataLoader workers would all copy the same
        # state and draw identical augmentations. Reseed once per worker from torch's seed
        # (distinct per worker and epoch, reproducible under torch.manual_seed).
        info = torch.utils.data.get_worker_info()
        seed = info.seed if info is not None else torch.initial_seed()
        key = (os.getpid(), seed)
        if key != self._seeded_key and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(int(seed % 2**32))
        self._seeded_key = key

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw arrays: image [H, W, 3] uint8 and mask [H, W] uint8 trainIds (255 ignore)."""
        s = self.samples[index]
        with Image.open(s.image) as im:
            # np.array, not np.asarray: PIL's buffer is read-only and torch.from_numpy warns on it
            image = np.array(im if im.mode == "RGB" else im.convert("RGB"))
        if s.label is None:
            mask = np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        else:
            with Image.open(s.label) as lb:
                mask = label_ids_to_train_ids(np.asarray(lb))
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.load(index)
        if self.transform is not None:
            self._reseed_transform()
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        s = self.samples[index]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
            "name": s.name,
            "path": str(s.image),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"
