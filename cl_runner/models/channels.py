"""Which channels of a backbone belong together, for DER's channel masks and their pruning.

A *group* is a set of channels that must be kept or removed together: the output of a conv
layer, or, in a ResNet, a whole stage's residual stream (the identity shortcut adds the
stream's channels one to one, so every layer writing to it shares one mask). The plan lists:

- `sites`: modules whose output is multiplied by a group's mask. A mask is positive, so it
  commutes with ReLU and max-pooling and can sit on a BatchNorm or block output;
- `convs`: each conv layer with its BatchNorm, the group it reads (None: the image) and the
  group it writes, for the sparsity loss and for pruning;
- `shortcuts`: parameter-free "option A" shortcuts (strided identity, zero-padded channels),
  which pruning turns into an index map from the kept input channels to the kept output ones;
- `feature_group`: the group pooled into the feature vector.
"""

from dataclasses import dataclass, field

from torch import nn

from cl_runner.errors import ConfigError
from cl_runner.models.resnet18 import ResNet18
from cl_runner.models.resnet_cifar import CifarResNet


@dataclass
class ConvLink:
    conv: nn.Conv2d
    bn: nn.BatchNorm2d
    reads: int | None  # group index, None for the input image
    writes: int


@dataclass
class ChannelPlan:
    sizes: list[int] = field(default_factory=list)
    sites: list[tuple[nn.Module, int]] = field(default_factory=list)
    convs: list[ConvLink] = field(default_factory=list)
    shortcuts: list[tuple[nn.Module, int, int]] = field(default_factory=list)
    feature_group: int = -1

    def group(self, size: int) -> int:
        self.sizes.append(size)
        return len(self.sizes) - 1


def _add_block(plan: ChannelPlan, block: nn.Module, stream_in: int, stream_out: int) -> None:
    inner = plan.group(block.conv1.out_channels)
    plan.sites += [(block.bn1, inner), (block, stream_out)]
    plan.convs += [
        ConvLink(block.conv1, block.bn1, stream_in, inner),
        ConvLink(block.conv2, block.bn2, inner, stream_out),
    ]
    downsample = getattr(block, "downsample", None)
    if downsample is not None:
        plan.convs.append(ConvLink(downsample[0], downsample[1], stream_in, stream_out))
    elif stream_in != stream_out:
        plan.shortcuts.append((block, stream_in, stream_out))


def _resnet_plan(stem_conv, stem_bn, stem_site, blocks) -> ChannelPlan:
    plan = ChannelPlan()
    stream = plan.group(stem_conv.out_channels)
    plan.sites.append((stem_site, stream))
    plan.convs.append(ConvLink(stem_conv, stem_bn, None, stream))
    for block in blocks:
        if block.conv1.stride != (1, 1) or block.conv1.in_channels != block.conv2.out_channels:
            new_stream = plan.group(block.conv2.out_channels)  # a new stage starts here
        else:
            new_stream = stream
        _add_block(plan, block, stream, new_stream)
        stream = new_stream
    plan.feature_group = stream
    return plan


def channel_plan(backbone: nn.Module) -> ChannelPlan:
    if isinstance(backbone, CifarResNet):
        return _resnet_plan(backbone.conv1, backbone.bn1, backbone.bn1, backbone.blocks)
    if isinstance(backbone, ResNet18):
        return _resnet_plan(backbone.stem[0], backbone.stem[1], backbone.stem, backbone.layers)
    raise ConfigError(
        f"DER's channel masks and pruning support the ResNet backbones, not {type(backbone).__name__}: "
        "pick backbone=resnet32/resnet20/resnet18 or set method.prune=false"
    )
