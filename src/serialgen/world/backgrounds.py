"""Procedural background scenes, named in captions (docs/ARCHITECTURE.md, "The world").

Each scene is drawn from a seed at any size, with its horizon where the camera's pitch puts
it, so trainers can re-composite a foreground onto a fresh background on the fly (as the
paper composites 9,186 backgrounds) with `render_background`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SCENES = ("beach", "forest", "city street", "room", "snow", "night sky", "desert", "park", "mountains", "underwater")


def _gradient(w: int, h: int, top, bottom) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    return (np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t).repeat(w, 1)  # (h, w, 3)


def _jitter(rng: np.random.Generator, rgb, amount: int = 18) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def render_background(scene: str, width: int, height: int, rng: np.random.Generator, horizon: float = 0.6) -> np.ndarray:
    """Draw `scene` -> (height, width, 3) uint8. `horizon` is the horizon's row as a fraction
    of the height (higher when the camera looks down)."""
    if scene not in _SCENES:
        raise ValueError(f"Unknown scene {scene!r}; scenes are {', '.join(SCENES)}")
    hy = int(np.clip(horizon, 0.05, 0.95) * height)
    img = _SCENES[scene](width, height, hy, rng)
    return np.asarray(img.convert("RGB"), np.uint8)


def _sky_ground(w, h, hy, sky_top, sky_bottom, ground_top, ground_bottom) -> np.ndarray:
    out = np.empty((h, w, 3), np.float32)
    out[:hy] = _gradient(w, hy, sky_top, sky_bottom)
    out[hy:] = _gradient(w, h - hy, ground_top, ground_bottom)
    return out


def _to_image(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _beach(w, h, hy, rng):
    sea_y = hy
    sand_y = hy + int((h - hy) * rng.uniform(0.25, 0.45))
    a = _sky_ground(w, h, hy, _jitter(rng, (110, 170, 235)), (200, 225, 245), (40, 120, 170), (70, 160, 190))
    a[sand_y:] = _gradient(w, h - sand_y, _jitter(rng, (235, 215, 165)), (215, 190, 140))
    im = _to_image(a)
    d = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 7)):  # wave crests
        y = int(rng.uniform(sea_y, max(sea_y + 1, sand_y - 1)))
        x = int(rng.uniform(0, w))
        d.line([(x - w // 6, y), (x + w // 6, y)], fill=(225, 240, 245), width=max(1, h // 200))
    d.line([(0, sand_y), (w, sand_y)], fill=(245, 245, 235), width=max(2, h // 120))
    sx, sy, sr = rng.uniform(0.1, 0.9) * w, rng.uniform(0.05, 0.2) * h, 0.05 * w
    d.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=(255, 240, 170))
    if rng.random() < 0.7:  # a palm
        px = int(rng.choice([rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0)]) * w)
        top = int(hy - 0.25 * h)
        d.line([(px, sand_y + h // 20), (px + w // 30, top)], fill=(120, 85, 50), width=max(3, w // 40))
        for ang in np.linspace(0.2, np.pi - 0.2, 5):
            d.line([(px + w // 30, top), (px + w // 30 + np.cos(ang) * w * 0.15, top + np.sin(ang) * h * 0.05 - h * 0.02)],
                   fill=(40, 130, 60), width=max(3, w // 50))
    return im


def _forest(w, h, hy, rng):
    a = _sky_ground(w, h, hy, _jitter(rng, (150, 195, 230)), (210, 230, 230), _jitter(rng, (70, 120, 55)), (45, 90, 40))
    im = _to_image(a)
    d = ImageDraw.Draw(im)
    for layer, shade in ((0, 0.65), (1, 1.0)):
        for _ in range(rng.integers(6, 11)):
            x = rng.uniform(-0.1, 1.1) * w
            base = hy + (layer * 0.08 + rng.uniform(0, 0.06)) * h
            th = rng.uniform(0.25, 0.45) * h * (0.7 + 0.3 * layer)
            tw = th * rng.uniform(0.3, 0.45)
            green = tuple(int(c * shade) for c in _jitter(rng, (40, 110, 50), 20))
            d.rectangle([x - tw * 0.08, base - th * 0.3, x + tw * 0.08, base], fill=(90, 60, 35))
            d.polygon([(x, base - th), (x - tw / 2, base - th * 0.25), (x + tw / 2, base - th * 0.25)], fill=green)
    return im


def _city(w, h, hy, rng):
    a = _sky_ground(w, h, hy, _jitter(rng, (150, 180, 215)), (215, 220, 225), (95, 95, 100), (70, 70, 75))
    im = _to_image(a)
    d = ImageDraw.Draw(im)
    x = -rng.uniform(0, 0.2) * w
    while x < w:
        bw = rng.uniform(0.18, 0.35) * w
        bh = rng.uniform(0.25, 0.6) * h
        color = _jitter(rng, (150, 135, 125), 40)
        d.rectangle([x, hy - bh, x + bw, hy], fill=color)
        win = tuple(int(c * 0.55) for c in color) if rng.random() < 0.6 else (230, 220, 150)
        for wy in np.arange(hy - bh + 0.04 * h, hy - 0.04 * h, 0.07 * h):
            for wx in np.arange(x + 0.04 * w, x + bw - 0.06 * w, 0.08 * w):
                d.rectangle([wx, wy, wx + 0.035 * w, wy + 0.035 * h], fill=win)
        x += bw + rng.uniform(0.0, 0.05) * w
    d.rectangle([0, hy, w, hy + 0.04 * h], fill=(170, 170, 165))  # pavement edge
    for k in range(6):  # lane markings
        lx = (k / 6 + rng.uniform(0, 0.1)) * w
        d.rectangle([lx, hy + 0.5 * (h - hy), lx + 0.08 * w, hy + 0.5 * (h - hy) + max(2, h // 100)], fill=(235, 235, 230))
    return im


def _room(w, h, hy, rng):
    wall = _jitter(rng, (220, 205, 180), 30)
    a = _sky_ground(w, h, hy, wall, tuple(int(c * 0.9) for c in wall), _jitter(rng, (150, 105, 70), 20), (120, 80, 55))
    im = _to_image(a)
    d = ImageDraw.Draw(im)
    for k in range(0, w, max(8, w // 10)):  # floor boards
        d.line([(k, hy), (k - (k - w / 2) * 0.6, h)], fill=(110, 75, 50), width=1)
    fx = rng.uniform(0.05, 0.55) * w  # window or picture frame
    fw, fh = rng.uniform(0.2, 0.35) * w, rng.uniform(0.12, 0.22) * h
    fy = hy - rng.uniform(0.3, 0.45) * h
    d.rectangle([fx, fy, fx + fw, fy + fh], fill=(170, 205, 235) if rng.random() < 0.5 else _jitter(rng, (120, 90, 140), 60),
                outline=(90, 70, 50), width=max(2, w // 80))
    sx = rng.uniform(0.5, 0.85) * w  # a shelf or sofa
    d.rectangle([sx, hy - 0.12 * h, sx + 0.3 * w, hy + 0.02 * h], fill=_jitter(rng, (90, 110, 150), 50))
    d.rectangle([0, hy - 0.015 * h, w, hy], fill=(245, 245, 240))  # skirting board
    return im


def _snow(w, h, hy, rng):
    a = _sky_ground(w, h, hy, _jitter(rng, (185, 200, 220)), (225, 230, 238), (240, 243, 248), (220, 226, 236))
    im = _to_image(a)
    d = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 6)):  # snowy firs
        x, th = rng.uniform(0, 1) * w, rng.uniform(0.15, 0.3) * h
        base = hy + rng.uniform(0, 0.05) * h
        d.polygon([(x, base - th), (x - th * 0.3, base), (x + th * 0.3, base)], fill=(50, 90, 70))
        d.polygon([(x, base - th), (x - th * 0.12, base - th * 0.6), (x + th * 0.12, base - th * 0.6)], fill=(245, 248, 252))
    for _ in range(int(w * h / 600)):  # falling snow
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.6, 1.8) * max(1, w / 256)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
    return im


def _night(w, h, hy, rng):
    a = _sky_ground(w, h, hy, (8, 10, 35), _jitter(rng, (35, 40, 90), 10), (25, 35, 30), (15, 20, 18))
    im = _to_image(a)
    d = ImageDraw.Draw(im)
    for _ in range(int(w * hy / 250)):
        x, y = rng.uniform(0, w), rng.uniform(0, hy)
        b = int(rng.uniform(150, 255))
        r = rng.uniform(0.3, 1.2)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(b, b, int(b * 0.9)))
    mx, my, mr = rng.uniform(0.1, 0.9) * w, rng.uniform(0.06, 0.25) * h, 0.06 * w
    d.ellipse([mx - mr, my - mr, mx + mr, my + mr], fill=(240, 235, 200))
    return im


def _desert(w, h, hy, rng):
    a = _sky_ground(w, h, hy, _jitter(rng, (120, 175, 230)), (240, 220, 190), _jitter(rng, (225, 180, 120)), (200, 150, 95))
    im = _to_image(a)
    d = ImageDraw.Draw(im)
    for _ in range(3):  # dunes
        cx, rw = rng.uniform(0, 1) * w, rng.uniform(0.4, 0.8) * w
        d.ellipse([cx - rw, hy - 0.06 * h, cx + rw, hy + 0.12 * h], fill=_jitter(rng, (215, 170, 110), 15))
    if rng.random() < 0.6:  # cactus
        x = rng.uniform(0.05, 0.95) * w
        base, ch = hy + 0.1 * h, rng.uniform(0.12, 0.2) * h
        d.rounded_rectangle([x - 0.02 * w, base - ch, x + 0.02 * w, base], radius=int(0.02 * w), fill=(60, 130, 70))
        d.rounded_rectangle([x + 0.02 * w, base - ch * 0.6, x + 0.06 * w, base - ch * 0.5], radius=2, fill=(60, 130, 70))
    return im


def _park(w, h, hy, rng):
    a = _sky_ground(w, h, hy, _jitter(rng, (125, 185, 240)), (200, 225, 245), _jitter(rng, (110, 175, 80)), (80, 150, 60))
    im = _to_image(a)
    d = ImageDraw.Draw(im)
    for _ in range(rng.integers(2, 5)):  # round trees
        x, r = rng.uniform(0, 1) * w, rng.uniform(0.07, 0.14) * w
        base = hy + rng.uniform(0, 0.04) * h
        d.rectangle([x - r * 0.15, base - r * 2.2, x + r * 0.15, base], fill=(100, 70, 45))
        d.ellipse([x - r, base - r * 3.2, x + r, base - r * 1.4], fill=_jitter(rng, (60, 140, 60), 20))
    py = hy + 0.45 * (h - hy)  # a path
    d.polygon([(w * 0.3, h), (w * 0.7, h), (w * 0.55, hy), (w * 0.45, hy)], fill=(200, 185, 150))
    for _ in range(12):  # flowers
        x, y, r = rng.uniform(0, w), rng.uniform(py, h), max(1.5, w / 150)
        d.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, (240, 200, 60), 60))
    return im


def _mountains(w, h, hy, rng):
    a = _sky_ground(w, h, hy, _jitter(rng, (100, 150, 220)), (210, 225, 240), _jitter(rng, (100, 140, 80)), (70, 110, 60))
    im = _to_image(a)
    d = ImageDraw.Draw(im)
    for layer, color in ((0, (120, 130, 160)), (1, (90, 100, 125))):
        x = -0.2 * w
        while x < w * 1.2:
            mw, mh = rng.uniform(0.3, 0.6) * w, rng.uniform(0.15, 0.35) * h * (1.2 - 0.3 * layer)
            peak = (x + mw / 2, hy - mh)
            d.polygon([(x, hy + 1), peak, (x + mw, hy + 1)], fill=_jitter(rng, color, 12))
            d.polygon([peak, (peak[0] - mw * 0.1, peak[1] + mh * 0.22), (peak[0] + mw * 0.1, peak[1] + mh * 0.22)], fill=(245, 245, 250))
            x += mw * rng.uniform(0.5, 0.8)
    return im


def _underwater(w, h, hy, rng):
    a = _gradient(w, h, _jitter(rng, (40, 150, 190)), (10, 50, 90))
    a[hy + int(0.2 * (h - hy)):] = _gradient(w, h - hy - int(0.2 * (h - hy)), (190, 175, 130), (150, 135, 100))
    im = _to_image(a)
    d = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 7)):  # kelp
        x = rng.uniform(0, w)
        pts = [(x + np.sin(k * 0.8) * w * 0.02, h - k * h * 0.06) for k in range(int(rng.integers(5, 12)))]
        d.line(pts, fill=(40, 120, 60), width=max(3, w // 50))
    for _ in range(int(rng.integers(8, 20))):  # bubbles
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1, 3) * max(1, w / 256)
        d.ellipse([x - r, y - r, x + r, y + r], outline=(210, 235, 250), width=1)
    for _ in range(int(rng.integers(2, 5))):  # fish
        x, y, s = rng.uniform(0, w), rng.uniform(0.1, 0.6) * h, rng.uniform(0.02, 0.04) * w
        c = _jitter(rng, (240, 150, 50), 60)
        d.ellipse([x - s, y - s * 0.5, x + s, y + s * 0.5], fill=c)
        d.polygon([(x + s, y), (x + 1.6 * s, y - 0.5 * s), (x + 1.6 * s, y + 0.5 * s)], fill=c)
    return im.filter(ImageFilter.GaussianBlur(0.6))


_SCENES = {
    "beach": _beach, "forest": _forest, "city street": _city, "room": _room, "snow": _snow,
    "night sky": _night, "desert": _desert, "park": _park, "mountains": _mountains, "underwater": _underwater,
}
assert tuple(_SCENES) == SCENES
