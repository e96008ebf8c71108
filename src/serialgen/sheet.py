"""Contact sheets: a page a person can look at to judge a dataset (`serialgen sheet`).

One row per character: its standard image, then for several non-standard samples the
image, the foreground mask and the pose map, each labelled with action, view and framing.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data.reader import iterate_records


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def collect(root: str | Path, characters: int, poses: int) -> list[tuple[int, str, list[dict]]]:
    """The first `poses` samples of the first `characters` characters (train first, then
    validation, at least one validation character when there is one; never the test split)."""
    rows: OrderedDict[int, tuple[str, list[dict]]] = OrderedDict()
    per_split = {"train": max(1, characters - 1), "validation": 1}
    for split in per_split:
        try:
            records = iterate_records(root, split)
            for rec in records:
                cid = rec["meta"]["character_id"]
                if cid not in rows:
                    if sum(1 for s, _ in rows.values() if s == split) >= per_split[split] or len(rows) >= characters:
                        break
                    rows[cid] = (split, [])
                if len(rows[cid][1]) < poses:
                    rows[cid][1].append(rec)
        except FileNotFoundError:
            if split == "train":
                raise
    return [(cid, split, recs) for cid, (split, recs) in rows.items()]


def render_sheet(root: str | Path, characters: int = 6, poses: int = 3, tile_height: int = 192) -> Image.Image:
    rows = collect(root, characters, poses)
    if not rows:
        raise FileNotFoundError(f"No samples under {root}")
    first = rows[0][2][0]["image"]
    tile_w = int(round(first.shape[1] * tile_height / first.shape[0]))
    label_h = max(14, tile_height // 12)
    cols = 1 + 3 * poses
    sheet = Image.new("RGB", (cols * tile_w, len(rows) * (tile_height + 2 * label_h)), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    font = _font(label_h - 3)

    def put(array: np.ndarray, col: int, row: int, label: str) -> None:
        im = Image.fromarray(array).convert("RGB").resize((tile_w, tile_height), Image.Resampling.LANCZOS)
        y = row * (tile_height + 2 * label_h) + label_h
        sheet.paste(im, (col * tile_w, y))
        draw.text((col * tile_w + 2, y + tile_height + 1), label, fill=(20, 20, 20), font=font)

    for r, (cid, split, recs) in enumerate(rows):
        y = r * (tile_height + 2 * label_h)
        draw.text((2, y + 1), f"character {cid} ({split}): {recs[0]['meta']['attributes']['age_word']}, "
                  + recs[0]["meta"]["standard_caption"].split(", wearing ")[-1].split(", standing")[0], fill=(0, 0, 0), font=font)
        put(recs[0]["standard_image"], 0, r, "standard")
        for k, rec in enumerate(recs):
            m = rec["meta"]
            put(rec["image"], 1 + 3 * k, r, f"{m['action']} / {m['view']}")
            put(rec["mask"], 2 + 3 * k, r, f"{m['framing']}")
            put(rec["pose_map"], 3 + 3 * k, r, f"{m['expression']} / {m['background']}")
    return sheet


def series_sheet(reference: Image.Image, standardized: Image.Image | None, images: list[Image.Image],
                 prompts: list[str], tile_height: int = 192, per_row: int = 4) -> Image.Image:
    """A generated series on one page: the reference and the standardized reference on the left,
    then the series `per_row` images a row, each captioned with (the start of) its prompt."""
    def tile(image: Image.Image) -> Image.Image:
        w = round(image.width * tile_height / image.height)
        return image.convert("RGB").resize((w, tile_height), Image.Resampling.LANCZOS)

    label_h, pad = 28, 6
    tiles = [tile(im) for im in images]
    w = max([t.width for t in tiles] + [1])
    left = [("reference", tile(reference))] + ([("standardized", tile(standardized))] if standardized is not None else [])
    cols = min(per_row, len(tiles))
    rows = (len(tiles) + per_row - 1) // per_row
    left_w = max(t.width for _, t in left)
    width = pad + left_w + pad + cols * (w + pad)
    height = pad + max(rows, len(left)) * (tile_height + label_h + pad)
    page = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    font = _font(11)

    def put(image: Image.Image, x: int, y: int, label: str) -> None:
        page.paste(image, (x, y))
        words, lines = label.split(), [""]
        for word in words:  # wrap to the tile width, two lines at most
            trial = f"{lines[-1]} {word}".strip()
            if draw.textlength(trial, font=font) <= image.width or not lines[-1]:
                lines[-1] = trial
            elif len(lines) < 2:
                lines.append(word)
            else:
                lines[-1] = lines[-1].rstrip(".") + "..."
                break
        for k, line in enumerate(lines):
            draw.text((x, y + tile_height + 1 + 13 * k), line, fill=(0, 0, 0), font=font)

    for k, (name, image) in enumerate(left):
        put(image, pad, pad + k * (tile_height + label_h + pad), name)
    x0 = pad + left_w + pad
    for k, (image, prompt) in enumerate(zip(tiles, prompts, strict=True)):
        r, c = divmod(k, per_row)
        put(image, x0 + c * (w + pad), pad + r * (tile_height + label_h + pad), f"{k + 1}. {prompt}")
    return page


def grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Tile equally sized uint8 images (H, W, 3) into one image."""
    return np.concatenate([np.concatenate(r, 1) for r in rows], 0)
