"""The Cityscapes label table, taken from cityscapesscripts (never retyped, so it is the one the
official evaluator uses): the 19 evaluated classes by trainId, their palette, and the labelIds <->
trainIds lookups. Ground truth is stored as labelIds (0..33); training and evaluation use trainIds
(0..18) with 255 = ignore.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from dense.constants import IGNORE_INDEX

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "LABEL_ID_TO_TRAIN_ID",
    "NUM_CLASSES",
    "TRAIN_ID_TO_LABEL_ID",
    "VALID_LABEL_IDS",
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
