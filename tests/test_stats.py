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
