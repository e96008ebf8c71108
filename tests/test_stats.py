"""Intervals over training seeds and characters (evaluation/stats.py), checked by their coverage of a
simulated case with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from serialgen.evaluation.stats import bootstrap_ci, seed_character_ci, simulated_coverage


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("seed_sd", [0.0, 1.0])
def test_the_seed_and_character_interval_covers_the_known_mean(seed_sd, paired):
    coverage = simulated_coverage(seeds=3, characters=40, seed_sd=seed_sd, trials=1000, paired=paired)
    assert 0.91 <= coverage <= 0.98, coverage


def test_an_interval_over_characters_alone_would_not_cover_when_seeds_differ():
    """What the seed part is for: the same simulation, a bootstrap over the seed-averaged characters."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(300):
        table = rng.normal(size=(3, 1)) + rng.normal(size=(1, 40)) + 0.5 * rng.normal(size=(3, 40))
        ci = bootstrap_ci(table.mean(0), n=300, seed=int(rng.integers(1 << 30)))
        hits += ci["lo"] <= 0 <= ci["hi"]
    assert hits / 300 < 0.7


def test_one_seed_is_the_t_interval_over_characters():
    values = np.array([0.3, 0.5, 0.1, 0.9, 0.4, 0.6, 0.2, 0.8])
    ci = seed_character_ci(values[None])
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert ci["mean"] == pytest.approx(0.475) and ci["lo"] == pytest.approx(lo) and ci["hi"] == pytest.approx(hi)
    assert ci["seeds"] == 1 and ci["n"] == 8 and ci["df"] == pytest.approx(7)


def test_paired_differences_use_the_same_characters_and_drop_missing_ones():
    a = np.array([[1.0, 2.0, 3.0, np.nan], [1.2, 2.2, 3.2, 4.0]])
    b = np.array([[0.5, 1.5, 2.5, 3.5]])
    ci = seed_character_ci(a, b)
    assert ci["n"] == 3 and ci["seeds"] == [2, 1] and ci["mean"] == pytest.approx(0.6)
    # the seeds' offset is constant here (0.2): the seed part is (MS_seed - MS_residual) / C, not 0
    assert ci["lo"] < 0.6 < ci["hi"]
    with pytest.raises(ValueError, match="different characters"):
        seed_character_ci(a, b[:, :3])


def test_one_character_gives_the_difference_without_an_interval():
    ci = seed_character_ci(np.array([[3.0]]), np.array([[1.0]]))
    assert ci["mean"] == 2.0 and np.isnan(ci["lo"]) and ci["n"] == 1


def _row(table: np.ndarray, seeds: list[int] | None) -> dict:
    """A report row: its (seeds x characters) table and runs that name (or not) their training seeds."""
    runs = [{} if seeds is None else {"training_seed": s} for s in (seeds or range(len(table)))]
    return {"per_seed": {"psnr": table.tolist()}, "runs": runs}


def _shared_seed_rows(rng, order_b=(0, 1, 2), seed_sd=1.0):
    """Two rows trained with seeds 0, 1, 2, each seed moving both alike (the same batches and noise),
    whose true difference is 0.2; row b lists its seeds in `order_b`."""
    seed = seed_sd * rng.normal(size=(3, 1))
    character = rng.normal(size=(1, 40))
    a = 0.2 + seed + character + 0.1 * rng.normal(size=(3, 40))
    b = seed + character + 0.1 * rng.normal(size=(3, 40))
    order = list(order_b)
    return _row(a, [0, 1, 2]), _row(b[order], order)


def test_rows_trained_with_the_same_seeds_are_compared_seed_by_seed():
    """A shared seed effect cancels in a seed-by-seed comparison: its interval covers the known
    difference as often as stated and is far narrower than the one that counts seeds independent."""
    from serialgen.evaluation.report import difference

    rng = np.random.default_rng(0)
    hits, ratios = 0, []
    for trial in range(600):
        a, b = _shared_seed_rows(rng, order_b=(2, 0, 1) if trial % 2 else (0, 1, 2))
        blocked = difference(a, b, "psnr")
        independent = difference({**a, "runs": [{}] * 3}, b, "psnr")
        assert blocked.get("blocked") and not independent.get("blocked")
        assert blocked["mean"] == pytest.approx(independent["mean"])
        hits += blocked["lo"] <= 0.2 <= blocked["hi"]
        ratios.append((blocked["hi"] - blocked["lo"]) / (independent["hi"] - independent["lo"]))
    assert 0.91 <= hits / 600 <= 0.98, hits / 600
    assert np.median(ratios) < 0.2  # the seeds' sd (1) dwarfs the per-seed differences' noise


def test_rows_with_other_seeds_or_unknown_ones_are_compared_as_independent():
    from serialgen.evaluation.report import difference, training_seeds

    rng = np.random.default_rng(1)
    a, b = _shared_seed_rows(rng)
    assert difference(a, b, "psnr").get("blocked")
    other = {**b, "runs": [{"training_seed": s} for s in (0, 3, 4)]}  # one seed in common
    unknown = {**b, "runs": [{"training_seed": 0}, {}, {"training_seed": 2}]}
    twice = {**b, "runs": [{"training_seed": s} for s in (0, 0, 2)]}
    assert training_seeds(unknown) is None and training_seeds(twice) is None
    for row in (other, unknown, twice):
        d = difference(a, row, "psnr")
        assert not d.get("blocked") and d["seeds"] == [3, 3]
    one = _row(np.zeros((1, 40)) + rng.normal(size=(1, 40)), [0])  # one seed each: nothing to block on
    assert not difference(one, one, "psnr").get("blocked")


def test_rows_are_compared_on_the_seeds_both_were_trained_with():
    """A row with a third seed is compared with a two-seed row on their two shared seeds."""
    from serialgen.evaluation.report import difference

    rng = np.random.default_rng(2)
    a, b = _shared_seed_rows(rng, order_b=(1, 2, 0))
    two = {"per_seed": {"psnr": np.array(b["per_seed"]["psnr"])[:2].tolist()}, "runs": b["runs"][:2]}  # seeds 1, 2
    d = difference(a, two, "psnr")
    table_a = np.array(a["per_seed"]["psnr"])
    expected = (table_a[[1, 2]] - np.array(two["per_seed"]["psnr"])).mean()
    assert d.get("blocked") and d["seeds"] == 2 and d["mean"] == pytest.approx(expected)
    assert d["lo"] < 0.2 < d["hi"] and d["hi"] - d["lo"] < 0.3  # the seed effect (sd 1) cancelled


def test_a_models_training_seed_is_read_from_its_training_json(tmp_path):
    import json

    from serialgen.evaluation.report import _training_seed

    (tmp_path / "training.json").write_text(json.dumps({"config": {"seed": 2, "steps": 500}}))
    (tmp_path / "ip-adapter.safetensors").write_bytes(b"")
    assert _training_seed(tmp_path) == {"training_seed": 2}
    assert _training_seed(tmp_path / "ip-adapter.safetensors") == {"training_seed": 2}  # a file: its folder's
    (tmp_path / "untracked").mkdir()
    assert _training_seed(tmp_path / "untracked") == {}  # no training.json: no seed, compared as independent
