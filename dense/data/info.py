"""`DatasetInfo`: what a model and its evaluation need to know about a data set, in one object.

A datamodule produces it (`datamodule.info()`), the training tool passes it to the Lightning module
and checkpoints store it, so nothing has to be pulled back out of a datamodule later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DatasetInfo"]


@dataclass(frozen=True)
class DatasetInfo:
    """num_classes: the model's class count (detection: K + 1 with the background).
    class_names: names by model label (detection: index 0 = "__background__"; segmentation: trainId).
    label_to_cat_id: detection: contiguous label 1..K -> the data set's category id (what COCO
        results must use); empty for segmentation.
    val_ann_file: detection: the COCO file validation scores against.
    val_label_dir: segmentation: the folder of the val ground truth (`tools/score.py cityscapes`).
    """

    num_classes: int
    class_names: tuple[str, ...]
    label_to_cat_id: dict[int, int] = field(default_factory=dict)
    val_ann_file: str | None = None
    val_label_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(self, "label_to_cat_id", {int(k): int(v) for k, v in self.label_to_cat_id.items()})
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint holding it loads with `torch.load(weights_only=True)`."""
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetInfo:
        return cls(
            **{
                k: d[k]
                for k in ("num_classes", "class_names", "label_to_cat_id", "val_ann_file", "val_label_dir")
                if k in d
            }
        )
