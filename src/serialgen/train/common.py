"""What every training script shares: typed configs overridden by TOML files, the output
folder (log, sample sheets, final model with the command that made it), and timing.
See docs/ARCHITECTURE.md."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

from ..atomic import save_image, write_json  # noqa: F401  (write_json: the trainers' record writer)


def load_config(cls, path: str | Path | None, **overrides):
    """A `cls` dataclass from its defaults, then the TOML file at `path`, then `overrides`."""
    values = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"--config {path} does not exist")
        values = tomllib.loads(path.read_text())
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"Unknown config keys {', '.join(unknown)} for {cls.__name__}; known: {', '.join(sorted(names))}")
    for f in dataclasses.fields(cls):  # TOML arrays arrive as lists
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


class RunDir:
    """The output folder of one training run."""

    def __init__(self, out: str | Path, config, resume: bool):
        self.path = Path(out)
        if self.path.exists() and any(self.path.iterdir()) and not resume:
            if (self.path / "checkpoint").exists():
                raise ValueError(f"{self.path} already holds a run; pass --resume to continue it or choose a new --out")
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "samples").mkdir(exist_ok=True)
        self.config = config
        self.start = time.time()
        self.log_file = self.path / "log.jsonl"

    def log(self, step: int, **values) -> None:
        row = {"step": step, "time": round(time.time() - self.start, 1), **values}
        with open(self.log_file, "a") as f:
            f.write(json.dumps(row) + "\n")

    def save_image(self, name: str, image: np.ndarray) -> Path:
        return save_image(self.path / "samples" / name, image)

    def provenance(self, **extra) -> dict:
        """What made this model: the command, the config, the data's own manifest (its seed and
        size), and anything the script adds."""
        if "data" in extra:
            manifest = Path(extra["data"]) / "manifest.json"
            extra["data_manifest"] = json.loads(manifest.read_text()) if manifest.exists() else None
        return {
            "command": " ".join(shlex.quote(a) for a in ["serialgen", *sys.argv[1:]]) if sys.argv[0].endswith("serialgen")
            else " ".join(shlex.quote(a) for a in sys.argv),
            "config": dataclasses.asdict(self.config),
            **extra,
        }


def lr_factor(step: int, warmup: int, steps: int, schedule: str = "cosine") -> float:
    """Linear warm-up, then cosine decay to 0 at `steps`, or constant ("constant": a run can be
    extended by raising `steps` and resuming)."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    if schedule == "constant":
        return warm
    if schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    raise ValueError(f"Unknown schedule {schedule!r}; use 'cosine' or 'constant'")


def set_lr(optimizer, cfg, step: int) -> None:
    """Apply the config's schedule (cfg.lr, warmup, steps, schedule) for this step; a param group's
    optional "lr_scale" multiplies its rate."""
    factor = lr_factor(step, cfg.warmup, cfg.steps, cfg.schedule)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * group.get("lr_scale", 1.0) * factor


def optimizer_step(accelerator, model, optimizer, loss, max_grad_norm: float = 1.0) -> None:
    """Backward, clip the gradient norm, step, clear gradients."""
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
