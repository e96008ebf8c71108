"""Stage I on held-out characters (the paper's Table 3): PSNR/SSIM against the world's true
standard renders, whole frame and figure box, the two trivial baselines (white canvas, colour
silhouette), body height, the judge's appearance read-back, and the background leak (FBDM)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..data.heldout import held_out_picks, held_out_references
from ..data.memory import WorldArrays
from ..metrics import psnr, ssim
from ..silhouette import colour_silhouette
from ..world.attributes import probe_value
from .judge import APPEARANCE, Judge, accuracy_ci, attribute_accuracy, per_character_accuracy
from .stats import bootstrap_ci


def standardize(pipe, refs: list, steps: int, guidance: float, seed: int, **options) -> list:
    """The standardized images of prepared references, quietly, 16 at a time; options: the
    pipeline's other arguments (start, strength)."""
    pipe.progress = False
    return pipe(refs, num_inference_steps=steps, guidance_scale=guidance, seed=seed, batch_size=16, **options).images


def figure_box(standard: np.ndarray, pad: int = 4, white: int = 245) -> tuple[slice, slice]:
    """The box around the figure of a standard render (every pixel not white), padded."""
    ys, xs = np.nonzero((standard < white).any(-1))
    if len(ys) == 0:
        return slice(None), slice(None)
    h, w = standard.shape[:2]
    return slice(max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)), slice(max(xs.min() - pad, 0), min(xs.max() + pad + 1, w))


def evaluate_stage1(pipe, test: WorldArrays, count: int = 64, steps: int = 20, guidance: float = 2.5,
                    seed: int = 0, bootstrap: int = 1000, judge: Judge | None = None, **options) -> dict:
    """PSNR/SSIM of `pipe` (a StandardizePipeline) on `count` held-out characters (one reference
    each), with 95% bootstrap intervals and the per-character values (for paired comparisons
    between models scored on the same characters). "images": the standardized images.

    A standard render is mostly white canvas, so whole-frame scores reward a blank canvas
    ("blank": a white image's scores, the floor any standardizer has to clear); "figure_psnr" and
    "figure_ssim" score the box around the true figure only. With a judge, "appearance" is the
    share of the reference's clothing and hair attributes read back from the standardized image,
    beside the same reading of the true standard render ("appearance_truth"). options: the
    pipeline's sampling arguments (start, strength)."""
    refs, truth = held_out_references(test, count)
    images = [np.asarray(im) for im in standardize(pipe, refs, steps, guidance, seed, **options)]
    p, q = psnr(images, truth), ssim(images, truth)
    boxes = [figure_box(t) for t in truth]

    def in_boxes(made) -> tuple[np.ndarray, np.ndarray]:
        """Per-character PSNR and SSIM of `made` against the truth inside each true figure's box."""
        return (np.array([psnr([im[b]], t[b][None])[0] for im, t, b in zip(made, truth, boxes)]),
                np.array([ssim(im[b][None], t[b][None])[0] for im, t, b in zip(made, truth, boxes)]))

    fp, fq = in_boxes(images)
    blank = np.full_like(truth, 255)
    out = {"psnr": round(float(p.mean()), 3), "ssim": round(float(q.mean()), 4), "count": len(refs),
           "steps": steps, "guidance_scale": guidance,
           "psnr_ci": bootstrap_ci(p, bootstrap, seed), "ssim_ci": bootstrap_ci(q, bootstrap, seed),
           "figure_psnr_ci": bootstrap_ci(fp, bootstrap, seed), "figure_ssim_ci": bootstrap_ci(fq, bootstrap, seed),
           "blank": {"psnr": round(float(psnr(list(blank), truth).mean()), 3),
                     "ssim": round(float(ssim(blank, truth).mean()), 4)},
           "per_character": {"psnr": [float(x) for x in p], "ssim": [float(x) for x in q],
                             "figure_psnr": [float(x) for x in fp], "figure_ssim": [float(x) for x in fq]}}
    # trivial baselines on the same boxes: the white canvas, and the template A-pose silhouette in
    # the reference's own part colours
    w, h = pipe.size
    template = pipe.standardizer.config.template_keypoints
    trivial = {"white": list(blank)}
    if len(template) == 18:
        trivial["silhouette"] = [colour_silhouette(r, template, w, h) for r in refs]
    out["baselines"] = {}
    for name, base in trivial.items():
        bp, bq = in_boxes(base)
        out["baselines"][name] = {"figure_psnr_ci": bootstrap_ci(bp, bootstrap, seed),
                                  "figure_ssim_ci": bootstrap_ci(bq, bootstrap, seed),
                                  "ssim_ci": bootstrap_ci(ssim(np.stack(base), truth), bootstrap, seed),
                                  "figure_psnr_gain_ci": bootstrap_ci(fp - bp, bootstrap, seed),
                                  "figure_ssim_gain_ci": bootstrap_ci(fq - bq, bootstrap, seed)}
    err = height_error(images, truth)
    out["height"] = {"within_5pct_ci": bootstrap_ci((err <= 0.05).astype(float), bootstrap, seed),
                     "error_ci": bootstrap_ci(err, bootstrap, seed), "per_character": [float(x) for x in err]}
    out["silhouettes"] = trivial.get("silhouette")
    if judge is not None:
        rows = test.first_of_each_character()[:count]
        metas = [test.meta[i] for i in rows]
        reads = judge.read(images)
        out["appearance"] = attribute_accuracy(reads, metas, APPEARANCE)
        out["appearance_ci"] = accuracy_ci(reads, metas, APPEARANCE, bootstrap, seed)
        out["per_character"]["appearance"] = [float(x) for x in per_character_accuracy(reads, metas, APPEARANCE)]
        truth_reads = judge.read(list(truth))
        out["appearance_truth"] = attribute_accuracy(truth_reads, metas, APPEARANCE)
        out["appearance_truth_ci"] = accuracy_ci(truth_reads, metas, APPEARANCE, bootstrap, seed)
        out["silhouette_appearance"] = attribute_accuracy(judge.read(trivial["silhouette"]), metas, APPEARANCE) \
            if "silhouette" in trivial else None
    out["images"] = images
    return out


