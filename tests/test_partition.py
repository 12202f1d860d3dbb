"""Cut points, head/tail equivalence for every registered architecture, profiling."""

from __future__ import annotations

import pytest
import torch

from edgecloud.errors import CutPointError
from edgecloud.models import list_models, load_model
from edgecloud.partition import (
    Partitioner,
    cut_points,
    default_cut,
    get_cut,
    resolve_cut,
    split,
)
from edgecloud.partition.profile import profile_cuts


@pytest.mark.parametrize("name", list_models())
def test_every_cut_reproduces_the_model(name):
    """tail(head(x)) == model(x) at every enumerated cut (random weights: structure only).

    A 96x96 input keeps VGG-16 and friends cheap; the graph is the same at any size."""
    spec = load_model(name, None if name == "efficientnet_lite0" else "random")
    partitioner = Partitioner(spec.module, (3, 96, 96))
    torch.manual_seed(1)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        reference = spec.module(x)
        cuts = partitioner.cut_points()
        assert len(cuts) >= 5
        assert [c.name for c in cuts] == [c.name for c in cut_points(spec)]
        for cut in cuts:
            head, tail = partitioner.split(cut.name)
            feature = head(x)
            assert tuple(feature.shape[1:]) == cut.shape, cut
            difference = (tail(feature) - reference).abs().max().item()
            assert difference < 1e-4, (cut.name, difference)
    assert default_cut(spec) in {c.name for c in cuts}


def test_cut_names_are_stable_and_readable(lite0):
    names = [c.name for c in cut_points(lite0)]
    assert names == [c.name for c in cut_points(load_model("efficientnet_lite0"))]
    assert len(names) == len(set(names))
    assert {"blocks.3", "blocks.5", "conv_stem"} <= set(names)
    assert get_cut(lite0, "blocks.3").shape == (80, 14, 14)
    resnet = load_model("resnet18", "random")
    assert {"layer1", "layer2", "layer3", "layer4"} <= {c.name for c in cut_points(resnet)}


def test_no_cut_inside_a_residual_block(lite0):
    """blocks.3.1 has a skip connection: nothing inside it may be a cut point."""
    names = {c.name for c in cut_points(lite0)}
    assert "blocks.3.1" in names
    assert not any(n.startswith("blocks.3.1.") for n in names)
    resnet = load_model("resnet18", "random")
    assert not any(n.startswith("layer1.0.conv") for n in (c.name for c in cut_points(resnet)))


def test_resolve_cut_defaults_and_validates(lite0):
    assert resolve_cut(lite0, None) == default_cut(lite0) == lite0.record.default_cut == "blocks"
    assert resolve_cut(lite0, "blocks") == "blocks"
    with pytest.raises(CutPointError, match="no cut point 'nope'"):
        resolve_cut(lite0, "nope")


def test_bad_cut_name_lists_valid_ones(lite0):
    with pytest.raises(CutPointError, match="no cut point 'blocks.99'.*blocks.3"):
        split(lite0, "blocks.99")
    with pytest.raises(CutPointError):
        split(lite0, "blocks.3.1.conv_pw")  # inside a residual block


def test_profile_columns_and_consistency(lite0):
    cuts = [get_cut(lite0, n) for n in ("conv_stem", "blocks.3", "blocks.5")]
    profiles = profile_cuts(lite0, cuts, repeat=1, progress=False)
    total = profiles[0].head_macs + profiles[0].tail_macs
    assert 3.5e8 < total < 4.5e8  # EfficientNet-Lite0: ~0.39 GMACs at 224x224
    for earlier, later in zip(profiles, profiles[1:]):
        assert later.head_macs > earlier.head_macs
        assert later.head_params > earlier.head_params
        assert earlier.head_macs + earlier.tail_macs == total
    block3 = profiles[1]
    assert block3.elements == 15680 and block3.bytes_fp32 == 4 * 15680
    assert block3.bytes_int8 == 15680
    assert block3.head_params + block3.tail_params == sum(
        p.numel() for p in lite0.module.parameters()
    )
    assert all(p.head_ms > 0 and p.tail_ms > 0 for p in profiles)


@pytest.mark.parametrize("cut", ["blocks.3", "blocks"])
def test_folding_batch_norms_keeps_the_tail_on_real_images(lite0, sample_images, cut):
    """Every BatchNorm after a convolution folds into it (timm's BatchNormAct2d keeps its
    activation); the folded tail gives the same logits and answers on real images."""
    from timm.layers import BatchNormAct2d

    from edgecloud.partition.fold import fold_batch_norms

    head, tail = split(lite0, cut)
    folded = fold_batch_norms(tail)

    def norms(module):
        return [
            m for m in module.modules() if isinstance(m, (torch.nn.BatchNorm2d, BatchNormAct2d))
        ]

    assert norms(tail) and norms(folded) == []  # Lite0's all follow convolutions
    assert tail is not folded
    with torch.inference_mode():
        feature = head(sample_images(32))
        reference, result = tail(feature), folded(feature)
    assert (reference - result).abs().max().item() < 1e-3 * reference.abs().max().item()
    assert torch.equal(reference.argmax(1), result.argmax(1))
    assert norms(tail), "the original tail is left as it was"
