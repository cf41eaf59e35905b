"""The device's numeric and speed settings: which dtype `train.amp` autocasts to, cuDNN's
algorithms, subnormals on the CPU, the memory format of training and of evaluation, and the
batch of forward passes outside training.

bf16 needs no loss scaling and is native on GPUs of compute capability 8.0 and later (A100,
H100, RTX 30xx on) and on CPUs with AVX-512 BF16 or AMX. V100, T4 and the RTX 20 series have no
bf16 convolutions (they fall back to slow paths or are refused): there AMP means float16 with a
gradient scaler. A CPU without native bf16 would emulate it, slower than float32: there AMP is off.
"""

import os

import torch


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """What `train.amp=true` autocasts to on this device; None: float32 (no native bf16 on this CPU)."""
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def cpu_has_bf16() -> bool:
    """oneDNN's bf16 kernels run natively (AVX-512 BF16, AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def prefers_channels_last(device: torch.device) -> bool:
    """`train.channels_last=auto`: NHWC where its convolutions are measured faster: GPUs with
    tensor cores (compute capability 7.0 on) and AVX-512 CPUs (oneDNN's blocked NHWC kernels:
    ResNet-32 training at batch 128 651 vs 537 images/s here, 1,054 vs 903 with bf16)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 7
    if device.type == "cpu":
        return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")
    return False


def evaluates_faster_in_nhwc(device: torch.device) -> bool:
    """Evaluation's inputs in NHWC whatever training uses: on AVX-512 CPUs, where a ResNet-32
    forward at batch 128 runs 1.2x faster (1,815 vs 1,536 images/s here, bench.py's ceiling; the
    weights may stay NCHW). Evaluation alone: its logits move by float rounding, which the
    accuracies it reports have not shown, while training and everything that feeds it (herding,
    recalibration, importance) keep training's layout and repeat exactly. GPUs keep training's
    layout: not measured there."""
    return device.type == "cpu" and prefers_channels_last(device)


def forward_batch_size(device: torch.device) -> int:
    """`train.eval_batch_size=auto`, the batch of forward passes outside training (evaluation,
    herding's features): 128 on a CPU, where the activations stay in cache (ResNet-32 forwards
    at about 1,500 images/s at 64 to 128 here, 650 at 512, 570 at 1024), 1024 on a GPU (fewer
    launches). Outputs do not depend on it: each image's logits are the same at any batch."""
    return 128 if device.type == "cpu" else 1024


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    return dtype == torch.float16


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """`train.deterministic`: cuDNN's deterministic algorithms, no autotuning, and PyTorch's
    deterministic kernels where they exist (warning where they do not), so a resumed GPU run
    repeats the uninterrupted one; otherwise cuDNN autotunes for speed. On the CPU, subnormals
    flush to zero. Process-wide: only train.py calls this."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type == "cpu":
        flush_subnormals()


def flush_subnormals() -> None:
    """Subnormal floats (magnitude below 1.2e-38) as zero on the CPU. x86 computes with them in
    microcode, about 75x slower (a convolution over them here: 305 vs 4 ms), and DER's annealed
    channel masks make them in every masked layer: its training ran 1.5x slower for that alone.
    Only values that small change. GPUs run subnormals at full speed: nothing to do there."""
    torch.set_flush_denormal(True)


def select_device(device: torch.device) -> None:
    """`device=cuda:N` makes N the current device (caching allocator, default streams);
    `device=cpu` touches nothing of CUDA."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
