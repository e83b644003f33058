"""One input normalisation for every model."""

import pytest
import torch

import dense
from dense.constants import IMAGENET_MEAN, IMAGENET_STD, SSD_MEAN, SSD_STD
from dense.normalize import Normalize


def test_normalize_is_mean_std_and_not_in_the_state_dict():
    x = torch.rand(2, 3, 8, 8)
    norm = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    want = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.equal(norm(x), want)
    # SSD's [-1, 1] scaling is a mean / std like any other, to the bit
    assert torch.equal(Normalize(SSD_MEAN, SSD_STD)(x), x * 2.0 - 1.0)
    assert norm.state_dict() == {}  # peers' weight files and checkpoints map on unchanged
    assert norm.double()(x.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="std > 0"):
        Normalize((0.5,), (0.0,))


@pytest.mark.parametrize(
    ("task", "mean"), [("classify", IMAGENET_MEAN), ("detect", SSD_MEAN), ("segment", IMAGENET_MEAN)]
)
def test_every_model_normalises_with_the_one_module(task, mean):
    model = dense.build_model(task, "v3_small", width_mult=0.35)
    norms = [m for m in model.modules() if isinstance(m, Normalize)]
    assert len(norms) == 1 and norms[0].mean.flatten().tolist() == pytest.approx(mean)
