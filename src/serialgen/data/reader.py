"""Reading character-world shards for trainers.

`WorldDataset` streams samples with WebDataset (shard shuffling, splitting across nodes and
DataLoader workers) and yields dicts of tensors: images channels-first in [0, 1], masks
(1, H, W) in {0, 1}, keypoints (18, 3) in pixels with a visibility column, face boxes
(x0, y0, x1, y1), plus captions and the sample's metadata. With ``recomposite=True`` the
foreground is laid over a freshly drawn background of a random scene, as the paper
composites backgrounds on the fly.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..world.backgrounds import SCENES, render_background
from ..world.generator import CharacterWorld
from .shards import FOLDERS, IMAGE_KEYS
from .splits import check_test_access, folder_of, split_of, world_characters


def shard_paths(root: str | Path, folder: str) -> list[str]:
    """Sorted shard files of one shard folder (train or test, the held-out characters); a clear
    error when there are none."""
    if folder not in FOLDERS:
        raise ValueError(f"Unknown shard folder {folder!r}; folders are {', '.join(FOLDERS)}")
    paths = sorted(str(p) for p in (Path(root) / folder).glob(f"{folder}-*.tar"))
    if not paths:
        raise FileNotFoundError(f"No {folder} shards under {root}/{folder}; make them with `serialgen synth --out {root} ...`")
    return paths


def decode_record(record: dict, keys=tuple(IMAGE_KEYS)) -> dict:
    """WebDataset record (ext -> bytes) -> numpy arrays (only `keys` are decoded) and metadata."""
    out = {"__key__": record["__key__"]}
    for key in keys:
        ext = IMAGE_KEYS[key]
        if ext in record:
            out[key] = np.array(Image.open(io.BytesIO(record[ext])))  # writable: trainers may augment in place
    out["meta"] = json.loads(record["json"])
    return out


def _chw(image: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(image)).float() / 255.0
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)  # (C, H, W)


def to_tensors(sample: dict) -> dict:
    """Decoded sample -> dict of tensors (images (C, H, W) in [0, 1]) plus captions and meta."""
    meta = sample["meta"]
    out = {key: _chw(sample[key]) for key in IMAGE_KEYS if key in sample}
    for key in ("mask", "standard_mask"):
        if key in out:
            out[key] = (out[key] > 0.5).float()
    out["keypoints"] = torch.tensor(meta["keypoints"], dtype=torch.float32)
    out["face_box"] = torch.tensor(meta["face_box"], dtype=torch.float32)
    out["standard_keypoints"] = torch.tensor(meta["standard_keypoints"], dtype=torch.float32)
    out["standard_face_box"] = torch.tensor(meta["standard_face_box"], dtype=torch.float32)
    out["character_id"] = int(meta["character_id"])
    out["caption"] = meta["caption"]
    out["standard_caption"] = meta["standard_caption"]
    out["meta"] = meta
    return out


def recomposite(sample: dict, rng: np.random.Generator, scene: str | None = None) -> dict:
    """Replace a decoded sample's background by a fresh one (random scene unless given).
    The caption's background phrase is rewritten to match."""
    from ..world.generator import BACKGROUND_PHRASE

    scene = scene or str(rng.choice(SCENES))
    h, w = sample["foreground"].shape[:2]
    horizon = float(np.clip(rng.normal(0.6, 0.1), 0.2, 0.9))
    background = render_background(scene, w, h, rng, horizon)
    sample = dict(sample)
    sample["image"] = CharacterWorld.composite(sample["foreground"], background)
    meta = dict(sample["meta"])
    meta["caption"] = meta["caption"].replace(BACKGROUND_PHRASE[meta["background"]], BACKGROUND_PHRASE[scene])
    meta["background"] = scene
    sample["meta"] = meta
    return sample


def iterate_records(root: str | Path, split: str = "train", keys=tuple(IMAGE_KEYS)):
    """Decoded samples of a split (train, validation or test: `data.splits`) in shard order (no
    shuffling): for inspection, sheets and in-memory training sets. Only `keys` among the images
    are decoded. The test split only inside `reading_test_split()`."""
    import webdataset as wds

    folder = folder_of(split)
    if split == "test":
        check_test_access()
    characters = world_characters(root) if split != "train" else None
    dataset = wds.WebDataset(shard_paths(root, folder), shardshuffle=False, empty_check=False,
                             nodesplitter=wds.single_node_only)
    for record in dataset:
        if characters is not None and split_of(json.loads(record["json"])["character_id"], characters) != split:
            continue
        yield decode_record(record, keys)


class WorldDataset(torch.utils.data.IterableDataset):
    """Character-world samples as dicts of tensors, for `torch.utils.data.DataLoader`.

    shuffle: size of the sample shuffle buffer (0 = shard order, deterministic);
    recomposite: lay foregrounds over fresh random backgrounds; seed: for both.
    Use `collate` as the DataLoader's collate_fn to keep captions and metadata as lists.
    """

    def __init__(self, root: str | Path, split: str = "train", *, shuffle: int = 0, recomposite: bool = False,
                 seed: int = 0, repeat: bool = False):
        super().__init__()
        if split != "train":
            raise ValueError(f"WorldDataset streams the train split; read {split!r} with iterate_records or WorldArrays")
        self.paths = shard_paths(root, split)
        self.shuffle, self.recomposite, self.seed, self.repeat = shuffle, recomposite, seed, repeat

    def __iter__(self):
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, worker])
        dataset = wds.WebDataset(
            self.paths, shardshuffle=len(self.paths) if self.shuffle else False, detshuffle=True, seed=self.seed,
            nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker, empty_check=False,
            resampled=self.repeat,
        )
        if self.shuffle:
            dataset = dataset.shuffle(self.shuffle, rng=random.Random(self.seed * 65536 + worker))
        for record in dataset:
            sample = decode_record(record)
            if self.recomposite:
                sample = recomposite(sample, rng)
            yield to_tensors(sample)


def collate(batch: list[dict]) -> dict:
    """Stack tensors; keep strings, ints and metadata as lists."""
    out = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
