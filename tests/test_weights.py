"""Weight import: torchvision / timm models with random weights, saved to disk, imported, and
compared output for output (logits and C5 features)."""

import pytest
import timm
import torch
import torchvision

import dense
from dense import build_backbone
from dense.constants import IMAGENET_MEAN, IMAGENET_STD
from dense.weights import WeightsError
from tests.conftest import randomize_bn

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


# Parity is checked in float64: it shows that the weights map one to one, free of float32 rounding,
# which differs between our channels-last layout and the peers' (and with the thread count).
def assert_rel_close(a, b, rel=1e-5):
    err = ((a - b).abs().max() / b.abs().max()).item()
    assert err < rel, f"max relative error {err:.2e}"


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("mobilenet_v2", {}),
        ("mobilenet_v3_large", {}),
        ("mobilenet_v3_small", {}),
        ("mobilenet_v3_large", {"reduced_tail": True}),
        ("mobilenet_v3_large", {"dilated": True}),
        ("mobilenet_v3_small", {"reduced_tail": True, "dilated": True}),
    ],
)
def test_torchvision_parity(name, kwargs, images, tmp_path):
    peer = randomize_bn(getattr(torchvision.models, name)(**kwargs)).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(peer.state_dict(), path)
    ours = dense.from_torchvision(name, path, dilated=kwargs.get("dilated", False)).eval()
    assert ours.backbone.reduced_tail == kwargs.get("reduced_tail", False)  # inferred from the file
    ours, peer, images = ours.double(), peer.double(), images.double()
    with torch.no_grad():
        x = (images - MEAN.double()) / STD.double()
        assert_rel_close(ours(images), peer(x))
        assert_rel_close(ours.forward_features(images), peer.features(x))


@pytest.mark.parametrize("name", ["mobilenetv1_100", "mixnet_s", "mixnet_m", "mixnet_l"])
def test_timm_parity(name, images, tmp_path):
    peer = randomize_bn(timm.create_model(name)).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(peer.state_dict(), path)
    ours = dense.from_timm(name, path).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in peer.parameters())
    ours, peer, images = ours.double(), peer.double(), images.double()
    with torch.no_grad():
        x = (images - MEAN.double()) / STD.double()
        assert_rel_close(ours(images), peer(x))
        assert_rel_close(ours.forward_features(images), peer.forward_features(x))


def test_backbone_weights_from_a_peer_checkpoint(tmp_path):
    peer = randomize_bn(torchvision.models.mobilenet_v3_large()).eval()
    path = tmp_path / "v3.pth"
    torch.save(peer.state_dict(), path)
    bb = build_backbone("v3_large", taps=("c4_exp", "c5"), weights=str(path), output_stride=16).eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        h = peer.features[:13](x)
        c4_exp = peer.features[13].block[0](h)  # torchvision's SSDLite C4: bneck 13's expansion
        assert_rel_close(bb(x)["c4_exp"], c4_exp)
    # only the built layers are loaded: a backbone cut at c4_exp loads the same file
    short = build_backbone("v3_large", taps=("c4_exp",), weights=str(path)).eval()
    with torch.no_grad():
        assert_rel_close(short(x)["c4_exp"], c4_exp)


def test_backbone_weights_from_timm_and_from_dense(tmp_path):
    peer = randomize_bn(timm.create_model("mixnet_s")).eval()
    torch.save(peer.state_dict(), tmp_path / "mixnet_s.pth")
    bb = build_backbone("mixnet_s", taps=("c5",), weights=str(tmp_path / "mixnet_s.pth")).eval()
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert_rel_close(bb(x)["c5"], peer.forward_features(x))
    torch.save(bb.state_dict(), tmp_path / "dense_backbone.pth")
    again = build_backbone("mixnet_s", taps=("c5",), weights=str(tmp_path / "dense_backbone.pth")).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x)["c5"], bb(x)["c5"])


def test_missing_file_says_what_is_expected_and_how_to_get_it(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(
        WeightsError, match=r"(?s)nope\.pth' not found.*torchvision\.models\.mobilenet_v3_large"
    ):
        build_backbone("v3_large", weights=str(missing))
    with pytest.raises(WeightsError, match=r"timm\.create_model\('mixnet_m', pretrained=True\)"):
        dense.from_timm("mixnet_m", missing)


def test_wrong_checkpoint_is_refused_with_names(tmp_path):
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "small.pth")
    with pytest.raises(WeightsError, match="tensors|does not fit"):
        dense.from_torchvision("mobilenet_v3_large", tmp_path / "small.pth")
    # reduced-tail checkpoint into a full-tail backbone: a shape error naming the tensors
    torch.save(torchvision.models.mobilenet_v3_large(reduced_tail=True).state_dict(), tmp_path / "rt.pth")
    with pytest.raises(WeightsError, match="reduced_tail=False"):
        build_backbone("v3_large", weights=str(tmp_path / "rt.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth' could not be read"):
        dense.from_timm("mixnet_s", tmp_path / "junk.pth")
