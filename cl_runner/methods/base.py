"""The method interface. The runner owns the loop (optimizer, schedule, AMP, backward, step,
evaluation, memory, checkpoints, logging); a method adds only what makes it that method, and an
add-on adds a loss term to any method. Both see the data only as `Batch` and `TaskData`, and the
network as the `ContinualNet` it is (never a DDP or compiled wrapper).

The runner calls, for each task:

    model.add_head(task.size); method.before_task(task, model, memory)
    for each of method.stages(task, rehearsal) that trains the task ("head", "main"):
        method.stage_start(stage, model, data)
        for each epoch: method.epoch_start(...)      (main stage)
            for each batch: loss, parts = method.training_loss(batch, model)
                            loss, parts = addon.training_loss(loss, parts, batch, model, method)
                            backward, optimizer step, method.after_step(model, lr, momentum)
    BatchNorm recalibration, memory.update(...), method.after_task(task, model, memory, data)
    each stage after the task's work (DER's balanced classifier stage), its own loss per batch
    evaluation, checkpoint (method.state_dict())
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.data.batch import Batch, TaskData
from cl_runner.data.schedule import Task
from cl_runner.errors import ConfigError
from cl_runner.models import IncrementalNet

#: what a stage trains: every trainable parameter | the newest task's head | the classifier
#: (`ContinualNet.classifier_parameters`) | a function of the network giving the parameters; all
#: but the first with the rest frozen
TRAINS = ("all", "head", "classifier")
#: what it trains on: the task's data (new classes plus exemplars) | that data with every class
#: cut to the smallest class's count | the exemplar memory as updated after the task | the
#: held-out validation images of every seen class (`validation`), `per_class` of each
DATA = ("task", "balanced", "memory", "validation")
#: how a stage's parameters learn: SGD with momentum (every method's training) | Adadelta
#: (EBLL's autoencoders, as the authors' code trains them; rho 0.9, eps 1e-6, `lr` its scale) |
#: Adam (RPSNet; betas 0.9, 0.999)
OPTIMIZERS = ("sgd", "adadelta", "adam")


@dataclass(frozen=True)
class Stage:
    """One stage of learning a task. The runner runs every stage alike: its optimizer, AMP, the
    non-finite check, stopping on a signal, checkpoints within it, its phase time. What is left
    None is the training schedule's (train.*, the first task's own where it has one)."""

    name: str
    epochs: int | None = None
    trains: str | Callable = "all"
    data: str = "task"
    after_task: bool = False  # runs after the memory update and `method.after_task`
    #: a stage that trains part of the network: the rest in eval mode (BatchNorm statistics fixed)
    #: or in train mode (PODNet's official fine-tuning lets them follow the memory)
    mode: str = "eval"
    per_class: int | None = None  # data="validation": images of each seen class (None: as many as all have)
    lr: float | None = None  # None: train.lr x the method's lr_scale (x later_lr_factor)
    milestones: tuple[int, ...] | None = None  # given: a multistep schedule of its own
    gamma: float = 0.1
    momentum: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    optimizer: str = "sgd"
    #: (batch, model) -> (loss, parts) instead of the method's `training_loss`; such a stage
    #: adds no add-on terms and calls no `after_step`
    loss: Callable | None = None


def require(condition: bool, message: str) -> None:
    """Method constructors check their parameters with this: a bad value is a ConfigError."""
    if not condition:
        raise ConfigError(message)


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per class (present: 1, absent: 0) summed over the classes and rows;
    difficult (0) marks, and rows of other tasks (all 0), left out."""
    counted = (targets != 0).to(logits.dtype)
    present = (targets > 0).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, present, weight=counted, reduction="sum")


