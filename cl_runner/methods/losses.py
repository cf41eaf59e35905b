"""Loss terms shared by more than one method. None carries Hinton's T^2 factor: neither the LwF
paper nor the SD paper has it, and FACIL and PyCIL leave it out of LwF too."""

import torch
import torch.nn.functional as F


def modified_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """LwF's old-task loss (Li & Hoiem, eq. 3-4), averaged over the batch:

        -sum_i y'_o(i) log yhat'_o(i),   y'_o(i) = y_o(i)^(1/T) / sum_j y_o(j)^(1/T)

    with y_o = softmax(teacher), yhat_o = softmax(student). A softmax raised to 1/T and
    renormalised is softmax(z / T), which is how it is computed here. Gradients flow into
    both arguments; callers run the teacher under no_grad.
    """
    return -(F.softmax(teacher / T, dim=1) * F.log_softmax(student / T, dim=1)).sum(1).mean()


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """KL(softmax(p / T) || softmax(q / T)), averaged over the batch."""
    log_p = F.log_softmax(p_logits / T, dim=1)
    log_q = F.log_softmax(q_logits / T, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()
