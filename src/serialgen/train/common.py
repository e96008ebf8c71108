"""What every training script shares: the output folder (log, sample sheets, final model with
the command and config that made it), timing, and the learning-rate schedule (configs: config.py;
the loop: loop.py).
See docs/ARCHITECTURE.md."""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ..atomic import save_image, write_text
from .config import config_dict


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

    def truncate_log(self, step: int) -> None:
        """Drop the log rows an interrupted run wrote after its last checkpoint (at `step`), so a
        resumed run does not repeat them; evaluation rows made at the checkpoint stay."""
        if not self.log_file.exists():
            return
        rows = [line for line in self.log_file.read_text().splitlines() if line.strip()]
        keep = [line for line in rows if (row := json.loads(line))["step"] < step
                or (row["step"] == step and "loss" not in row)]
        if len(keep) != len(rows):
            write_text(self.log_file, "".join(line + "\n" for line in keep))

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
            "config": config_dict(self.config),
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


def make_accelerator(cfg, device: str = "auto", **kwargs):
    """accelerate's Accelerator with cfg's mixed precision on `device` (auto: CUDA when there is one,
    else the CPU; `serialgen train --device`). fp16 autocast needs a GPU and is refused elsewhere."""
    from accelerate import Accelerator

    from ..devices import resolve

    chosen, _ = resolve(device)
    if cfg.mixed_precision == "fp16" and chosen.type != "cuda":
        raise ValueError("mixed_precision fp16 needs a GPU; on the CPU train with bf16 or no mixed precision "
                         "(--mixed-precision, or mixed_precision in --config)")
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=chosen.type == "cpu", **kwargs)
