"""Typed training configs: presets, TOML overrides checked against field types with the file
named in every error, explicit enums and paths instead of meaningful strings, and a resume that
refuses another config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serialgen.train import TRAINERS, trainer
from serialgen.train.common import RunDir
from serialgen.train.config import (
    Pairing,
    Precision,
    Schedule,
    Source,
    check_resume,
    config_dict,
    describe,
    folder,
    load_config,
)


def _toml(tmp_path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_every_trainer_has_a_mini_preset_and_paper_presets_hold_the_papers_values():
    for name in TRAINERS:
        chosen = trainer(name)
        assert isinstance(chosen.presets["mini"], chosen.config)
    stage1, stage2 = trainer("stage1").presets["paper"], trainer("stage2").presets["paper"]
    assert (stage1.lr, stage1.batch_size, stage1.steps) == (1e-5, 4, 50_000)  # SerialGen §4.1, per GPU of 8
    assert (stage2.lr, stage2.batch_size, stage2.drop_image, stage2.drop_text) == (1e-4, 8, 0.05, 0.05)  # IP-Adapter
    with pytest.raises(ValueError, match="paper trains no such model"):
        load_config(trainer("vae").config, trainer("vae").presets, "paper")


def test_toml_values_become_enums_paths_and_tuples(tmp_path):
    s1 = trainer("stage1")
    cfg = load_config(s1.config, s1.presets, "mini", _toml(tmp_path, 'init_from = "bundled"\nunet = "runs/t2i/model"\n'
                                                         'schedule = "constant"\npose_channels = [4, 8]\n'
                                                         'mixed_precision = "bf16"\n'))
    assert cfg.init_from is Source.BUNDLED and cfg.unet == Path("runs/t2i/model")
    assert cfg.schedule is Schedule.CONSTANT and cfg.mixed_precision is Precision.BF16 and cfg.pose_channels == (4, 8)
    assert cfg.lr == s1.presets["mini"].lr  # untouched fields keep the preset's value
    assert folder(Source.BUNDLED) is None and folder(Path("x")) == Path("x") and describe(None) == "bundled mini"
    s2 = trainer("stage2")
    assert load_config(s2.config, s2.presets, "mini", None, pairing="paired").pairing is Pairing.PAIRED
    assert config_dict(cfg)["init_from"] == "bundled" and config_dict(cfg)["unet"] == "runs/t2i/model"


@pytest.mark.parametrize("text, message", [
    ('steps = "five"\n', "steps = 'five' is not a valid int"),
    ("steps = 0\n", "steps must be at least 1"),
    ("batch_size = 0\n", "batch_size must be at least 1"),
    ("lr = -1.0\n", "lr must be a finite number > 0"),
    ("lr = inf\n", "lr must be a finite number > 0"),
    ('schedule = "linear"\n', "one of 'cosine', 'constant'"),
    ("nonsense = 1\n", "unknown config keys nonsense"),
    ("steps = \n", "not valid TOML"),
])
def test_bad_values_are_refused_naming_the_file(tmp_path, text, message):
    t2i = trainer("t2i")
    path = _toml(tmp_path, text)
    with pytest.raises(ValueError, match=message) as error:
        load_config(t2i.config, t2i.presets, "mini", path)
    assert str(path) in str(error.value)


def test_a_resume_refuses_another_config_but_allows_more_steps():
    t2i = trainer("t2i")
    cfg = t2i.presets["mini"]
    stored = config_dict(cfg)
    check_resume(stored, load_config(t2i.config, t2i.presets, "mini", None, steps=cfg.steps * 2))
    check_resume(None, cfg)  # a checkpoint from before configs were stored
    with pytest.raises(ValueError, match="lr: 0.0004 -> 0.001"):
        check_resume(stored, load_config(t2i.config, t2i.presets, "mini", None, lr=1e-3))


def test_a_resume_accepts_an_option_added_since_at_its_default_only():
    """A run started before an option existed had its default behaviour: resuming it passes while
    the option keeps its default, and refuses once it is set otherwise."""
    stage2 = trainer("stage2")
    cfg = stage2.presets["mini"]
    stored = {k: v for k, v in config_dict(cfg).items() if k not in ("token_grid", "generator")}
    check_resume(stored, cfg)
    with pytest.raises(ValueError, match="token_grid: None -> 2"):
        check_resume(stored, load_config(stage2.config, stage2.presets, "mini", None, token_grid=2))


def test_a_resumed_run_drops_the_log_rows_past_its_checkpoint(tmp_path):
    run = RunDir(tmp_path, trainer("t2i").presets["mini"], resume=False)
    for step in (0, 25, 50, 75):
        run.log(step, loss=1.0)
    run.log(50, eval_psnr=20.0)  # an evaluation at the checkpoint's step stays
    run.truncate_log(50)
    rows = run.log_file.read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [0, 25, 50]
    assert "eval_psnr" in rows[-1]


def test_a_save_killed_between_its_renames_resumes_from_the_previous_checkpoint(tmp_path, capsys):
    import os

    import torch

    from serialgen.train import loop
    from serialgen.train.checkpoint import has_checkpoint, save_checkpoint

    cfg = trainer("t2i").presets["mini"]
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    run = RunDir(tmp_path, cfg, resume=False)
    save_checkpoint(tmp_path, step=50, model=model, optimizer=optimizer, extra={"config": config_dict(cfg)})
    os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.old")  # the kill: the old one moved, no new one yet
    assert has_checkpoint(tmp_path)
    assert loop.resume(run, cfg, model=model, optimizer=optimizer)[0] == 50
    empty = tmp_path / "empty"
    assert loop.resume(RunDir(empty, cfg, resume=True), cfg, model=model, optimizer=optimizer, folder=empty) == (0, 0.0)
    assert "no checkpoint" in capsys.readouterr().out


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*/*.toml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads_with_its_trainers_config(path):
    """configs/<preset>/<model>[_...].toml: a renamed or mistyped key, or a value its field refuses,
    fails here rather than hours into scripts/train_mini.sh."""
    from serialgen.train.config import load_config

    name = path.stem.split("_")[0]
    assert name in TRAINERS, f"{path.name}: no trainer {name!r}"
    chosen = trainer(name)
    preset = path.parent.name if chosen.presets.get(path.parent.name) is not None else "mini"
    cfg = load_config(chosen.config, chosen.presets, preset, path)
    assert isinstance(cfg, chosen.config) and cfg.steps >= 1
