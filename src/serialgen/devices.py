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


class ModelOffload:
    """Model CPU offload, as diffusers' `enable_model_cpu_offload`: every model of a pipeline stays in
    CPU memory and moves to the execution device when it is called, the model there before it going
    back, so the device holds one whole model (the largest: a UNet) instead of all of them. For the
    paper presets on a small GPU; on the mini models it only costs the moves.

    A model is placed when its forward runs (accelerate's hooks), or one of its methods decorated
    with diffusers' `apply_forward_hook` (the VAE's encode/decode, the standardizer's ReferenceNet
    pass, the adapter's image tokens). A model called while one that contains it is placed (the
    UNet inside the Personalizer) stays where it is. `placed` logs each move."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.current: torch.nn.Module | None = None
        self.placed: list[torch.nn.Module] = []
        self._inside: dict[int, set[int]] = {}

    def attach(self, *models) -> "ModelOffload":
        from accelerate.hooks import ModelHook, add_hook_to_module

        offload = self

        class PlaceOnCall(ModelHook):
            def pre_forward(self, module, *args, **kwargs):
                offload.place(module)
                return args, kwargs

        for model in models:
            if model is None or id(model) in self._inside:
                continue
            model.to("cpu")
            self._inside[id(model)] = {id(m) for m in model.modules()}
            add_hook_to_module(model, PlaceOnCall())
        return self

    def place(self, model: torch.nn.Module) -> None:
        """Put model on the execution device (and the one there before back on the CPU)."""
        current = self.current
        if current is model or (current is not None and id(model) in self._inside[id(current)]):
            return
        if current is not None:
            current.to("cpu")
        model.to(self.device)
        self.current = model
        self.placed.append(model)

    def release(self) -> None:
        """Every model back in CPU memory (a pipeline's call leaves its last model on the device)."""
        if self.current is not None:
            self.current.to("cpu")
            self.current = None
