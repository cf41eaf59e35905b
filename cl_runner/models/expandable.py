"""DER's expandable network (Yan, Xie, He, CVPR 2021).

One feature extractor per task: extractor t starts as a copy of extractor t-1, and every older
extractor is frozen (parameters and BatchNorm statistics) and runs forward-only. The
super-feature u = [phi_1(x), ..., phi_t(x)] feeds one classifier over all seen classes; an
auxiliary classifier on phi_t(x) has |C_t| + 1 outputs (all old classes are one label). As in
the official code, both are bias-free and Kaiming-initialised, and the classifier is new at
every task (`reuse_classifier=True` copies the old weights into it instead).

With `masks` on, the extractor being trained carries channel masks (models/masks.py) and
`prune_last()` removes its masked channels after the task. The next extractor is initialised
from the unpruned weights (`template`), so pruning never shrinks what the next task starts from.
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn

from cl_runner.models.channels import channel_plan
from cl_runner.models.continual import ContinualNet
from cl_runner.models.masks import ChannelMasks
from cl_runner.models.pruning import prune_channels


@dataclass
class MaskSettings:
    s_max: float = 400.0
    init: float = 1.0
    compensate: bool = True


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def linear(in_features: int, out_features: int, bias: bool, device) -> nn.Linear:
    """The official code's classifier: Kaiming-normal weights (linear gain), zero bias if any."""
    layer = nn.Linear(in_features, out_features, bias=bias).to(device)
    reset_linear(layer)
    return layer


