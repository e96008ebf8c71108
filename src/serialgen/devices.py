"""Where inference runs: `--device auto|cpu|cuda` and `--dtype auto|float32|float16|bfloat16`."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """-> (device, dtype). auto: CUDA when there is one, else the CPU; half precision (float16) on
    CUDA, float32 on the CPU. A CUDA request without a CUDA device, and float16 on the CPU (whose
    kernels lack half-precision convolutions), are refused with a one-line reason."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ValueError("--device cuda: this machine has no CUDA device (torch.cuda.is_available() is False)")
    chosen = torch.device("cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu")
    kind = DTYPES[dtype] or (torch.float16 if chosen.type == "cuda" else torch.float32)
    if chosen.type == "cpu" and kind == torch.float16:
        raise ValueError("--dtype float16 needs a GPU; on the CPU use float32 or bfloat16")
    return chosen, kind
