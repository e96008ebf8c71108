"""The one training loop every trainer runs: per step the schedule's learning rate, the trainer's
own forward (`step`), backward with gradient clipping, the optimizer step, the EMA; every 25
steps a log row; a checkpoint every `checkpoint_every` steps and at the end; a sample or
evaluation every `sample_every` steps and at the end. Batches and noise follow (seed, step) in
every trainer, so a resumed run continues the very same run. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import ema_update, has_checkpoint, load_checkpoint, save_checkpoint
from .common import RunDir, set_lr
from .config import check_resume, config_dict

LOG_EVERY = 25


@dataclass
class StepResult:
    """What a trainer's step reports: the loss to minimise; at logging steps (`report`), extra
    values for the log row and the progress bar (default: the loss)."""

    loss: torch.Tensor
    logs: dict | None = None
    postfix: dict | None = None


def resume(run: RunDir, cfg, *, model: torch.nn.Module, optimizer, ema: torch.nn.Module | None = None,
           folder: Path | None = None, requested: bool = True, truncate_log: bool = True) -> tuple[int, float]:
    """Restore the last checkpoint under `folder` (default the run folder) when `requested`.
    -> (first step, seconds already spent). The checkpoint must have been made with this config
    (`config.check_resume`); log rows the interrupted run wrote past its checkpoint are dropped
    (unless `truncate_log` is False: a second loop in the same run, whose steps restart at 0)."""
    folder = Path(folder or run.path)
    if not requested:
        return 0, 0.0
    if not has_checkpoint(folder):
        print(f"no checkpoint in {folder}: starting from step 0")
        return 0, 0.0
    state = load_checkpoint(folder, model=model, optimizer=optimizer, ema=ema)
    check_resume(state["extra"].get("config"), cfg)
    start = state["step"]
    if truncate_log:
        run.truncate_log(start)
    print(f"resumed from step {start}")
    return start, state["extra"].get("elapsed_s", 0.0)


def run(cfg, run_dir: RunDir, accelerator, *, step: Callable[[int, bool], StepResult], wrapped: torch.nn.Module,
        optimizer, model: torch.nn.Module, start: int, elapsed: float, desc: str, ema: torch.nn.Module | None = None,
        ema_decay: float = 0.0, after_update: Callable[[], None] | None = None,
        sample: Callable[[int, tqdm], None] | None = None, max_grad_norm: float | None = 1.0,
        folder: Path | None = None, steps: int | None = None, lr_of: Callable[[int], None] | None = None) -> float:
    """Train from `start` to cfg.steps (or `steps`). accelerator: accelerate's, or None for a plain
    single-process loop. wrapped: what accelerate prepared (its
    parameters are clipped); model: what the checkpoint saves (with `ema`, updated from model at
    `ema_decay`, 0 during warm-up). after_update runs after each optimizer step (e.g. clamping a
    parameter); sample(done, bar) at the sampling cadence; lr_of(step) replaces the config's
    schedule. -> total seconds spent on the run."""
    main = accelerator is None or accelerator.is_main_process
    total = steps or cfg.steps
    folder = Path(folder or run_dir.path)
    bar = tqdm(range(start, total), initial=start, total=total, desc=desc, disable=not main)
    t0 = time.time()
    for k in bar:
        if lr_of is None:
            set_lr(optimizer, cfg, k)
        else:
            lr_of(k)
        report = k % LOG_EVERY == 0
        out = step(k, report)
        if accelerator is None:
            out.loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(wrapped.parameters(), max_grad_norm)
        else:
            accelerator.backward(out.loss)
            if max_grad_norm is not None:
                accelerator.clip_grad_norm_(wrapped.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_update is not None:
            after_update()
        if ema is not None:
            ema_update(ema, model, ema_decay if k > cfg.warmup else 0.0)
        if report:
            bar.set_postfix(out.postfix or {"loss": f"{out.loss.item():.4f}"})
            run_dir.log(k, **(out.logs or {"loss": out.loss.item()}), lr=optimizer.param_groups[0]["lr"])
        done = k + 1
        if main and (done % cfg.checkpoint_every == 0 or done == total):
            save_checkpoint(folder, step=done, model=model, optimizer=optimizer, ema=ema,
                            extra={"elapsed_s": elapsed + time.time() - t0, "config": config_dict(cfg)})
        if main and sample is not None and (done % cfg.sample_every == 0 or done == total):
            sample(done, bar)
    return elapsed + time.time() - t0
