"""RPSNet: Random Path Selection for Incremental Learning (Rajasegaran et al., NeurIPS 2019), as
the official CIFAR code runs it (`brjathu/RPSnet` at 40a884d, with the authors' "paper-comparable"
defaults: cifar.py, learner.py, util.py, CIFAR100.sh).

Paths. Task 0 learns module 0 of every layer. Every `jump` tasks a new path is drawn
(`modules_per_path` random modules per layer), otherwise the last task's path is reused; a path
is frozen once its `jump` tasks are over. The network runs the path and every frozen module
(`infer`); only the path's modules that are not frozen learn, with the skips and the classifier
(models/rpsnet.py). Each task is learnt by `candidates` runs from the same state (K = 8 GPUs in
the official script), each with its own draws (its path in a new-path task, its data order and
distortions always), and the best on the seen classes is kept (the runner's candidate stage).

Loss (learner.py:151-176), z the student's logits over all classes of the protocol, z_o the
teacher's (the network as the last task left it, run on the current path), C_o the old classes:

    L = CE(z[:, :seen], y) + phi_s / B * sum_i sum_c max(0, p_ic (log p_ic - log q_ic))
    u_i = onehot(y_i) with u_i[:C_o] = z_o,i[:C_o],   p = softmax(u / 2),   q = softmax(z / 2)
    phi_s = 1 for s <= jump, else rigidness * (s - jump)

over all classes, future ones included (the hybrid target puts mass on them). Adam at 1e-3,
x0.5 at epochs 20, 40, 60, 80 of 100, batch 128, a random memory of 2000 (the recipe).
"""

import torch
import torch.nn.functional as F

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, Stage, require
from cl_runner.methods.teacher import WithTeacher
from cl_runner.models.rpsnet import RPSBank, RPSNet

SELECT_ON = ("validation", "test")


class RPSNetMethod(WithTeacher):
    needs_memory = True
    #: its held-out images are part of the method (the candidates' choice), not of the protocol
    #: (cl-report); a single candidate, or choosing on the test set, needs none
    needs_validation = True

    def __init__(
        self,
        total_classes: int,
        candidates: int = 8,
        select_on: str = "validation",
        jump: int = 2,
        modules_per_path: int = 1,
        rigidness: float = 2.5,
        T: float = 2.0,
        seed: int = 0,
    ):
        require(candidates >= 1, f"method.candidates={candidates} is invalid: expected an integer >= 1")
        require(
            select_on in SELECT_ON, f"method.select_on={select_on!r} is invalid: choose from validation, test"
        )
        require(jump >= 1, f"method.jump={jump} is invalid: expected an integer >= 1")
        require(
            modules_per_path >= 1, f"method.modules_per_path={modules_per_path} is invalid: expected >= 1"
        )
        require(rigidness >= 0, f"method.rigidness={rigidness} is invalid: expected a number >= 0")
        require(T > 0, f"method.T={T} is invalid: expected a number > 0")
        self.total_classes, self.candidates, self.select_on = total_classes, candidates, select_on
        self.jump, self.modules_per_path, self.rigidness, self.T = jump, modules_per_path, rigidness, T
        self.seed = seed
        self.needs_validation = candidates > 1 and select_on == "validation"
        self.paths: list[list[list[int]]] = []  # each learnt task's path (L x M, 0/1)

    def network(self, bank) -> RPSNet:
        require(
            isinstance(bank, RPSBank),
            "method=rpsnet runs its own network of parallel modules: set backbone=rpsnet",
        )
        require(
            self.modules_per_path <= bank.modules_per_layer,
            f"method.modules_per_path={self.modules_per_path} exceeds the bank's "
            f"{bank.modules_per_layer} modules per layer",
        )
        return RPSNet(bank, self.total_classes)

    def stages(self, task: Task, rehearsal: bool) -> list[Stage]:
        return [Stage("main", optimizer="adam")]

    # -- paths ---------------------------------------------------------------------------------
    def frozen(self, task: int) -> list[list[int]]:
        """F: every path whose `jump` tasks ended before this task's block began."""
        layers, modules = len(self.paths[0]), len(self.paths[0][0])
        done = self.paths[: (task // self.jump) * self.jump]
        return [[int(any(p[layer][m] for p in done)) for m in range(modules)] for layer in range(layers)]

    def draw(self, task: int, candidate: int, layers: int, modules: int) -> list[list[int]]:
        """The path of `task` for this candidate: module 0 on the first task, a new random one
        every `jump` tasks (its own draw per candidate), else the last task's."""
        if task == 0:
            return [[int(m == 0) for m in range(modules)] for _ in range(layers)]
        if task % self.jump:
            return [list(row) for row in self.paths[task - 1]]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + task * 1_009 + candidate)
        path = []
        for _ in range(layers):
            picked = torch.randperm(modules, generator=generator)[: self.modules_per_path].tolist()
            path.append([int(m in picked) for m in range(modules)])
        return path

    def use_candidate(self, candidate: int, task: Task, model: RPSNet) -> None:
        """Before the candidate's training: its path, what runs and learns, its teacher."""
        layers, modules = len(model.backbone.layers), model.backbone.modules_per_layer
        path = self.draw(task.index, candidate, layers, modules)
        self.paths[task.index :] = [path]
        fixed = self.frozen(task.index)
        model.infer = [
            [int(p or f) for p, f in zip(pr, fr, strict=True)] for pr, fr in zip(path, fixed, strict=True)
        ]
        for layer, row in enumerate(model.backbone.layers):
            for m, module in enumerate(row):
                module.requires_grad_(bool(path[layer][m] and not fixed[layer][m]))  # train = P and not F
        super().before_task(task, model, None)  # the teacher runs the current path

    def before_task(self, task: Task, model: RPSNet, memory) -> None:
        self.use_candidate(0, task, model)

    # -- the loss ------------------------------------------------------------------------------
    def training_loss(self, batch: Batch, model: RPSNet) -> tuple[torch.Tensor, dict]:
        x, out = batch.forward(model)
        ce = F.cross_entropy(out["logits"], batch.labels)
        if self.teacher is None:
            return ce, {"ce": ce.detach()}
        old = batch.task.offset
        with torch.no_grad():
            target = F.one_hot(batch.labels, self.total_classes).to(out["all_logits"].dtype)
            target[:, :old] = self.teacher(x)["all_logits"][:, :old]  # the hybrid target u
            p = F.softmax(target / self.T, dim=1)
        log_q = F.log_softmax(out["all_logits"] / self.T, dim=1)
        kd = F.kl_div(log_q, p, reduction="none").clamp(min=0).sum() / len(batch.labels)
        s = batch.task.index
        phi = 1.0 if s <= self.jump else self.rigidness * (s - self.jump)
        return ce + phi * kd, {"ce": ce.detach(), "kd": kd.detach()}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "paths": self.paths}

    def load_state_dict(self, state: dict, model: RPSNet) -> None:
        super().load_state_dict(state, model)
        self.paths = [[list(row) for row in path] for path in state["paths"]]
