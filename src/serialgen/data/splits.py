"""Train / validation / test, by character id, the same for every world.

- train: every character whose id is not 4 mod 5 (80%, as the paper);
- validation: the held-out characters (id 4 mod 5) in the first half of the world's ids;
- test: the held-out characters in the second half.

A world's shards keep two folders: train/ and test/, the held-out characters (validation and
test alike, in id order). Every recipe, phase, checkpoint and sampler choice reads validation;
the test split is read only inside `reading_test_split()`, which `serialgen report` and
`serialgen eval --split test` enter and nothing else does (tests/test_splits.py checks both).
Every character the earlier reports and choices read (the first 64 held-out characters of the
2000-character world, ids below 320) is a validation character.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

SPLITS = ("train", "validation", "test")
HELD_OUT_FOLDER = "test"  # where a world's shards keep every held-out character (format version 1)


class LockedSplitError(PermissionError):
    """Raised when code outside `serialgen report` / `serialgen eval --split test` reads the test split."""


_open = 0


@contextlib.contextmanager
def reading_test_split():
    """Allow reading the test split inside the block (the report and `eval --split test` only)."""
    global _open
    _open += 1
    try:
        yield
    finally:
        _open -= 1


def check_test_access() -> None:
    if not _open:
        raise LockedSplitError("The test split is read only by `serialgen report` and `serialgen eval --split test`; "
                              "choose recipes, phases and checkpoints on the validation split")


def split_of(character_id: int, characters: int) -> str:
    """The split of a character of a world with `characters` characters."""
    if character_id % 5 != 4:
        return "train"
    return "validation" if character_id < characters // 2 else "test"


def folder_of(split: str) -> str:
    """The shard folder that holds a split's characters."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; splits are {', '.join(SPLITS)}")
    return "train" if split == "train" else HELD_OUT_FOLDER


def world_characters(root: str | Path) -> int:
    """The number of characters of the world under `root` (its manifest)."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root} has no manifest.json: make the world with `serialgen synth --out {root} ...`")
    return int(json.loads(path.read_text())["characters"])
