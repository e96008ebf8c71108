"""Per-character texture atlas: garment colours and patterns, hair, and one face per expression.

Tiles follow `geometry.MATERIALS` / `geometry.HEAD_TILE`. Tile arrays are stored with row
index = v (texture coordinate origin at the bottom), so they upload to GL unflipped; the
drawing helpers work in ordinary image coordinates and flip once at the end.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .character import COLORS, EXPRESSIONS, HAIR_COLORS, Character, Garment
from .geometry import ATLAS_COLS, HEAD_TILE, MATERIALS

TILE = 256
# On the head's (u, v) chart one texel is wider than tall by about this factor
# (circumference 2*pi*0.82r over height pi*r); face features are drawn narrower to match.
HEAD_ASPECT = 2 * 0.82


def _rgb(color) -> np.ndarray:
    return np.array(COLORS[color] if isinstance(color, str) else color, dtype=np.float32)


def pattern_tile(g: Garment, rng: np.random.Generator, *, front_band: tuple[int, int, int] | None = None,
                 logo: bool = False) -> np.ndarray:
    """A garment tile (TILE, TILE, 3) uint8 in (u, v) chart coordinates, v up."""
    v, u = np.mgrid[0:TILE, 0:TILE] / TILE
    base, accent = _rgb(g.color), _rgb(g.accent)
    if g.pattern == "striped":
        mask = np.sin(2 * np.pi * v * 7) > 0.25
    elif g.pattern == "checked":
        mask = ((np.floor(u * 16) + np.floor(v * 6)) % 2) == 1
    elif g.pattern == "dotted":
        du, dv = (u * 20) % 1 - 0.5, (v * 8) % 1 - 0.5
        mask = (du * du * 0.4 + dv * dv) < 0.07
    else:
        mask = np.zeros_like(u, dtype=bool)
    img = np.where(mask[..., None], accent, base)
    img *= 1.0 + rng.normal(0, 0.015, (TILE, TILE, 1))  # fabric grain
    if front_band is not None:  # open jacket: inner shirt down the front, zip line
        band = np.abs(u - 0.5) < 0.045
        img[band] = front_band
        img[np.abs(np.abs(u - 0.5) - 0.045) < 0.006] = base * 0.6
    img = np.clip(img, 0, 255).astype(np.uint8)
    if logo:
        img = _draw_logo(img, accent, int(rng.integers(4)))
    return img


def _draw_logo(tile: np.ndarray, color: np.ndarray, shape: int) -> np.ndarray:
    """A symmetric emblem on the chest front (u = 0.5, upper part of the chest part)."""
    im = Image.fromarray(np.flipud(tile))
    d = ImageDraw.Draw(im)
    cx, cy, r = TILE // 2, int(TILE * 0.42), int(TILE * 0.07)
    fill = tuple(int(x) for x in color)
    if shape == 0:
        d.ellipse([cx - r, cy - r * 2, cx + r, cy + r * 2], fill=fill)
    elif shape == 1:
        ang = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]
        rad = np.where(np.arange(10) % 2 == 0, r * 1.4, r * 0.6)
        d.polygon([(cx + rr * np.cos(a), cy + 2 * rr * np.sin(a)) for a, rr in zip(ang, rad)], fill=fill)
    elif shape == 2:
        d.polygon([(cx, cy - 2 * r), (cx + r, cy + 2 * r), (cx - r, cy + 2 * r)], fill=fill)
    else:
        d.polygon([(cx, cy - 2 * r), (cx + r, cy), (cx, cy + 2 * r), (cx - r, cy)], fill=fill)
    return np.flipud(np.asarray(im)).copy()


def _flat(color, rng: np.random.Generator, noise: float = 0.02) -> np.ndarray:
    img = _rgb(color)[None, None] * (1.0 + rng.normal(0, noise, (TILE, TILE, 1)))
    return np.clip(img, 0, 255).astype(np.uint8)


def hair_tile(color, rng: np.random.Generator) -> np.ndarray:
    """Hair: base colour with strands running along v."""
    base = _rgb(color)
    strands = rng.normal(0, 0.09, (1, TILE, 1)) + rng.normal(0, 0.03, (TILE, TILE, 1))
    return np.clip(base * (1.0 + strands), 0, 255).astype(np.uint8)


def _hairline(u: np.ndarray) -> np.ndarray:
    front = np.cos(2 * np.pi * (u - 0.5))
    return np.interp(front, [-1, -0.2, 0.4, 1], [0.24, 0.47, 0.6, 0.72])


def face_tile(c: Character, expression: str, rng: np.random.Generator) -> np.ndarray:
    """Head tile for one expression: skin, painted scalp, eyes, brows, mouth (and glasses)."""
    v, u = np.mgrid[0:TILE, 0:TILE] / TILE
    skin = np.array(c.skin, np.float32)
    img = skin[None, None] * (1.0 + rng.normal(0, 0.01, (TILE, TILE, 1)))
    hair = np.array(HAIR_COLORS[c.hair_color], np.float32) * (1.0 + rng.normal(0, 0.06, (TILE, TILE, 1)))
    scalp = v > _hairline(u)
    img = np.where(scalp[..., None], hair * (0.85 if c.hair_style == "buzz cut" else 1.0), img)
    im = Image.fromarray(np.flipud(np.clip(img, 0, 255).astype(np.uint8)))
    d = ImageDraw.Draw(im)
    sx = 1.0 / HEAD_ASPECT  # horizontal squeeze of features on the chart

    def x(du: float) -> float:  # u offset from the face centre -> pixel column
        return TILE * (0.5 + du)

    def y(vv: float) -> float:  # chart v -> pixel row (image coordinates, v up)
        return TILE * (1.0 - vv)

    brow_color = tuple(int(k * 0.7) for k in HAIR_COLORS[c.hair_color])
    lip = tuple(int(k) for k in (np.array(c.skin) * np.array([0.85, 0.55, 0.55])))
    eye_w, eye_h = 0.055 * sx * TILE, 0.035 * TILE
    iris = 0.022 * TILE
    eye_y = y(0.5)
    open_factor = {"neutral": 1.0, "smiling": 0.7, "surprised": 1.45, "angry": 0.7, "sad": 0.85, "eyes closed": 0.0}[expression]
    for side in (-1, 1):
        ex = x(side * 0.07)
        if open_factor > 0:
            h = eye_h * open_factor
            d.ellipse([ex - eye_w, eye_y - h, ex + eye_w, eye_y + h], fill=(250, 250, 250), outline=(40, 30, 30), width=2)
            ir = min(iris, h * 0.95)
            d.ellipse([ex - ir * sx * 1.3, eye_y - ir, ex + ir * sx * 1.3, eye_y + ir], fill=tuple(c.eye_color))
            pr = ir * 0.45
            d.ellipse([ex - pr * sx * 1.3, eye_y - pr, ex + pr * sx * 1.3, eye_y + pr], fill=(10, 10, 10))
        else:
            d.arc([ex - eye_w, eye_y - eye_h * 0.8, ex + eye_w, eye_y + eye_h * 0.8], 10, 170, fill=(40, 30, 30), width=3)
        # brows: inner end height and outer end height per expression
        inner, outer = {"neutral": (0.61, 0.61), "smiling": (0.62, 0.62), "surprised": (0.67, 0.66),
                        "angry": (0.57, 0.63), "sad": (0.64, 0.59), "eyes closed": (0.6, 0.6)}[expression]
        d.line([(x(side * 0.03), y(inner)), (x(side * 0.115), y(outer))], fill=brow_color, width=5)
    mouth_y, mw = y(0.29), 0.06 * sx * TILE
    mx = x(0.0)
    if expression == "smiling":
        d.chord([mx - mw * 1.2, mouth_y - 14, mx + mw * 1.2, mouth_y + 10], 0, 180, fill=(120, 30, 40))
        d.chord([mx - mw * 1.0, mouth_y - 10, mx + mw * 1.0, mouth_y + 2], 0, 180, fill=(245, 245, 245))
    elif expression == "surprised":
        d.ellipse([mx - mw * 0.5, mouth_y - 12, mx + mw * 0.5, mouth_y + 12], fill=(110, 25, 35))
    elif expression == "sad":
        d.arc([mx - mw, mouth_y - 2, mx + mw, mouth_y + 22], 200, 340, fill=lip, width=5)
    elif expression == "angry":
        d.line([(mx - mw, mouth_y + 3), (mx + mw, mouth_y + 3)], fill=lip, width=5)
        d.arc([mx - mw, mouth_y, mx + mw, mouth_y + 16], 210, 330, fill=lip, width=4)
    else:
        d.arc([mx - mw * 0.8, mouth_y - 10, mx + mw * 0.8, mouth_y + 4], 20, 160, fill=lip, width=5)
    if "glasses" in c.accessories:
        frame = (25, 25, 30)
        for side in (-1, 1):
            ex = x(side * 0.072)
            d.rounded_rectangle([ex - eye_w * 1.45, eye_y - 17, ex + eye_w * 1.45, eye_y + 15], radius=6, outline=frame, width=4)
        d.line([(x(-0.072) + eye_w * 1.45, eye_y - 4), (x(0.072) - eye_w * 1.45, eye_y - 4)], fill=frame, width=4)
        for side in (-1, 1):  # temples run back toward the ears
            d.line([(x(side * 0.072 + side * eye_w * 1.45 / TILE), eye_y - 6), (x(side * 0.25), eye_y - 4)], fill=frame, width=4)
    return np.flipud(np.asarray(im)).copy()


def build_atlas(c: Character, seed: int) -> np.ndarray:
    """The whole atlas (2 * TILE, ATLAS_COLS * TILE, 3) uint8 for a character."""
    rng = np.random.default_rng([seed, c.character_id, 0x7E47])
    atlas = np.zeros((2 * TILE, ATLAS_COLS * TILE, 3), np.uint8)

    def put(tile_index: int, tile: np.ndarray) -> None:
        col, row = tile_index % ATLAS_COLS, tile_index // ATLAS_COLS
        atlas[row * TILE:(row + 1) * TILE, col * TILE:(col + 1) * TILE] = tile

    top = c.dress or c.top
    band = _rgb(top.accent if top.accent != top.color else "white").astype(np.uint8) if top.kind == "jacket" else None
    put(MATERIALS["skin"], _flat(c.skin, rng, 0.01))
    put(MATERIALS["sleeve"], pattern_tile(top, rng))
    put(MATERIALS["torso"], pattern_tile(top, rng, front_band=band))
    put(MATERIALS["chest"], pattern_tile(top, rng, front_band=band, logo=top.pattern == "logo"))
    put(MATERIALS["bottom"], pattern_tile(c.bottom or c.dress, rng))
    shoes = _flat(c.shoes.color, rng)
    shoes[int(TILE * 0.8):, ::7] = 235  # laces over the instep
    put(MATERIALS["shoes"], shoes)
    put(MATERIALS["sole"], _flat("white" if c.shoes.color != "white" else "grey", rng))
    put(MATERIALS["hair"], hair_tile(HAIR_COLORS[c.hair_color], rng))
    put(MATERIALS["accessory"], _flat(c.accessory_color, rng))
    for k, expression in enumerate(EXPRESSIONS):
        put(HEAD_TILE + k, face_tile(c, expression, rng))
    return atlas
