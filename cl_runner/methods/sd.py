"""Data-distortion guided self-distillation (Xu & Liu, AAAI 2019), an add-on for any method.

Each batch gives two distorted views x_a, x_b of the same images. The method computes its own
loss on x_a (its forward pass, `batch.first`, is reused); SD adds the second view's
classification loss, the KL divergence between the two views' predictions in both directions,
and the MMD between their pooled features:

    L = L_method(x_a) + CE(p_b, y) + w_kl * (KL(p_a || p_b) + KL(p_b || p_a))
        + w_mmd * || mean_i h(x_a,i) - mean_i h(x_b,i) ||_2^2                         (eq. 1-6)

With fine-tuning (`method=sd`) L_method(x_a) = CE(p_a, y): the paper's five terms with equal
weights. CE(p_b, y) is the method's own classification loss (LwF: the new head's).
p = softmax(z / T) with T = 1 by default (the paper has no temperature, and no T^2 factor).
Gradients flow through both views in every term, as in the paper (one network, no teacher).
The views are independent draws of the data set's distortion: device data is distorted twice
on the device, file data is decoded twice by the workers (`views = 2`).
"""

import torch
from torch import nn

from cl_runner.methods.base import AddOn, Batch, Method, require
from cl_runner.methods.losses import kl_divergence


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, T: float) -> torch.Tensor:
    """KL(p_a || p_b) + KL(p_b || p_a) with p = softmax(z / T), averaged over the batch."""
    return kl_divergence(logits_a, logits_b, T) + kl_divergence(logits_b, logits_a, T)


def mmd(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """Empirical MMD with the linear kernel: squared distance of the batch means."""
    return (features_a.float().mean(0) - features_b.float().mean(0)).pow(2).sum()


class SelfDistillation(AddOn):
    views = 2

    def __init__(
        self, T: float = 1.0, kl_weight: float = 1.0, mmd_weight: float = 1.0, noise_std: float = 0.0
    ):
        require(T > 0, f"addon.T={T} is invalid: expected a number > 0")
        require(kl_weight >= 0, f"addon.kl_weight={kl_weight} is invalid: expected a number >= 0")
        require(mmd_weight >= 0, f"addon.mmd_weight={mmd_weight} is invalid: expected a number >= 0")
        require(noise_std >= 0, f"addon.noise_std={noise_std} is invalid: expected a number >= 0")
        self.T, self.kl_weight, self.mmd_weight, self.noise_std = T, kl_weight, mmd_weight, noise_std

    def training_loss(
        self, loss: torch.Tensor, parts: dict, batch: Batch, model: nn.Module, method: Method
    ) -> tuple[torch.Tensor, dict]:
        out_a = batch.first.outputs  # the method's pass on x_a
        x_b = batch.view()
        if self.noise_std:  # optional extra noise on x_b, beyond the data set's distortion
            x_b = x_b + self.noise_std * batch.randn_like(x_b)
        out_b = model(x_b)
        ce_b = method.classification_loss(out_b["logits"], batch)
        kl = symmetric_kl(out_a["logits"], out_b["logits"], self.T)
        discrepancy = mmd(out_a["features"], out_b["features"])
        total = loss + ce_b + self.kl_weight * kl + self.mmd_weight * discrepancy  # eq. 6
        return total, {
            **parts,
            "sd_ce_b": ce_b.detach(),
            "sd_kl": kl.detach(),
            "sd_mmd": discrepancy.detach(),
        }
