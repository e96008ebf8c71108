"""The adapters' loss gap on held-out characters as the report measures it: which samples are the
references and the targets, the references standardized by Stage I, the gap and its parts."""

from __future__ import annotations

import numpy as np


def loss_gap_parts(gap: dict) -> dict[str, list[float]]:
    """Per character, in % of a loss: the loss gap (own reference against another character's) and
    its parts against no image at all: own vs none (what the right reference adds), other vs none
    (what a wrong one adds; negative when it hurts) and the caption that names the look vs none
    (what the words alone give)."""
    losses = {k: np.asarray(v) for k, v in gap["per_target"].items()}
    none = losses["negative"]
    return {"loss_gap": (100 * (1 - losses["reference"] / losses["other"])).tolist(),
            "own_vs_none": (100 * (1 - losses["reference"] / none)).tolist(),
            "other_vs_none": (100 * (1 - losses["other"] / none)).tolist(),
            "look_vs_none": (100 * (1 - losses["look_caption"] / none)).tolist()}


def loss_gap_rows(test, characters: int) -> tuple[np.ndarray, np.ndarray]:
    """The loss gap's rows in `test`: each of the first held-out characters' first sample (its
    reference) and its fourth (the target; its last when it has fewer)."""
    firsts = test.first_of_each_character()[:characters]
    samples = [np.flatnonzero(test.character_row == test.character_row[f]) for f in firsts]
    return firsts, np.array([rows[min(3, len(rows) - 1)] for rows in samples], dtype=int)


def standardized_rows(standardize, test, rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """Stage I's image of each of `test`'s `rows`, uint8 (N, H, W, 3), each seeded by `seed`."""
    from tqdm import tqdm

    from ..preprocess import Reference

    prepared = [Reference.from_world(test.images["image"][r], test.images["foreground"][r], test.meta[r]["keypoints"])
                for r in rows]
    return np.stack([np.asarray(standardize(r, seed=seed).images[0])
                     for r in tqdm(prepared, desc="loss gap: Stage I", leave=False)])


def loss_gap(serial, test, characters: int, two_stage: bool, seed: int = 0, oracle: bool = False) -> dict:
    """`adapter_loss_gap` on held-out characters (`loss_gap_rows`): the reference standardized by
    `serial`'s Stage I for the two-stage model; oracle: the world's true standard render of the
    character (`test.characters["standard_image"]`)."""
    from . import adapter_loss_gap

    firsts, targets = loss_gap_rows(test, characters)
    if len(firsts) < 2:
        return {}
    if oracle:
        references = test.characters["standard_image"][test.character_row[firsts]]
    elif two_stage:
        references = standardized_rows(serial.standardize, test, firsts, seed)
    else:
        references = test.images["image"][firsts]
    return adapter_loss_gap(serial.personalize, test, references, targets, seed=seed)
