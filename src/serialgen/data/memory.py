"""In-memory arrays of a character-world split, and step-indexed batches for exact resume.

The mini models train on tens of thousands of small renders, which fit in memory as uint8.
A batch is a pure function of (seed, step), so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .reader import iterate_records


@dataclass
class WorldArrays:
    """Images (N, H, W, C) uint8 per key, and per-sample metadata.

    Keys loaded `per_character` (a character's standard image, say, repeated in each of its
    samples) are stored once per character in `characters[key]` (C, H, W, ch), and
    `character_row[i]` is sample i's row there."""

    images: dict[str, np.ndarray]
    meta: list[dict] = field(default_factory=list)
    characters: dict[str, np.ndarray] = field(default_factory=dict)
    character_row: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.meta)

    def first_of_each_character(self) -> np.ndarray:
        """Index of each character's first sample (its standard image appears once)."""
        return np.unique([m["character_id"] for m in self.meta], return_index=True)[1]

    @staticmethod
    def load(root, split: str, keys=("image",), limit: int | None = None, progress: bool = True,
             per_character=()) -> "WorldArrays":
        from tqdm import tqdm

        out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        once: dict[str, list[np.ndarray]] = {k: [] for k in per_character}
        rows: dict[int, int] = {}
        meta, character_row = [], []
        for rec in tqdm(iterate_records(root, split, tuple(keys) + tuple(per_character)), desc=f"loading {split}",
                        unit="sample", disable=not progress, total=limit):
            for k in keys:
                out[k].append(rec[k])
            cid = int(rec["meta"]["character_id"])
            if cid not in rows:
                rows[cid] = len(rows)
                for k in per_character:
                    once[k].append(rec[k])
            character_row.append(rows[cid])
            meta.append(rec["meta"])
            if limit is not None and len(meta) >= limit:
                break
        if not meta:
            raise FileNotFoundError(f"No samples in {root}/{split}")
        return WorldArrays({k: np.stack(v) for k, v in out.items()}, meta, {k: np.stack(v) for k, v in once.items()},
                           np.array(character_row))


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Indices of the global batch at `step` (this rank's share), epochs of seeded permutations."""
    start = step * batch_size * world_size
    idx = []
    while len(idx) < batch_size * world_size:
        epoch, offset = divmod(start + len(idx), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        idx.extend(perm[offset:offset + batch_size * world_size - len(idx)].tolist())
    return np.array(idx[rank::world_size])


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1], contiguous.

    Contiguous on purpose: the permuted view is channels-last in memory, and torch 2.13's CPU
    convolution backward on channels-last input segfaults with two threads on small widths.
    """
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
