"""Loss terms shared by more than one method."""

import torch
import torch.nn.functional as F


def distillation(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch (Hinton et al.).

    Gradients flow into both arguments; callers detach (or no_grad) a teacher that must not learn.
    """
    log_p_student = F.log_softmax(student / T, dim=1)
    log_p_teacher = F.log_softmax(teacher / T, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1).mean()
    return T * T * kl
