"""Training checkpoints in safetensors only: model, EMA, optimizer state, RNG states, step.

A checkpoint is a directory written under a temporary name and swapped in with renames, so
a kill at any moment leaves the previous checkpoint or the new one, never half of one.
Non-tensor state (step, optimizer hyper-parameters, Python/NumPy RNG) goes to state.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT = "checkpoint"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimizer state_dict -> (tensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(rest["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in rest["param_groups"]]  # JSON lists
    return {"state": state, "param_groups": groups}


def _state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # shared tensors (tied weights) are cloned so safetensors accepts them
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(out: Path, *, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ema: torch.nn.Module | None = None, extra: dict | None = None) -> Path:
    """Write out/checkpoint atomically. -> its path."""
    out = Path(out)
    final = out / CHECKPOINT
    tmp = out / f"{CHECKPOINT}.tmp-{os.getpid()}"
    for stale in out.glob(f"{CHECKPOINT}.tmp-*"):  # this save's, and those of saves killed halfway
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_state_dict(model), str(tmp / "model.safetensors"))
    if ema is not None:
        save_file(_state_dict(ema), str(tmp / "ema.safetensors"))
    opt_tensors, opt_rest = _flatten_optimizer(optimizer.state_dict())
    opt_tensors["__torch_rng__"] = torch.get_rng_state()
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    np_state = np.random.get_state()
    state = {
        "step": step, "optimizer": opt_rest, "extra": extra or {},
        "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    (tmp / "state.json").write_text(json.dumps(state, default=str))
    old = out / f"{CHECKPOINT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def has_checkpoint(out: Path) -> bool:
    """A checkpoint, or the previous one when a save was killed between its two renames."""
    out = Path(out)
    return (out / CHECKPOINT / "state.json").exists() or (out / f"{CHECKPOINT}.old" / "state.json").exists()


def load_checkpoint(out: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ema: torch.nn.Module | None = None) -> dict:
    """Restore model, EMA, optimizer and RNG states from out/checkpoint. -> state (step, extra)."""
    path = Path(out) / CHECKPOINT
    if not (path / "state.json").exists():
        old = Path(out) / f"{CHECKPOINT}.old"  # killed between the two renames
        if (old / "state.json").exists():
            path = old
        else:
            raise FileNotFoundError(f"No checkpoint in {out}; start without --resume")
    state = json.loads((path / "state.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    if ema is not None:
        ema.load_state_dict(load_file(str(path / "ema.safetensors")))
    tensors = load_file(str(path / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("__torch_rng__"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    py = state["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy_rng"]
    np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), *npst[2:]))
    return state


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Exponential moving average of parameters (buffers copied)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)
