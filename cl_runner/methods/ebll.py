"""EBLL: Encoder Based Lifelong Learning (Rannen Triki, Aljundi, Blaschko & Tuytelaars, ICCV 2017),
as the authors' PyTorch code runs it (`rahafaljundi/Pytorch-implementation-of-Encoder-Based-Lifelong-
learning`, the code the MAS paper's group used; AlexNet_EBLL.py, Finetune_SGD_EBLL.py, Demo).

LwF, plus after each task an under-complete autoencoder on the features the fully connected
layers read (F*, pool5; models/encoders.py), trained with the task's network T* frozen:

    min_{r}  l( T*(r(F*(x))), y ) + ae_alpha * mean (r(F*(x)) - F*(x))^2                (L_ae)

(the code's Adadelta, lr 0.1, 200 epochs; its MSE is the mean over the batch and the features).
A later task k then learns, from the network as task k-1 left it (the LwF teacher, frozen), with

    L = l(head_k(F(x)), y) + lamb * sum_{j<k} KD_T(head_j(F(x)), head_j*(F*(x)))             (LwF)
        + code_alpha * sum_{j<k} mean (sigma(W_j F(x) + b_j) - sigma(W_j F*(x) + b_j))^2   (L_code)

the code of the current features against the teacher's on the same distorted batch, through
task j's fixed encoder (sigma: its sigmoid), mean over the batch and the code (the PyTorch
code's nn.MSELoss; the MatConvNet code behind the paper: alpha/2 ||.||^2 per image). T = 2,
lamb = 1, code_alpha = 0.1 and ae_alpha = 0.1 as in the authors' demo; their warm-up of the new
head alone (`head_epochs`) comes first, as in LwF. The code distilled flows into the shared
layers only: encoders stay fixed.
"""

import torch
import torch.nn.functional as F

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, Stage, own_head_loss, require
from cl_runner.methods.lwf import LwF
from cl_runner.models.encoders import EncoderNet
from cl_runner.modes import eval_mode


class EBLL(LwF):
    def __init__(
        self,
        lamb: float = 1.0,
        T: float = 2.0,
        head_epochs: int = 0,
        code_alpha: float = 0.1,
        code_dim: int | str = "auto",
        ae_alpha: float = 0.1,
        ae_epochs: int = 200,
        ae_lr: float = 0.1,
    ):
        super().__init__(lamb=lamb, T=T, head_epochs=head_epochs)
        require(code_alpha >= 0, f"method.code_alpha={code_alpha} is invalid: expected a number >= 0")
        require(
            code_dim == "auto" or (isinstance(code_dim, int) and code_dim >= 1),
            f"method.code_dim={code_dim!r} is invalid: expected auto or an integer >= 1",
        )
        require(ae_alpha >= 0, f"method.ae_alpha={ae_alpha} is invalid: expected a number >= 0")
        require(ae_epochs >= 1, f"method.ae_epochs={ae_epochs} is invalid: expected an integer >= 1")
        require(ae_lr > 0, f"method.ae_lr={ae_lr} is invalid: expected a number > 0")
        self.code_alpha, self.code_dim = code_alpha, code_dim
        self.ae_alpha, self.ae_epochs, self.ae_lr = ae_alpha, ae_epochs, ae_lr

    def network(self, backbone) -> EncoderNet:
        network = EncoderNet(backbone, self.code_dim)
        require(
            network.code_dim < network.input_dim,
            f"method.code_dim={network.code_dim} is invalid: the autoencoder must be under-complete "
            f"(its input has {network.input_dim} features)",
        )
        return network

    def stages(self, task: Task, rehearsal: bool) -> list[Stage]:
        autoencoder = Stage(
            "autoencoder", self.ae_epochs, trains=lambda model: model.autoencoder_parameters(task.index),
            after_task=True, mode="train", optimizer="adadelta", lr=self.ae_lr, milestones=(),
            weight_decay=0.0, loss=self.autoencoder_loss,
        )  # fmt: skip
        return [*super().stages(task, rehearsal), autoencoder]

    def stage_start(self, stage: Stage, model: EncoderNet, data) -> None:
        if stage.name == "autoencoder":
            model.encoded.append(data.task.index)  # its code constrains every later task

    def training_loss(self, batch: Batch, model: EncoderNet) -> tuple[torch.Tensor, dict]:
        x, out = batch.forward(model)
        ce = self.classification_loss(out["logits"], batch)
        if self.teacher is None:
            return ce, {"ce": ce.detach()}
        with torch.no_grad():
            old = self.teacher(x)
        kd = self.distillation(out["logits"], old["logits"][:, : batch.task.offset], batch)
        code = self.code_loss(model, out["code_input"], old["code_input"], batch.task)
        loss = ce + self.lamb * kd + self.code_alpha * code  # LwF + L_code
        return loss, {"ce": ce.detach(), "kd": kd.detach(), "code": code.detach()}

    @staticmethod
    def code_loss(model: EncoderNet, current: torch.Tensor, frozen: torch.Tensor, task: Task) -> torch.Tensor:
        """sum over earlier tasks j of mean (sigma(W_j F(x) + b_j) - sigma(W_j F*(x) + b_j))^2."""
        terms = [
            F.mse_loss(model.autoencoders[j].encode(current), model.autoencoders[j].encode(frozen))
            for j in model.encoded
            if j < task.index
        ]
        return torch.stack(terms).sum() if terms else current.new_zeros(())

    def autoencoder_loss(self, batch: Batch, model: EncoderNet) -> tuple[torch.Tensor, dict]:
        """L_ae for the task just learnt: its reconstruction of F*(x) read by the fixed layers
        above it and the task's head. The rest of the network runs in train mode as in the
        authors' code (AlexNet's dropout on); what produces F*(x) in eval mode (BatchNorm fixed)."""
        task = batch.task
        x = batch.view()
        with torch.no_grad(), eval_mode(model.backbone):
            target = model.code_input(x)
        reconstruction = model.autoencoders[task.index](target)
        _, logits = model.heads_on(reconstruction)
        if batch.heads is not None:  # a sequence: each image against its own task's head
            ce = own_head_loss(logits, batch)
        elif batch.rehearsal:  # exemplars in the data: the task's own images only
            own = batch.labels >= task.offset
            ce = F.cross_entropy(logits[own, task.offset : task.end], batch.labels[own] - task.offset)
        else:
            ce = F.cross_entropy(logits[:, task.offset : task.end], batch.labels - task.offset)
        mse = F.mse_loss(reconstruction, target)
        return ce + self.ae_alpha * mse, {"ce": ce.detach(), "mse": mse.detach()}  # L_ae
