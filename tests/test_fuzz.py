"""Property-based fuzzing (hypothesis) of what users type: numbers, sizes and prompt strings.
Whatever the input, the parser, the prompt readers and the config loader either accept a value
that is valid or refuse it with a one-line message; none of them crashes or lets a bad value
through to the models."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serialgen.cli import build_parser
from serialgen.serve import parse_prompts
from serialgen.train import trainer
from serialgen.train.config import load_config

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70)).map(str) | st.text(max_size=8)


def _parse(argv: list[str]):
    """-> the parsed namespace, or None when the parser refused (exit 2)."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 2
        return None


@FUZZ
@given(guidance=numbers, scale=numbers, seed=numbers, steps=numbers)
def test_generate_numbers_are_valid_or_refused(guidance, scale, seed, steps):
    args = _parse(["generate", "--reference", "r.png", "--prompt", "x", "--out", "o", "--guidance=" + guidance,
                   "--scale=" + scale, "--seed=" + seed, "--steps=" + steps])
    if args is not None:
        assert math.isfinite(args.guidance) and args.guidance >= 0 and math.isfinite(args.scale) and args.scale >= 0
        assert 0 <= args.seed < 2**31 and 1 <= args.steps <= 1000


@FUZZ
@given(tile=numbers, characters=numbers)
def test_sheet_sizes_are_valid_or_refused(tile, characters):
    args = _parse(["sheet", "data", "--out", "s.png", "--tile-height=" + tile, "--characters=" + characters])
    if args is not None:
        assert 16 <= args.tile_height <= 1024


@FUZZ
@given(text=st.text(max_size=400), limit=st.integers(1, 20))
def test_app_prompts_are_nonempty_lines_within_the_limit_or_refused(text, limit):
    try:
        prompts = parse_prompts(text, limit)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert 1 <= len(prompts) <= limit
    assert all(p and p == p.strip() and not p.startswith("#") and "\n" not in p for p in prompts)


@FUZZ
@given(prompts=st.lists(st.text(max_size=60), max_size=5))
def test_cli_prompts_are_nonempty_or_refused(prompts, tmp_path_factory):
    from argparse import Namespace

    from serialgen.cli import _read_prompts

    try:
        read = _read_prompts(Namespace(prompt=prompts, prompts_file=None))
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert read and all(p and p == p.strip() for p in read)


@FUZZ
@given(steps=st.one_of(st.integers(-5, 10**7), st.floats(allow_nan=True), st.text(max_size=5), st.booleans()),
       lr=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.text(max_size=3)),
       schedule=st.text(max_size=10))
def test_training_config_values_are_typed_or_refused(steps, lr, schedule):
    chosen = trainer("t2i")
    try:
        cfg = load_config(chosen.config, chosen.presets, "mini", None, steps=steps, lr=lr, schedule=schedule)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(cfg.steps, int) and not isinstance(cfg.steps, bool) and cfg.steps >= 1
    assert math.isfinite(cfg.lr) and cfg.lr > 0 and cfg.schedule in ("cosine", "constant")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e400"])
def test_known_bad_guidance_values_are_refused(value):
    assert _parse(["standardize", "r.png", "--out", "o.png", "--guidance=" + value]) is None