def reset_linear(layer: nn.Linear, generator: torch.Generator | None = None) -> None:
    nn.init.kaiming_normal_(layer.weight, nonlinearity="linear", generator=generator)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class ExpandableNet(ContinualNet):
    def __init__(
        self,
        backbone: nn.Module,
        masks: MaskSettings | None = None,
        reuse_classifier: bool = False,
        bias: bool = False,
    ):
        super().__init__()
        self.reuse_classifier, self.bias = reuse_classifier, bias
        self.extractors = nn.ModuleList([backbone])
        self.dense_dim = backbone.feature_dim
        self.dense_params = count(backbone)
        self.mask_settings = masks
        if masks is not None:
            channel_plan(backbone)  # fails early, with one clear line, on a backbone without a plan
        self.masks: ChannelMasks | None = None
        self.template: nn.Module | None = None
        self.kept: list[list[list[int]] | None] = []  # per extractor: kept channels per group
        self.classifier: nn.Linear | None = None
        self.aux_classifier: nn.Linear | None = None
        self.sizes: list[int] = []

    @property
    def task_sizes(self) -> list[int]:
        return list(self.sizes)

    @property
    def feature_dim(self) -> int:
        return sum(extractor.feature_dim for extractor in self.extractors)

    def head_parameters(self) -> list[nn.Parameter]:
        """One classifier over all classes: it is the newest task's head too."""
        return list(self.classifier.parameters())

    def classifier_parameters(self) -> list[nn.Parameter]:
        return list(self.classifier.parameters())

    def add_head(self, num_classes: int) -> None:
        """Grow for a new task: a new extractor (after the first task), a wider classifier, a new
        auxiliary classifier."""
        device = next(self.extractors[0].parameters()).device
        if self.sizes:
            self.drop_masks()
            source = self.template if self.template is not None else self.extractors[-1]
            self.extractors.append(copy.deepcopy(source).requires_grad_(True))
            self.template = None
            for old in self.extractors[:-1]:
                old.requires_grad_(False)
                old.eval()
        self.kept.append(None)
        if self.mask_settings is not None:
            s, plan = self.mask_settings, channel_plan(self.extractors[-1])
            self.masks = ChannelMasks(plan, s.s_max, s.init, s.compensate).to(device)
            self.masks.attach()
        old = self.classifier
        self.classifier = linear(self.feature_dim, self.num_classes + num_classes, self.bias, device)
        if old is not None and self.reuse_classifier:
            with torch.no_grad():
                self.classifier.weight[: old.out_features, : old.in_features] = old.weight
                if self.bias:
                    self.classifier.bias[: old.out_features] = old.bias
        first = not self.sizes
        self.aux_classifier = None if first else linear(self.dense_dim, num_classes + 1, self.bias, device)
        self.sizes.append(num_classes)

    def reset_classifiers(self, generator: torch.Generator | None = None, aux: bool = True) -> None:
        """Fresh weights for the classifier (and the auxiliary one), as the official code does
        when the learning-rate warm-up ends and before the balanced classifier stage. With
        several processes, `generator` is one every rank draws alike."""
        reset_linear(self.classifier, generator)
        if aux and self.aux_classifier is not None:
            reset_linear(self.aux_classifier, generator)

    def train(self, mode: bool = True) -> "ExpandableNet":
        super().train(mode)
        for old in self.extractors[:-1]:
            old.eval()  # frozen: their BatchNorm statistics must not move
        if self.template is not None:
            self.template.eval()
        return self

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The super-feature u and the newest extractor's part of it."""
        with torch.no_grad():
            old = [extractor(x) for extractor in self.extractors[:-1]]
        new = self.extractors[-1](x)
        return torch.cat([*old, new], dim=1), new

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features, new = self.features(x)
        out = {"logits": self.classifier(features), "features": features}
        if self.aux_classifier is not None:
            out["aux_logits"] = self.aux_classifier(new)
        return out

    # -- pruning -------------------------------------------------------------------------------
    def drop_masks(self) -> None:
        if self.masks is not None:
            self.masks.detach()
            self.masks = None

    def prune_last(self) -> None:
        """Binarise the last extractor's masks and remove its masked channels. The unpruned
        weights stay as the template the next extractor starts from."""
        keep = self.masks.keep()
        self.drop_masks()
        self.template = copy.deepcopy(self.extractors[-1]).requires_grad_(False).eval()
        self._prune(len(self.extractors) - 1, [k.tolist() for k in keep])

    def _prune(self, index: int, keep: list[list[int]]) -> None:
        """Prune extractor `index` to `keep` and drop the classifier columns of its lost features."""
        extractor = self.extractors[index]
        plan = channel_plan(extractor)
        device = next(extractor.parameters()).device
        keep_t = [torch.tensor(k, dtype=torch.long, device=device) for k in keep]
        start = sum(e.feature_dim for e in self.extractors[:index])
        features = keep_t[plan.feature_group]
        prune_channels(extractor, plan, keep_t)
        later = torch.arange(start + self.dense_dim, self.classifier.in_features, device=device)
        columns = torch.cat([torch.arange(start, device=device), start + features, later])
        self.classifier = _keep_inputs(self.classifier, columns)
        if index == len(self.extractors) - 1 and self.aux_classifier is not None:
            self.aux_classifier = _keep_inputs(self.aux_classifier, features)
        self.kept[index] = keep

    def param_counts(self) -> dict[str, int]:
        """What DER tables print: the parameters of the model kept for inference (extractors and
        classifier), and what the same model would have without pruning."""
        params = sum(count(e) for e in self.extractors) + count(self.classifier)
        unpruned = len(self.extractors) * self.dense_params
        unpruned += (len(self.extractors) * self.dense_dim + self.bias) * self.num_classes
        return {"params": params, "params_unpruned": unpruned}

    # -- checkpoints: the pruned shapes are rebuilt before the weights load ----------------------
    def get_extra_state(self) -> dict:
        return {"kept": self.kept, "masks": self.masks is not None, "template": self.template is not None}

    def set_extra_state(self, state: dict) -> None:
        if not state["masks"]:
            self.drop_masks()
        if not state["template"]:
            self.template = None
        elif self.template is None:  # a fresh model (resume): its last extractor is still unpruned
            self.template = copy.deepcopy(self.extractors[-1]).requires_grad_(False).eval()
        for index, keep in enumerate(state["kept"]):
            if keep is not None and self.kept[index] is None:
                self._prune(index, keep)


def _keep_inputs(layer: nn.Linear, columns: torch.Tensor) -> nn.Linear:
    bias = layer.bias is not None
    pruned = nn.Linear(len(columns), layer.out_features, bias=bias).to(layer.weight.device)
    with torch.no_grad():
        pruned.weight.copy_(layer.weight.index_select(1, columns))
        if bias:
            pruned.bias.copy_(layer.bias)
    return pruned
