"""A figure's part colours, read from its own pixels, and the flat-shaded silhouette they fill:
the trivial Stage I baseline (in the template A-pose) and the StandardizePipeline's silhouette start
(in the predicted standard pose)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def _median_colour(image: np.ndarray, region: np.ndarray) -> np.ndarray | None:
    pixels = image[region]
    return np.median(pixels, 0) if len(pixels) >= 3 else None


def region_colours(reference) -> dict[str, np.ndarray]:
    """The reference's median colour of its top, bottom, shoes, skin and hair, read from its own
    pixels inside its figure mask at its keypoints (COCO-18): torso polygon, thighs, ankles, the
    face around the nose, the head above the eyes. Parts it does not show fall back to a neighbour
    (bottom -> top, shoes -> bottom, hair and skin -> top)."""
    image, h, w = reference.image, *reference.image.shape[:2]
    mask = reference.mask > 0.5 if reference.mask is not None else (image < 245).any(-1)
    kp = np.asarray(reference.keypoints, np.float32) if reference.keypoints is not None else np.zeros((18, 3), np.float32)
    seen = kp[:, 2] > 0

    def region(draw_fn) -> np.ndarray:
        canvas = Image.new("L", (w, h), 0)
        draw_fn(ImageDraw.Draw(canvas))
        return (np.asarray(canvas) > 0) & mask

    def pts(*ids):
        return [tuple(map(float, kp[i, :2])) for i in ids]

    scale = max(float(np.linalg.norm(kp[2, :2] - kp[5, :2])) if seen[2] and seen[5] else 0.0, 6.0)  # shoulder width
    out: dict[str, np.ndarray | None] = {}
    out["top"] = _median_colour(image, region(lambda d: d.polygon(pts(2, 5, 11, 8), fill=255))) \
        if seen[[2, 5, 11, 8]].all() else None
    legs = [(a, b) for a, b in ((8, 9), (11, 12)) if seen[a] and seen[b]]
    out["bottom"] = _median_colour(image, region(lambda d: [d.line(pts(a, b), fill=255, width=max(int(scale / 4), 2))
                                                            for a, b in legs])) if legs else None
    feet = [i for i in (10, 13) if seen[i]]
    r = max(scale / 8, 2.0)
    out["shoes"] = _median_colour(image, region(lambda d: [d.ellipse((kp[i, 0] - r, kp[i, 1], kp[i, 0] + r, kp[i, 1] + 2 * r),
                                                                     fill=255) for i in feet])) if feet else None
    if seen[0]:
        x, y = kp[0, :2]
        out["skin"] = _median_colour(image, region(lambda d: d.ellipse((x - r, y - r, x + r, y + r), fill=255)))
        eye = min(kp[i, 1] for i in (14, 15, 0) if seen[i])
        out["hair"] = _median_colour(image, region(lambda d: d.rectangle((x - 2 * r, eye - 4 * r, x + 2 * r, eye - r), fill=255)))
    fallback = {"top": None, "bottom": "top", "shoes": "bottom", "skin": "top", "hair": "top"}
    whole = _median_colour(image, mask)
    colours = {}
    for part in ("top", "bottom", "shoes", "skin", "hair"):
        c = out.get(part)
        colours[part] = c if c is not None else colours.get(fallback[part]) if fallback[part] else whole
        if colours[part] is None:
            colours[part] = whole if whole is not None else np.full(3, 128.0)
    return colours


def colour_silhouette(reference, keypoints, width: int, height: int, *, normalized: bool = True) -> np.ndarray:
    """A standard-pose figure as a flat-shaded silhouette on white, each part filled with the
    reference's own median colour of that part (`region_colours`): head (skin, hair on its upper
    half), torso and upper arms (top), forearms (skin), legs (bottom), feet (shoes). keypoints:
    COCO-18 (18, 2 or 3), in [0, 1] of the canvas (the config's template A-pose; the trivial Stage I
    baseline) or, with normalized=False, in canvas pixels (a predicted standard pose: where the
    StandardizePipeline's silhouette start draws it). -> (H, W, 3) uint8."""
    c = {k: tuple(int(round(x)) for x in v) for k, v in region_colours(reference).items()}
    kp = np.asarray(keypoints, np.float32)[:, :2]
    if normalized:
        kp = kp * np.array([width, height], np.float32)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    p = {i: tuple(map(float, kp[i])) for i in range(18)}
    shoulder = float(np.linalg.norm(kp[2] - kp[5]))
    limb = max(int(shoulder / 3.5), 2)
    d.polygon([p[2], p[5], p[11], p[8]], fill=c["top"])
    for a, b in ((8, 9), (9, 10), (11, 12), (12, 13)):
        d.line([p[a], p[b]], fill=c["bottom"], width=limb + 1)
    for a, b, part in ((2, 3, "top"), (5, 6, "top"), (3, 4, "skin"), (6, 7, "skin")):
        d.line([p[a], p[b]], fill=c[part], width=limb)
    for i in (10, 13):
        d.ellipse((p[i][0] - limb, p[i][1] - limb / 2, p[i][0] + limb, p[i][1] + limb), fill=c["shoes"])
    head = float(np.linalg.norm(kp[0] - kp[1])) * 0.75
    x, y = p[0]
    d.ellipse((x - head * 0.8, y - head, x + head * 0.8, y + head * 0.8), fill=c["skin"])
    d.chord((x - head * 0.85, y - head * 1.1, x + head * 0.85, y + head * 0.5), 180, 360, fill=c["hair"])
    return np.array(canvas)
