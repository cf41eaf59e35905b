"""EBLL's network (Rannen Triki et al., ICCV 2017): the incremental network with one under-complete
autoencoder per task on the features the fully connected layers read (AlexNet's pool5, as the
authors' code; a backbone without such layers: its output, which the heads read). Only a task's
encoder constrains later tasks; an autoencoder is trained once, after its task (the method's
`autoencoder` stage), and fixed from then on. `encoded` lists the tasks whose autoencoder is
trained (a pretrained task has none)."""

import torch
from torch import nn

from cl_runner.models.alexnet import AlexNetFeatures, SmallAlexNet
from cl_runner.models.incremental import IncrementalNet

#: backbones whose fully connected layers (`fc`) sit between the autoencoder's input and the heads
WITH_FC = (AlexNetFeatures, SmallAlexNet)
PAPER_CODE_DIM = 100


class AutoEncoder(nn.Module):
    """code = sigmoid(W_e x + b_e), reconstruction = W_d code + b_d (one hidden layer, linear output)."""

    def __init__(self, input_dim: int, code_dim: int):
        super().__init__()
        self.encoder = nn.Linear(input_dim, code_dim)
        self.decoder = nn.Linear(code_dim, input_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


def code_size(requested: int | str, input_dim: int) -> int:
    """auto: the paper's 100, at most a quarter of the input (ResNet-32's 64 features: 16), so the
    autoencoder stays under-complete on small backbones."""
    if requested == "auto":
        return min(PAPER_CODE_DIM, max(1, input_dim // 4))
    return int(requested)


class EncoderNet(IncrementalNet):
    takes_pretrained_head = True

    def __init__(self, backbone: nn.Module, code_dim: int | str = "auto"):
        super().__init__(backbone)
        self.has_fc = isinstance(backbone, WITH_FC)
        self.input_dim = backbone.pooled_dim if self.has_fc else backbone.feature_dim
        self.code_dim = code_size(code_dim, self.input_dim)
        self.autoencoders = nn.ModuleList()
        self.encoded: list[int] = []

    def add_head(self, num_classes: int) -> nn.Module:
        head = super().add_head(num_classes)
        autoencoder = AutoEncoder(self.input_dim, self.code_dim).to(head.weight.device)
        autoencoder.requires_grad_(False)  # learnt only in its own stage, after its task
        self.autoencoders.append(autoencoder)
        return head

    def autoencoder_parameters(self, task: int) -> list[nn.Parameter]:
        return list(self.autoencoders[task].parameters())

    def code_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the autoencoders read: pool5 (AlexNet), else the backbone's features."""
        return self.backbone.pooled(x) if self.has_fc else self.backbone(x)

    def heads_on(self, code_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features and every head's logits from the autoencoders' input (or a reconstruction of it)."""
        features = self.backbone.fc(code_input) if self.has_fc else code_input
        return features, self.head_logits(features)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        code_input = self.code_input(x)
        features, logits = self.heads_on(code_input)
        return {"logits": logits, "features": features, "code_input": code_input}

    def get_extra_state(self) -> dict:
        return {"encoded": list(self.encoded)}

    def set_extra_state(self, state: dict) -> None:
        self.encoded = list(state["encoded"])
