"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017).

After task A, the importance of each parameter is the diagonal of the Fisher information of the
network's predictive distribution, estimated on the task's training data,

    F_i = 1/N sum_k ( d log p(y_k | x_k; theta) / d theta_i )^2,   y_k ~ p(y | x_k; theta*_A)

(`fisher_labels="sample"`, the Fisher as the paper defines it; "true": the data's labels, the
empirical Fisher; "argmax": the predicted class, FACIL's default), exact per-sample gradients.
Training on B then minimises

    L(theta) = L_B(theta) + sum_i lambda/2 F_i (theta_i - theta*_A,i)^2                     (eq. 3)

With several tasks the paper keeps one penalty per old task (`accumulate="separate"`); they are
held as the single quadratic they add up to (penalty.merge), so memory does not grow with tasks.
`accumulate="online"` is online EWC (Schwarz et al. 2018): F <- gamma F + F_new, one anchor at
the latest parameters. p(y|x) is the task's own head (`output="task"`: what fine-tuning trains
without exemplars) or all seen logits (`output="all"`, FACIL); F covers every parameter.
`update`: "proximal" (default) or "gradient" (the paper's loss taken literally), see
regularized.py.
"""

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, TaskData, require
from cl_runner.methods.importance import sample_importance
from cl_runner.methods.regularized import Regularized


class EWC(Regularized):
    stability, stability_start = "lamb", 10000.0  # the continual search's parameter (FACIL's start)
    part = "ewc"

    def __init__(
        self,
        lamb: float = 5000.0,
        fisher_labels: str = "sample",
        accumulate: str = "separate",
        gamma: float = 1.0,
        output: str = "task",
        sample_chunk: int | None = 32,
        update: str = "proximal",
        all_logits: bool = False,
    ):
        require(lamb >= 0, f"method.lamb={lamb} is invalid: expected a number >= 0")
        require(
            fisher_labels in ("sample", "true", "argmax"),
            f"method.fisher_labels={fisher_labels!r}: choose sample, true, argmax",
        )
        require(
            accumulate in ("separate", "online"), f"method.accumulate={accumulate!r}: choose separate, online"
        )
        require(0 <= gamma <= 1, f"method.gamma={gamma} is invalid: expected a number in [0, 1]")
        require(output in ("task", "all"), f"method.output={output!r}: choose task, all")
        self.lamb, self.fisher_labels, self.accumulate, self.gamma = lamb, fisher_labels, accumulate, gamma
        self.output, self.sample_chunk, self.all_logits = output, sample_chunk, all_logits
        super().__init__(update)

    @property
    def weight(self) -> float:
        return self.lamb / 2  # L_B + sum lambda/2 F (theta - theta*_A)^2, eq. 3

    def task_fisher(self, model: nn.Module, data: TaskData) -> dict[str, torch.Tensor]:
        """F of the task just learnt, on its clean inputs, in eval mode (the trained network).
        With output="task", only the rows of the task's own classes (not exemplars)."""
        task = data.task
        outputs = slice(task.offset, task.end) if self.output == "task" else slice(None)
        offset = task.offset if self.output == "task" else 0
        # one draw from the run's generator (every process alike), then a generator of its own:
        # each process samples labels for its own batches only
        seed = int(torch.randint(2**62, (1,), generator=data.generator, device=data.generator.device))
        sampler = torch.Generator(data.generator.device).manual_seed(seed)

        def inputs(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
            x, labels = Batch.clean(batch), batch.labels
            if self.output == "task":
                own = (labels >= task.offset) & (labels < task.end)
                x, labels = x[own], labels[own]
            if self.fisher_labels == "true":
                return x, labels - offset
            with torch.no_grad():
                logits = model(x)["logits"][:, outputs].float()
            if self.fisher_labels == "argmax":
                return x, logits.argmax(1)
            probs = F.softmax(logits, 1).to(sampler.device)
            return x, torch.multinomial(probs, 1, generator=sampler).squeeze(1).to(x.device)

        def log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return F.log_softmax(logits[:, outputs], 1).gather(1, labels[:, None]).sum()

        return sample_importance(model, data, log_likelihood, self.sample_chunk, torch.square, inputs)

    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
        fisher = self.task_fisher(model, data)
        if self.accumulate == "separate":
            self.penalty.merge(fisher, model)  # one penalty per task, summed (the paper)
            return
        old = self.penalty.omega  # online: gamma F_old + F_new at the latest parameters
        self.penalty.set({n: f + self.gamma * old[n] if n in old else f for n, f in fisher.items()}, model)
