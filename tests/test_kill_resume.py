"""A real `serialgen train` subprocess SIGKILLed again and again at random moments once it
trains (a checkpoint is saved every step, so many kills land inside a save), resumed each time
with --resume: it must end with exactly the weights of an uninterrupted run. About 30 s on 2
cores (each launch imports torch and diffusers)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

CONFIG = """steps = 10
batch_size = 2
crop = [16, 16]
checkpoint_every = 1
sample_every = 1000
eval_images = 2
limit = 8
warmup = 1
mixed_precision = "no"
"""


def _command(dataset: Path, config: Path, out: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "serialgen.cli", "train", "vae", "--data", str(dataset), "--config", str(config),
            "--out", str(out)] + (["--resume"] if resume else [])


def _env() -> dict:
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _weights(out: Path) -> dict:
    return load_file(str(out / "model" / "diffusion_pytorch_model.safetensors"))


def test_sigkill_at_random_moments_then_resume_ends_bit_exact(dataset, tmp_path):
    config = tmp_path / "vae.toml"
    config.write_text(CONFIG)
    straight = tmp_path / "straight"
    subprocess.run(_command(dataset, config, straight, False), env=_env(), check=True, capture_output=True)

    killed = tmp_path / "killed"
    rng = random.Random(0)
    kills, resume = 0, False
    while not (killed / "model" / "training.json").exists():
        process = subprocess.Popen(_command(dataset, config, killed, resume), env=_env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        start = (killed / "checkpoint" / "state.json").stat().st_mtime if resume else 0.0
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline:  # wait until this launch has saved once
            state = killed / "checkpoint" / "state.json"
            if state.exists() and state.stat().st_mtime > start:
                break
            time.sleep(0.02)
        if process.poll() is None and kills < 6:
            time.sleep(rng.uniform(0.0, 0.4))  # somewhere in the next steps and saves
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        resume = True
        assert process.returncode in (0, -signal.SIGKILL)
    assert kills >= 3
    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps))  # no step logged twice
    assert not list(killed.glob("checkpoint.tmp-*")) and not (killed / "checkpoint.old").exists()


def test_seed_option_overrides_the_configs_seed_and_resume_holds_to_it(dataset, tmp_path, capsys):
    """`serialgen train --seed N`: a training-seed replica of a config, recorded in the run's config
    (another seed trains other weights); --resume with another seed is refused."""
    from serialgen.cli import main

    config = tmp_path / "vae.toml"
    config.write_text(CONFIG.replace("steps = 10", "steps = 2"))
    runs = {}
    for seed in (None, 7):
        out = tmp_path / f"seed{seed}"
        assert main(["train", "vae", "--data", str(dataset), "--config", str(config), "--out", str(out)]
                    + ([] if seed is None else ["--seed", str(seed)])) == 0
        runs[seed] = out
    info = json.loads((runs[7] / "model" / "training.json").read_text())
    assert info["config"]["seed"] == 7
    assert json.loads((runs[None] / "model" / "training.json").read_text())["config"]["seed"] == 0
    a, b = _weights(runs[None]), _weights(runs[7])
    assert any(not (a[k] == b[k]).all() for k in a)
    assert main(["train", "vae", "--data", str(dataset), "--config", str(config), "--out", str(runs[7]), "--resume",
                 "--seed", "8"]) == 2
    assert "seed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "vae", "--seed", "-1", "--data", str(dataset), "--out", str(tmp_path / "x")])
    assert "a seed must be 0-2147483647" in capsys.readouterr().err and not (tmp_path / "x").exists()
