"""Held-out characters of a world's test split as references: which sample of each character
serves as its reference, for Stage I scoring and sample sheets (`held_out_references`) and for
series (`held_out_series`). Used alike by the trainers' sample sheets and by evaluation."""

from __future__ import annotations

import numpy as np

from ..preprocess import Reference
from ..world.attributes import scene_caption
from .memory import WorldArrays


def held_out_picks(test: WorldArrays, count: int) -> np.ndarray:
    """One sample index per held-out character, for the first `count` characters (the pose index
    varies with the character)."""
    rows = test.first_of_each_character()[:count]
    picks = []
    for k, first in enumerate(rows):
        end = rows[k + 1] if k + 1 < len(rows) else len(test)
        picks.append(first + (k * 5) % (end - first))
    return np.array(picks)


def held_out_references(test: WorldArrays, count: int) -> tuple[list[Reference], np.ndarray]:
    """One sample per held-out character (`held_out_picks`), and its ground truth."""
    picks = held_out_picks(test, count)
    refs = [Reference.from_world(test.images["image"][i], test.images["foreground"][i], test.meta[i]["keypoints"])
            for i in picks]
    truth = test.characters["standard_image"][test.character_row[picks]]
    return refs, truth


def held_out_series(test: WorldArrays, characters: int, prompts: int) -> list[tuple[Reference, list[str]]]:
    """For each of the first held-out characters: its first image as reference, and the scene
    captions of its next images as the series' prompts."""
    out = []
    rows = test.first_of_each_character()[:characters]
    for first in rows:
        same = np.flatnonzero(test.character_row == test.character_row[first])
        ref = Reference.from_world(test.images["image"][first], test.images["foreground"][first],
                                   test.meta[first]["keypoints"])
        out.append((ref, [scene_caption(test.meta[i]) for i in same[1:prompts + 1]]))
    return out
