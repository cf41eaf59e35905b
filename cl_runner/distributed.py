"""One run on several processes (`torchrun`), with results that do not depend on how many.

- Every rank holds the same data and the same seeded generator, so all draw the same epoch
  orders, crops and flips. Each global batch (`train.batch_size` images) is cut into one
  contiguous block of images per rank (its shard); random draws are made for the whole batch and
  each rank keeps its shard's.
- BatchNorm normalises with the statistics of the whole global batch (`GlobalBatchNorm`, any
  backend, also gloo on the CPU where torch's SyncBatchNorm does not run).
- Each rank's loss is weighted by its share of the batch (`Ranks.weight`), so the gradient
  that DistributedDataParallel averages is the single-process gradient.
- The work after a task (precise BatchNorm, herding, pruning, classifier re-training,
  importance) runs on every rank; then all ranks adopt rank 0's model, method and memory
  (`Ranks.from_leader`), so floating-point differences between devices cannot make them drift.
"""

import inspect
import io
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from cl_runner import rng


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one run; `Ranks()` is a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        """Rank 0 writes the run folder, checkpoints and logs."""
        return self.rank == 0

    def shard(self, global_size: int) -> slice:
        """This rank's block of a global batch of `global_size` images (sizes differ by at most one)."""
        size, extra = divmod(global_size, self.world)
        start = self.rank * size + min(self.rank, extra)
        return slice(start, start + size + (self.rank < extra))

    def weight(self, global_size: int) -> float:
        """world * n_rank / global_size: DDP averages the ranks' gradients, and a rank with n_rank
        of the batch's images must count for n_rank / global_size of the batch-mean loss."""
        shard = self.shard(global_size)
        return self.world * (shard.stop - shard.start) / global_size

    # -- collectives (no-ops for a single process) ---------------------------------------------
    def any(self, flag: bool, device: torch.device) -> bool:
        if not self.active:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ranks' average of each (same-named) scalar, one collective for all of them."""
        if not self.active or not values:
            return values
        stacked = torch.stack([v.float() for v in values.values()])
        dist.all_reduce(stacked)
        return dict(zip(values, stacked / self.world, strict=True))

    def gather(self, value) -> list:
        """Every rank's `value` (any picklable object), in rank order."""
        if not self.active:
            return [value]
        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.active:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def max(self, value: torch.Tensor) -> torch.Tensor:
        if self.active:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return value

    def from_leader(self, make_state, device: torch.device):
        """Rank 0's `make_state()` on every rank, loaded onto `device` (tensors, modules and
        all: serialised as a checkpoint is). Other ranks do not call `make_state`."""
        if not self.active:
            return make_state()
        payload = [None]
        if self.leader:
            buffer = io.BytesIO()
            torch.save(make_state(), buffer)
            payload = [buffer.getvalue()]
        dist.broadcast_object_list(payload, src=0)
        return torch.load(io.BytesIO(payload[0]), map_location=device, weights_only=False)

    # -- the model -----------------------------------------------------------------------------
    @contextmanager
    def replicate(self, model: nn.Module, device: torch.device):
        """`model` wrapped in DistributedDataParallel, with global-batch BatchNorm, for one
        task's training (the model grows between tasks). A single process gets `model`."""
        if not self.active:
            yield model
            return
        swapped = use_global_batchnorm(model, device)
        # BatchNorm statistics are global, hence already equal: no buffer broadcast per forward
        # (the keyword's name changed in newer torch).
        no_buffer_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        leader_rng = global_rng(device)  # restored as is if training stops with an error
        if not self.leader:  # its own dropout masks; rank 0 draws what a single process would
            torch.manual_seed(torch.initial_seed() + self.rank)
        try:
            with warnings.catch_warnings():
                # A 1-channel input's first conv: its gradient's stride on the size-1 axis
                # differs from the bucket's, which is harmless and would warn every task.
                warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides")
                yield DistributedDataParallel(
                    model,
                    device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=False,  # every trainable parameter takes part in each loss
                    **no_buffer_sync,
                )
            # All continue with rank 0's generator, as one process would (the next task's weights).
            leader_rng = self.from_leader(lambda: global_rng(device), torch.device("cpu"))
        finally:
            for module, kind in swapped:
                module.__class__ = kind
                module.__dict__.pop("process_group", None)
            set_global_rng(leader_rng, device)


def global_rng(device: torch.device) -> dict:
    state = {"cpu": rng.pack(torch.get_rng_state())}
    if device.type == "cuda":
        state["cuda"] = rng.pack(torch.cuda.get_rng_state(device))
    return state


def set_global_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(rng.unpack(state["cpu"]))
    if "cuda" in state:
        torch.cuda.set_rng_state(rng.unpack(state["cuda"]), device)


SINGLE = Ranks()


class GlobalSum(torch.autograd.Function):
    """The sum over ranks of a tensor, differentiable: each rank's input reaches every rank's
    loss, so its gradient is the sum of all ranks' gradients of the output."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch: each rank's sums are
    added up by a differentiable all-reduce, so the backward pass is the global one too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, channels] + [1] * (x.dim() - 2)
        # Sums around the running mean (equal on all ranks): one all-reduce, no cancellation.
        wide = torch.promote_types(x.dtype, torch.float32)  # bf16 (AMP) sums in float32
        shift = self.running_mean.detach().to(wide).view(shape)
        centred = x.to(wide) - shift
        count = torch.full((1,), x.numel() / channels, dtype=wide, device=x.device)
        local = torch.cat([centred.sum(dims), centred.square().sum(dims), count])
        total = GlobalSum.apply(local)
        n = total[-1]
        offset = total[:channels] / n
        var = total[channels : 2 * channels] / n - offset.square()
        y = (centred - offset.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
            mean = shift.view(-1) + offset
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
            unbiased = var * n / (n - 1).clamp(min=1)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return y.to(x.dtype)


def use_global_batchnorm(model: nn.Module, device: torch.device) -> list[tuple[nn.Module, type]]:
    """Turn every BatchNorm with running statistics into a global one, in place: the same
    object, parameters and buffers (masks and pruning plans keep referring to it), new class.
    On CUDA that is torch's SyncBatchNorm, whose fused kernels keep a fraction of the
    activations the hand-written one does for the backward pass; GlobalBatchNorm serves gloo
    (SyncBatchNorm does not run on the CPU). Returns what to turn back."""
    base = nn.SyncBatchNorm if device.type == "cuda" else GlobalBatchNorm
    swapped, kinds = [], {}
    for module in model.modules():
        kind = type(module)
        if (
            isinstance(module, _BatchNorm)
            and not isinstance(module, (GlobalBatchNorm, nn.SyncBatchNorm))
            and module.track_running_stats
        ):
            if kind not in kinds:
                kinds[kind] = type(f"{base.__name__}{kind.__name__}", (base, kind), {})
            module.__class__ = kinds[kind]
            if base is nn.SyncBatchNorm:
                module.process_group = None  # the whole world
            swapped.append((module, kind))
    return swapped


# -- the process group (train.py owns it) ------------------------------------------------------
def from_environment() -> Ranks:
    """The ranks `torchrun` describes in the environment (a single process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def start(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the process group; each rank gets its own GPU (`LOCAL_RANK`) on CUDA."""
    if not ranks.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
