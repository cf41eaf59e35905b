import pytest
import torch

from cl_runner.models import IncrementalNet
from cl_runner.models.alexnet import AlexNetFeatures, SmallAlexNet, alexnet
from cl_runner.models.resnet18 import resnet18
from cl_runner.models.resnet_cifar import resnet20, resnet32


@pytest.mark.parametrize(
    "build, channels, size, dim",
    [
        (resnet32, 3, 32, 64),
        (resnet32, 1, 28, 64),
        (resnet20, 1, 8, 64),
        (lambda c, s: resnet18(c, s, stem="cifar"), 3, 32, 512),
        (lambda c, s: resnet18(c, s, stem="imagenet"), 3, 64, 512),
        (alexnet, 1, 8, 2048),
        (alexnet, 3, 32, 2048),
        (alexnet, 3, 64, 4096),
    ],
)
def test_backbones_take_any_channels_and_expose_feature_dim(build, channels, size, dim):
    net = build(channels, size).eval()
    assert net.feature_dim == dim
    with torch.no_grad():
        assert net(torch.randn(2, channels, size, size)).shape == (2, dim)


def test_alexnet_variant_by_input_size():
    assert isinstance(alexnet(3, 32), SmallAlexNet)
    assert isinstance(alexnet(3, 224), AlexNetFeatures)


def test_resnet32_has_three_stages_of_five_blocks():
    net = resnet32(3)
    assert len(net.blocks) == 15
    assert [net.blocks[i].conv2.out_channels for i in (0, 5, 10)] == [16, 32, 64]
    # Option-A shortcuts hold no parameters: 0.46M parameters, as in He et al.'s table 6.
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(0.46e6, rel=0.02)


def test_incremental_net_concatenates_heads_in_task_order():
    net = IncrementalNet(resnet20(1)).eval()
    first = net.add_head(2)
    net.add_head(3)
    assert net.num_classes == 5
    with torch.no_grad():
        out = net(torch.randn(4, 1, 8, 8))
        assert out["logits"].shape == (4, 5)
        assert torch.allclose(out["logits"][:, :2], first(out["features"]))


@pytest.mark.parametrize("stem, pooled", [("cifar", 32), ("imagenet", 8), ("podnet", 16)])
def test_resnet18_stems(stem, pooled):
    net = resnet18(stem=stem)
    assert net.stem(torch.zeros(1, 3, 32, 32)).shape[-1] == pooled  # stride and max-pool
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_ders_preact_resnet18_and_its_refusal_of_masks():
    from cl_runner.errors import ConfigError
    from cl_runner.models.expandable import ExpandableNet, MaskSettings
    from cl_runner.models.preact_resnet18 import preact_resnet18

    net = preact_resnet18(stem="imagenet")
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 512)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.stem.modules())  # no BN in its stem
    with pytest.raises(ConfigError, match="set method.prune=false"):
        ExpandableNet(net, MaskSettings())
