"""Atomic file writes: every output is written under a temporary name beside its final path and
renamed onto it, so a reader (or a run killed halfway) sees the old file or the new one, never
half of one. The one helper the CLI, the trainers and the report write through."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that read the format from the
    name work); on success it replaces `path`, on an error it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data, indent: int = 2) -> Path:
    """JSON; objects JSON does not know are written as str."""
    return write_text(path, json.dumps(data, indent=indent, default=str) + "\n")


def save_image(path: str | Path, image) -> Path:
    """A PIL image, or a uint8 (H, W, 3) array, in the format the path's suffix names."""
    from PIL import Image

    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    with atomic_path(path) as tmp:
        image.save(tmp)
    return Path(path)
