"""Removing masked channels for real, so a pruned extractor stores fewer parameters.

With binary masks a channel whose mask is 0 is zero wherever it appears, so dropping it from
the layer that writes it (conv output, BatchNorm) and from every layer that reads it (conv
input, the shortcut) leaves the kept channels' values, and the extractor's output, unchanged.
"""

import torch
from torch import nn

from cl_runner.models.channels import ChannelPlan


def _select(param: nn.Parameter | None, dim: int, index: torch.Tensor) -> nn.Parameter | None:
    if param is None:
        return None
    return nn.Parameter(param.detach().index_select(dim, index).clone(), requires_grad=param.requires_grad)


def _prune_batchnorm(bn: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    bn.weight, bn.bias = _select(bn.weight, 0, keep), _select(bn.bias, 0, keep)
    bn.running_mean = bn.running_mean.index_select(0, keep).clone()
    bn.running_var = bn.running_var.index_select(0, keep).clone()
    bn.num_features = len(keep)


def shortcut_index(kept_in: torch.Tensor, kept_out: torch.Tensor) -> torch.Tensor:
    """For each kept output channel of a zero-padding shortcut: the position of the same
    channel among the kept inputs, or len(kept_in) (an extra all-zero channel) when the
    original shortcut padded it with zeros or its input channel was pruned."""
    position = {int(c): i for i, c in enumerate(kept_in)}
    return torch.tensor([position.get(int(c), len(kept_in)) for c in kept_out], device=kept_out.device)


def prune_channels(backbone: nn.Module, plan: ChannelPlan, keep: list[torch.Tensor]) -> None:
    """Keep only the channels `keep[g]` of every group g, in place."""
    for link in plan.convs:
        conv, out_idx = link.conv, keep[link.writes]
        weight = conv.weight.detach().index_select(0, out_idx)
        if link.reads is not None:
            weight = weight.index_select(1, keep[link.reads])
        conv.weight = nn.Parameter(weight.clone(), requires_grad=conv.weight.requires_grad)
        conv.bias = _select(conv.bias, 0, out_idx)
        conv.out_channels, conv.in_channels = weight.shape[0], weight.shape[1]
        _prune_batchnorm(link.bn, out_idx)
    for block, reads, writes in plan.shortcuts:
        block.shortcut_index = shortcut_index(keep[reads], keep[writes])
    backbone.feature_dim = len(keep[plan.feature_group])
