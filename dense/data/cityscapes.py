"""Cityscapes semantic segmentation: a validating torch Dataset (the label table: cityscapes_labels.py).

Layout (the official one, as downloaded from cityscapes-dataset.com)::

    root/leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png     RGB, uint8
    root/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      L, uint8 labelIds

Ground truth is stored as *labelIds* (0..33, the ids of ``cityscapesscripts.helpers.labels``);
training and evaluation use the 19 *trainIds* (0..18) with 255 = ignore. The mapping is taken
from cityscapesscripts, never retyped, so it is the one the official evaluator uses.

Bad data (README, "What happens with bad data"): a broken layout or label is an error at
construction; an unreadable, empty or missing image, or one whose size differs from its label, is
skipped in training (``__getitem__`` returns ``None``, :meth:`CityscapesSegmentation.skipped_files`
lists it) and an error in evaluation; images that are not 8-bit RGB are converted
(:func:`dense.data.images.load_rgb`) and counted in :attr:`CityscapesSegmentation.report`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dense.constants import IGNORE_INDEX
from dense.data.cityscapes_labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    LABEL_ID_TO_TRAIN_ID,
    NUM_CLASSES,
    TRAIN_ID_TO_LABEL_ID,
    VALID_LABEL_IDS,
    colorize_train_ids,
    label_ids_to_train_ids,
    looks_like_train_ids,
    train_ids_to_label_ids,
)
from dense.data.images import ImageReadError, load_rgb, probe_image
from dense.data.report import DataError, DataReport, ids_text
from dense.data.skips import SkipLog, SkippingDataset

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

log = logging.getLogger(__name__)


class CityscapesDataError(DataError):
    """A Cityscapes folder that is not in the official layout or holds broken files."""


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


class CityscapesSegmentation(SkippingDataset, Dataset):
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
        train: training mode (default: split == "train"): a bad image is skipped, not an error.

    Raises:
        CityscapesDataError at construction (before any training step), naming the file and the
        problem: missing folders, no images, an image without its label, a label without its
        image (always, even when labels are optional), an unreadable label PNG, a label that is
        not single channel, label values outside the label table; in evaluation also an
        unreadable image and a label whose size differs from its image (in training these are
        noted in :attr:`report` and skipped). Images are only header-checked here: a truncated
        image is found in ``__getitem__`` (or by :meth:`scan_images` with ``decode``).

    Each sample is a dict, or ``None`` for a skipped image in training mode:
        ``image``: float32 tensor [3, H, W] in [0, 1] (any colour mode converted to 8-bit RGB);
        ``mask``: int64 tensor [H, W] with trainIds 0..18 and 255 = ignore;
        ``name``: ``<city>_<seq>_<frame>``; ``path``: the image path (str).

    Attributes:
        report: :class:`dense.data.report.DataReport` of the scan: counts, conversions, images
            that training will skip.
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
        train: bool | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.require_labels = split != "test" if require_labels is None else require_labels
        self.train = split == "train" if train is None else bool(train)
        self.image_dir = self.root / "leftImg8bit" / split
        self.report = DataReport(str(self.image_dir))
        self._unusable: set[str] = set()  # images the scan already found unusable (train mode)
        self.samples = self._scan()
        # unreadable training images are recorded here (from every DataLoader worker)
        self.skip_log = SkipLog("dense-cityscapes-skipped-") if self.train else None
        if check_values:
            self._check_label_values(cache_dir, num_workers)
        self._seeded_key: tuple[int, int] | None = None

    # ------------------------------------------------------------------ scan
    def _scan(self) -> list[CityscapesSample]:
        img_dir = self.image_dir
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
            problem = self._check_pair(img, lab)
            if problem is not None:
                problems.append(problem)
                continue
            samples.append(CityscapesSample(name=name, image=img, label=lab))
        # A label without its image is a broken download / copy whether or not labels are required.
        for orphan in labels.values():
            expected = img_dir / orphan.parent.name / (orphan.name[: -len(LABEL_SUFFIX)] + IMAGE_SUFFIX)
            problems.append(("label without image", f"{orphan}: label has no image; expected {expected}"))
        _raise_all(problems)
        self.report.counts["images"] = len(samples)
        if samples and len(self._unusable) == len(samples):
            raise CityscapesDataError(
                f"{img_dir}: none of the {len(samples)} training images is usable "
                f"{ids_text(sorted(self._unusable), 5)}"
            )
        for kind, items in self.report.notes.items():  # conversions and skips, once per kind
            log.warning("%s: %d %s %s", img_dir, len(items), kind, ids_text(items, 5))
        return samples

    def _rel(self, image: Path) -> str:
        """``<city>/<file>``: how reports and skip lists name an image."""
        return image.relative_to(self.image_dir).as_posix()

    def _skipped_in_training(self, kind: str, image: Path, detail: str) -> None:
        # kept as a sample: __getitem__ skips it, so DataHealth counts it against the epoch
        self.report.note(f"{kind} (skipped in training):", [f"{self._rel(image)} ({detail})"])
        self._unusable.add(self._rel(image))

    def _check_pair(self, img: Path, lab: Path | None) -> tuple[str, str] | None:
        """Header checks of one image / label pair: a problem (kind, "path: message") to raise, or
        None (an image that training will skip, or a converted colour mode, is noted in the report)."""
        try:
            header = probe_image(img)
        except ImageReadError as e:
            if not self.train:
                return "unreadable PNG", f"{img}: cannot read image PNG: {e.detail}"
            self._skipped_in_training(e.problem, img, e.detail)
            return None
        if header.mode != "RGB":
            self.report.note(f"{header.mode} images converted to 8-bit RGB:", [self._rel(img)])
        if lab is None:
            return None
        try:
            (lw, lh), lmode = _header(lab, "label")
        except CityscapesDataError as e:
            return "unreadable PNG", str(e)
        if lmode not in ("L", "P"):
            hint = " (is this a _gtFine_color.png?)" if lmode in ("RGB", "RGBA") else ""
            return (
                "label not single-channel",
                f"{lab}: label mode is {lmode}, expected a single-channel 8-bit labelIds PNG{hint}",
            )
        (iw, ih) = header.size
        if (iw, ih) != (lw, lh):
            if not self.train:
                return (
                    "label size differs from image",
                    f"{lab}: label size {lw}x{lh} differs from image size {iw}x{ih} ({img})",
                )
            self._skipped_in_training(
                "images whose size differs from their label", img, f"{iw}x{ih}, label {lw}x{lh}"
            )
        return None

    def scan_images(self, *, decode: bool = True) -> DataReport:
        """Decode every image not already found unusable (finds truncated files) into :attr:`report`:
        a note ("skipped in training") of a training set, an error of an evaluation set."""
        if not decode:
            return self.report
        for s in self.samples:
            if self._rel(s.image) in self._unusable:
                continue
            try:
                probe_image(s.image, decode=True)
            except ImageReadError as e:
                if self.train:
                    self._skipped_in_training(e.problem, s.image, e.detail)
                else:
                    self.report.error(f"{e.problem}:", [f"{self._rel(s.image)} ({e.detail})"])
        return self.report

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
        """Raw arrays: image [H, W, 3] uint8 (any colour mode converted to 8-bit RGB) and mask
        [H, W] uint8 trainIds (255 ignore).

        Raises:
            CityscapesDataError: the image (or label) is missing or cannot be decoded, or their
                sizes differ; the message starts with the file.
        """
        s = self.samples[index]
        try:
            image = load_rgb(s.image)  # a writable copy (torch.from_numpy warns on PIL's buffer)
        except ImageReadError as e:
            raise CityscapesDataError(f"{s.image}: cannot read image: {e.detail}") from e
        if s.label is None:
            return image, np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        try:
            with Image.open(s.label) as lb:
                mask = label_ids_to_train_ids(np.asarray(lb))
        except (OSError, SyntaxError, ValueError) as e:
            raise CityscapesDataError(f"{s.label}: cannot decode label PNG: {e}") from e
        if mask.shape != image.shape[:2]:
            raise CityscapesDataError(
                f"{s.image}: image size {image.shape[1]}x{image.shape[0]} differs from label size "
                f"{mask.shape[1]}x{mask.shape[0]} ({s.label})"
            )
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            image, mask = self.load(index)
        except CityscapesDataError as e:
            if not self.train:
                raise
            self._record_skip(self._rel(self.samples[index].image), str(e))
            return None
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