def own_head_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Task-IL: cross-entropy over each image's own task's head (the new task's images, and old
    tasks' images under joint training or rehearsal); BCE over its head for a multi-label task's.
    Masks rather than indexing, so no device sync."""
    heads, labels = batch.heads, batch.labels
    columns = torch.arange(logits.shape[1], device=logits.device)
    own = (columns >= heads.start[labels, None]) & (columns < heads.end[labels, None])
    single = (~heads.multilabel[labels]).to(logits.dtype)
    loss = (F.cross_entropy(logits.masked_fill(~own, float("-inf")), labels, reduction="none") * single).sum()
    seen = logits.shape[1]
    if heads.multilabel_range is not None and heads.multilabel_range[1] <= seen:
        start, end = heads.multilabel_range  # the sequence's one multi-label set
        loss = loss + multilabel_loss(logits[:, start:end], batch.targets[:, : end - start])
    return loss / len(labels)


class Method:
    #: backbone -> the network the method trains (DER builds its expandable one)
    network = IncrementalNet
    #: epochs that train only the new head, the rest frozen and in eval mode, before the main
    #: stage of every task but the first (LwF's warm-up)
    head_epochs: int = 0
    #: cross-entropy over all seen classes even when no exemplars are in the batch
    all_logits: bool = False
    #: the learning rate this method trains at, relative to train.lr (the LwF paper's feature
    #: extraction: 5x)
    lr_scale: float = 1.0
    #: in a sequence of data sets, earlier tasks' heads learn too (LwF distils them); else they
    #: stay fixed there unless exemplars or `all_logits` put their classes in the loss
    trains_old_heads: bool = False
    #: the method rehearses exemplars (iCaRL, WA): a run without a memory is a config error
    needs_memory: bool = False
    #: share of the memory budget the runner fills with training exemplars (BiC keeps the rest
    #: for its validation images, as its official code counts them in the budget)
    exemplar_share: float = 1.0
    #: every gradient clamped to [-c, c] elementwise before the step (PODNet's official hooks)
    grad_clamp: float | None = None
    #: the method trains on images held out of training (BiC's bias stage): `validation` is needed
    needs_validation: bool = False
    #: the attribute weighing stability against plasticity, which the continual hyper-parameter
    #: search decays (hparams.py), and where that search starts (FACIL's gridsearch_config)
    stability: str | None = None
    stability_start: float | None = None
    #: runs that learn each task from the same state, each with its own draws, of which the best
    #: on the seen classes is kept (RPSNet's candidate paths); `select_on` the split that decides
    candidates: int = 1
    select_on: str = "validation"

    def stages(self, task: Task, rehearsal: bool) -> list[Stage]:
        """How the task is learnt: `head_epochs` of the new head alone (not on the first task),
        then the main stage; `rehearsal`: exemplars are among the task's training data."""
        head = [Stage("head", self.head_epochs, trains="head")] if self.head_epochs and task.index > 0 else []
        return [*head, Stage("main")]

    def stage_start(self, stage: Stage, model: nn.Module, data: TaskData) -> None:
        """Called when a stage begins (not again when a resume continues inside it), after its
        data is drawn (DER resets its classifier before the balanced stage)."""

    def stage_prepare(self, stage: Stage, model: nn.Module, data: TaskData) -> None:
        """Called whenever a stage runs, after `stage_start` and also when a resume continues
        inside it: what the stage keeps fixed for its duration (BiC's logits of the network)."""

    def training_classes(self, task: Task) -> range:
        """Labels whose training data the runner feeds in this task (memory comes on top)."""
        return task.labels

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        """Called after the runner added the task's head; snapshot teachers, grow networks."""

    def use_candidate(self, candidate: int, task: Task, model: nn.Module) -> None:
        """Before candidate `candidate` (of `candidates`) learns the task from the state
        `before_task` left (RPSNet draws its path here)."""

    def classification_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Cross-entropy over the new head's logits when the batch holds only the new task's
        classes (FACIL's and PyCIL's fine-tuning, the LwF paper); over all seen classes when
        exemplars of old classes are in the training data, on the first task, or with
        `all_logits`."""
        task = batch.task
        if batch.heads is not None:  # a sequence: each image against its own task's head
            return own_head_loss(logits, batch)
        if self.all_logits or batch.rehearsal or task.index == 0:
            return F.cross_entropy(logits, batch.labels)
        return F.cross_entropy(logits[:, task.offset : task.end], batch.labels - task.offset)

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        """The loss of one batch and its named parts (logged as epoch means). Run the network
        through `batch.forward(model)`, so add-ons can reuse that pass."""
        loss = self.classification_loss(batch.forward(model).outputs["logits"], batch)
        return loss, {"ce": loss.detach()}

    def epoch_start(self, epoch: int, model: nn.Module, data: TaskData) -> None:
        """Called before each epoch of the main stage, not again when a resume continues inside
        it (DER resets its classifiers when the learning-rate warm-up ends); random draws use
        `data.generator`, which every process of a run draws alike."""

    def after_step(self, model: nn.Module, lr: float, momentum: float) -> None:
        """Called after every optimizer step with its learning rate and momentum (MAS applies
        its proximal update here)."""

    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
        """Called after training on the task and the memory update, before evaluation
        (importance, pruning, classifier re-balancing, ...)."""

    def state_dict(self) -> dict:
        """Tensors and plain values only (no modules): what a resume needs."""
        return {}

    def load_state_dict(self, state: dict, model: nn.Module) -> None:
        """Called after `model` is restored (a resume, or rank 0's state on the other ranks)."""


class AddOn:
    """A loss term added to any method's loss (SD). It may draw further views of the batch
    and reuse the method's own forward pass, `batch.first`."""

    #: distorted views per image it draws from one batch, the method's included (file data
    #: has its workers decode this many)
    views: int = 1

    def training_loss(
        self, loss: torch.Tensor, parts: dict, batch: Batch, model: nn.Module, method: Method
    ) -> tuple[torch.Tensor, dict]:
        """The method's `loss` and `parts` with this add-on's term added."""
        raise NotImplementedError
