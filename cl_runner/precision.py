"""The device's numeric settings: which dtype `train.amp` autocasts to, and cuDNN's algorithms.

bf16 needs no loss scaling and is native on GPUs of compute capability 8.0 and later (A100,
H100, RTX 30xx on) and on CPUs with AVX-512 BF16 or AMX. V100, T4 and the RTX 20 series have no
bf16 convolutions (they fall back to slow paths or are refused): there AMP means float16 with a
gradient scaler.
"""

import os

import torch


def autocast_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    return dtype == torch.float16


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """`train.deterministic`: cuDNN's deterministic algorithms, no autotuning, and PyTorch's
    deterministic kernels where they exist (warning where they do not), so a resumed GPU run
    repeats the uninterrupted one; otherwise cuDNN autotunes for speed. Process-wide: only
    train.py calls this."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def select_device(device: torch.device) -> None:
    """`device=cuda:N` makes N the current device (caching allocator, default streams);
    `device=cpu` touches nothing of CUDA."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
