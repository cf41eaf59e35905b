"""Pretrained weights for the AlexNet and ResNet-18 backbones: torchvision's ImageNet release from
the torch hub cache (downloaded when the network allows), or a state dict saved in torchvision's
layout (e.g. the Places365 AlexNet release). The last layer of the pretrained network is kept
aside as `Pretrained.classifier`: the head of the data set the weights were trained on, when that
data set is the first task of a sequence (the LwF paper's old task)."""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cl_runner.errors import ConfigError

# The weights' own normalisation: torchvision's ImageNet models and the Places365 releases alike.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Pretrained:
    data: str | None  # the data set the weights were trained on (imagenet, places365), if known
    classifier: dict  # its last layer's "weight" and "bias"

    @property
    def num_classes(self) -> int:
        return self.classifier["weight"].shape[0]


def torchvision_weights(arch: str):
    from torchvision.models import AlexNet_Weights, ResNet18_Weights

    return {"alexnet": AlexNet_Weights.IMAGENET1K_V1, "resnet18": ResNet18_Weights.IMAGENET1K_V1}[arch]


def hub_file(arch: str) -> Path:
    """Where torchvision keeps (and looks for) the ImageNet weights of `arch`."""
    url = torchvision_weights(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def read_state_dict(arch: str, weights: str) -> dict:
    """`imagenet`: torchvision's weights (hub cache, else download); else a file holding a
    state dict, bare or under "state_dict" (with DataParallel's "module." prefixes)."""
    if weights == "imagenet":
        cached = hub_file(arch)
        try:
            return torchvision_weights(arch).get_state_dict(progress=False)
        except Exception as error:  # offline, proxy, partial file: say where the file goes
            raise ConfigError(
                f"ImageNet weights for {arch} are not in {cached} and could not be downloaded "
                f"({type(error).__name__}); copy {torchvision_weights(arch).url} there, "
                "or pass backbone.weights=PATH"
            ) from None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"backbone.weights={weights}: no such file (expected imagenet or a state dict's path)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(f"backbone.weights={weights} is not a readable state dict ({error})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ConfigError(f"backbone.weights={weights} holds no state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


def alexnet_keys(state: dict) -> tuple[dict, dict]:
    """torchvision AlexNet -> (our features + fc6/fc7, the fc8 classifier)."""
    ours, last = {}, {}
    for key, value in state.items():
        if key.startswith("classifier.6."):
            last[key.removeprefix("classifier.6.")] = value
        elif key.startswith("classifier."):
            ours["fc." + key.removeprefix("classifier.")] = value
        else:
            ours[key] = value
    return ours, last


def resnet18_keys(state: dict) -> tuple[dict, dict]:
    """torchvision ResNet-18 -> (our stem + flat list of eight blocks, the fc classifier)."""
    ours, last = {}, {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "fc":
            last[rest] = value
        elif head == "conv1":
            ours["stem.0." + rest] = value
        elif head == "bn1":
            ours["stem.1." + rest] = value
        elif head.startswith("layer"):
            block, _, rest = rest.partition(".")
            ours[f"layers.{2 * (int(head[5:]) - 1) + int(block)}.{rest}"] = value
        else:
            ours[key] = value
    return ours, last


KEY_MAPS = {"alexnet": alexnet_keys, "resnet18": resnet18_keys}


def load_pretrained(backbone: nn.Module, arch: str, weights: str, data: str | None) -> Pretrained:
    """Load `weights` into `backbone`; every backbone tensor must be covered, shapes equal."""
    ours, last = KEY_MAPS[arch](read_state_dict(arch, weights))
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(ours))
    wrong = [k for k in expected if k in ours and ours[k].shape != expected[k].shape]
    if missing or wrong or set(last) != {"weight", "bias"}:
        what = f"missing {missing[:3]}" if missing else f"shape of {wrong[:3]}" if wrong else "no classifier"
        raise ConfigError(f"backbone.weights={weights} does not fit torchvision's {arch} ({what})")
    backbone.load_state_dict({k: ours[k] for k in expected})
    if data is None and weights == "imagenet":
        data = "imagenet"
    return Pretrained(data, {k: v.clone() for k, v in last.items()})