# -- Stage I: trivial baselines, body height and background leak -------------------------------

# Saturated single-colour backdrops for the background-leak test (FBDM's reason to exist)
LEAK_BACKDROPS = {"purple": (120, 20, 170), "green": (20, 160, 40), "red": (200, 20, 20), "blue": (20, 60, 210),
                  "yellow": (235, 215, 20), "orange": (250, 130, 10)}


def figure_height(image: np.ndarray, ink: int = 40, min_pixels: int = 3, max_gap: int = 3) -> int:
    """Height in rows of the figure on a white canvas: the longest run of rows (gaps of up to
    `max_gap` rows bridged) holding at least `min_pixels` pixels that differ from white by more
    than `ink` in some channel. A sampler's near-white background noise and stray marks at the
    frame's edge are not figure; 0 for a blank image."""
    rows = np.flatnonzero(((255 - np.asarray(image).astype(np.int16)).max(-1) > ink).sum(-1) >= min_pixels)
    if len(rows) == 0:
        return 0
    runs = np.split(rows, np.flatnonzero(np.diff(rows) > max_gap + 1) + 1)
    return max(int(r[-1] - r[0] + 1) for r in runs)


def height_error(images, truth) -> np.ndarray:
    """Per image |standardized figure height / true standard figure height - 1|."""
    return np.array([abs(figure_height(im) / max(figure_height(t), 1) - 1.0) for im, t in zip(images, truth, strict=True)])


def background_leak(pipe, judge: Judge, test: WorldArrays, count: int = 64, steps: int = 20, guidance: float = 2.5,
                    seed: int = 0, fbdm: bool = True, backdrops: dict | None = None, bootstrap: int = 1000,
                    **options) -> dict:
    """Does the backdrop's colour leak into the clothes? The same held-out references (one per
    character, `test` needs its "foreground" images) composited on white and on each saturated
    backdrop, standardized, and the judge's top and bottom colour read back. `leak` = accuracy on
    white - accuracy on the coloured backdrops (mean over backdrops), per backdrop in `per_backdrop`.
    fbdm=False standardizes without the figure mask, which switches FBDM's term off (eq. 3)."""
    from ..preprocess import Reference
    from ..world.generator import CharacterWorld

    picks = held_out_picks(test, count)
    metas = [test.meta[i] for i in picks]
    h, w = test.images["image"].shape[1:3]
    attributes = ("top_color", "bottom_color")
    correct: dict[str, np.ndarray] = {}
    for name, rgb in {"white": (255, 255, 255), **(backdrops or LEAK_BACKDROPS)}.items():
        backdrop = np.empty((h, w, 3), np.uint8)
        backdrop[:] = rgb
        refs = []
        for i in picks:
            fg = test.images["foreground"][i]
            r = Reference.from_world(CharacterWorld.composite(fg, backdrop), fg, test.meta[i]["keypoints"])
            refs.append(r if fbdm else dataclasses.replace(r, mask=None))
        reads = judge.read([np.asarray(im) for im in standardize(pipe, refs, steps, guidance, seed, **options)])
        # per character: the share of its top/bottom colours read right (NaN without either)
        per = []
        for k, m in enumerate(metas):
            hits = [reads[a][k] == probe_value(m, a) for a in attributes if probe_value(m, a) is not None]
            per.append(np.mean(hits) if hits else np.nan)
        correct[name] = np.array(per)
    coloured = [k for k in correct if k != "white"]
    drop = correct["white"] - np.nanmean([correct[k] for k in coloured], 0)
    return {"fbdm": fbdm, "count": len(picks), "accuracy": {k: float(np.nanmean(v)) for k, v in correct.items()},
            "leak_ci": bootstrap_ci(drop, bootstrap, seed),
            "per_backdrop": {k: float(np.nanmean(correct["white"] - correct[k])) for k in coloured}}
