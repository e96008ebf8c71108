"""The paper's protocol (§4.2, Table 2) through a `SerialGenPipeline`: CLIP-T, CLIP-I on
background-removed images, AP-CLIP-I, face similarity, the judge's attribute accuracies; and the
held-out loss gap of an image adapter (`adapter_loss_gap`, through the Stage II `Personalizer`)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..atomic import atomic_path
from ..data.memory import WorldArrays, to_float
from ..metrics import psnr, ssim
from ..world.attributes import probe_value
from .judge import APPEARANCE, TEXT_CONTROL, Judge, chance
from .stats import bootstrap_ci

CATEGORIES = ("action", "background", "view", "expression")  # the paper's four kinds of prompt


@dataclass(frozen=True)
class Protocol:
    """The paper's protocol (§4.2) on held-out characters of the world: each character's first
    sample is its reference; `prompts` scene prompts (action, background, viewpoint and
    expression prompts in turn), `seeds` images per prompt; 95% bootstrap intervals over
    characters."""

    characters: int = 8
    prompts: int = 20
    seeds: int = 4
    steps: int = 20
    guidance: float = 5.0
    seed: int = 0
    bootstrap: int = 1000
    batch_size: int = 8


def protocol_scenes(count: int = 20, seed: int = 0) -> list[dict]:
    """`count` scenes in the world's words. Scene i is of category CATEGORIES[i % 4], whose
    attribute steps through distinct values; the other attributes are drawn at random.
    -> dicts: category, action, view, expression, background, framing, prompt."""
    from ..world.backgrounds import SCENES
    from ..world.character import EXPRESSIONS
    from ..world.generator import VIEWS, scene_phrase
    from ..world.poses import ACTIONS

    rng = np.random.default_rng([seed, 0x5CE7E])
    values = {"action": [a.name for a in ACTIONS], "background": list(SCENES), "view": list(VIEWS),
              "expression": list(EXPRESSIONS)}
    order = {k: [str(x) for x in rng.permutation(v)] for k, v in values.items()}
    scenes = []
    for i in range(count):
        category = CATEGORIES[i % len(CATEGORIES)]
        scene = {k: str(rng.choice(v)) for k, v in values.items()}
        scene[category] = order[category][(i // len(CATEGORIES)) % len(order[category])]
        scene |= {"framing": "full body", "category": category}
        scene["prompt"] = scene_phrase("a character", scene["action"], scene["view"], scene["expression"],
                                       scene["background"], scene["framing"])
        scenes.append(scene)
    return scenes


def on_white(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Background removal for CLIP-I: the masked person on white. mask (H, W) in [0, 1]."""
    m = np.asarray(mask, np.float32)[..., None]
    return (image.astype(np.float32) * m + 255.0 * (1 - m)).round().astype(np.uint8)


def layout_diversity(figures: np.ndarray) -> float:
    """How much the layout of one prompt's images changes with the seed: figures (seeds, prompts, H,
    W) bool person masks -> the mean over prompts of the mean over seed pairs of 1 - IoU of the two
    masks (0: every seed puts the figure in the same place and shape; NaN with one seed). Two
    empty masks count as the same layout."""
    if len(figures) < 2:
        return float("nan")
    distances = []
    for a in range(len(figures)):
        for b in range(a + 1, len(figures)):
            inter = (figures[a] & figures[b]).sum(axis=(-2, -1))
            union = (figures[a] | figures[b]).sum(axis=(-2, -1))
            distances.append(np.where(union > 0, 1 - inter / np.maximum(union, 1), 0.0))
    return float(np.mean(distances))


def _per_character(records: list[dict], key, characters: int) -> np.ndarray:
    """Mean over each character's images of key(record) (None skipped; NaN where none)."""
    out = np.full(characters, np.nan)
    for c in range(characters):
        vals = [key(r) for r in records if r["character"] == c]
        vals = [float(x) for x in vals if x is not None]
        if vals:
            out[c] = np.mean(vals)
    return out


def _save_character(path: Path, part: dict) -> None:
    """One character's scores (`_score_character`) as a compressed npz, atomically."""
    ref, std, images, _ = part["sheet"]
    arrays = {"reference": ref, "images": np.stack(images)} | ({} if std is None else {"standardized": np.asarray(std)})
    numbers = {k: v for k, v in part.items() if k != "sheet"}
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, numbers=np.asarray(json.dumps(numbers)), **arrays)


def _load_character(path: Path, prompts: list[str]) -> dict:
    with np.load(path) as f:
        part = json.loads(str(f["numbers"]))
        std = Image.fromarray(f["standardized"]) if "standardized" in f else None
        part["sheet"] = (f["reference"], std, list(f["images"]), prompts)
    return part


def _score_character(serial, judge: Judge, test: WorldArrays, first: int, c: int, protocol: Protocol, scenes: list[dict],
                     text, standardize: bool, face, detector, bar, oracle: bool = False) -> dict:
    """One character through the protocol: its image records, AP-CLIP-I, layout diversity, seconds,
    Stage I fidelity (PSNR, SSIM; None without Stage I) and its sheet (reference, standardized,
    seed 0's images, prompts). oracle: the adapter reads the true standard render."""
    from ..preprocess import Reference

    prompts = [s["prompt"] for s in scenes]
    attributes = TEXT_CONTROL + APPEARANCE
    image, foreground = test.images["image"][first], test.images["foreground"][first]
    ref = Reference.from_world(image, foreground, test.meta[first]["keypoints"])
    ref_feature = judge.image_features([on_white(image, foreground[..., 3] / 255.0)])[0]
    ref_face = face(image) if face is not None else None
    standardized = test.characters["standard_image"][test.character_row[first]] if oracle else None
    fidelity, masked_features, first_images, figures, took = None, [], None, [], 0.0
    records = []
    for k in range(protocol.seeds):
        started = time.perf_counter()
        out = serial(ref, prompts, standardized=standardized, standardize=standardize,
                     num_inference_steps=protocol.steps, guidance_scale=protocol.guidance,
                     seed=protocol.seed * 1000 + k, batch_size=protocol.batch_size, use_pose=True)
        took += time.perf_counter() - started
        if standardize and standardized is None and out.standardized is not None:
            standardized = out.standardized  # Stage I once per character (a method without it: none)
            truth = test.characters["standard_image"][test.character_row[first]]
            made = np.asarray(standardized)[None]
            fidelity = (float(psnr(made, truth[None])[0]), float(ssim(made, truth[None])[0]))
        images = [np.asarray(im) for im in out.images]
        first_images = first_images or images
        masks = [detector.segment(im) for im in images]
        figures.append(np.stack(masks) > 0.5)  # (prompts, H, W)
        full = judge.image_features(images)
        masked = judge.image_features([on_white(im, m) if m.mean() > 0.01 else im for im, m in zip(images, masks)])
        masked_features.append(masked)
        truths = [{"attributes": test.meta[first]["attributes"], **scene} for scene in scenes]
        reads = judge.read(images)
        for i, (scene, meta) in enumerate(zip(scenes, truths, strict=True)):
            emb = face(images[i]) if face is not None and ref_face is not None else None
            records.append({
                "character": c, "prompt": i, "seed": k, "category": scene["category"],
                "clip_t": float(100 * full[i] @ text[i]), "clip_i": float(100 * masked[i] @ ref_feature),
                "face_sim": None if emb is None else float(emb @ ref_face),
                "mask_found": bool(masks[i].mean() > 0.01),
                "correct": {a: (None if probe_value(meta, a) is None else bool(reads[a][i] == probe_value(meta, a)))
                            for a in attributes}})
        bar.update()
    f = torch.cat(masked_features)
    sim = (f @ f.T).numpy()
    return {"sample": int(first), "records": records, "fidelity": fidelity, "seconds": took,
            "ap_clip_i": float(100 * sim[np.triu_indices(len(f), 1)].mean()) if len(f) > 1 else float("nan"),
            "layout_diversity": layout_diversity(np.stack(figures)),
            "sheet": (image, standardized, first_images, prompts)}


@torch.no_grad()
def evaluate_series(serial, judge: Judge, test: WorldArrays, protocol: Protocol = Protocol(),
                    standardize: bool = True, face=None, detector=None, progress: bool = True,
                    resume: str | Path | None = None, oracle: bool = False) -> dict:
    """Run the protocol through `serial` (a SerialGenPipeline; standardize=False for one-stage
    adapters) and grade it with the judge.

    Per image: CLIP-T (judge image vs prompt), CLIP-I (background-removed image vs background-
    removed reference: the world's mask for the reference, MediaPipe's person segmentation for
    the image), face similarity (`face`, an embedder from `serialgen.face`; None skips it) and the
    judge's attribute readings: the prompt's action, view, background and expression (text
    control) and the reference's clothes and hair (appearance). Per character: AP-CLIP-I, the
    mean pairwise CLIP-I among all its images, and with Stage I the PSNR/SSIM of its
    standardized reference against the world's true standard render; the layout diversity
    (`layout_diversity` of the images' person masks across seeds) and the seconds `serial` took
    (all its seeds, Stage I included). Every score is a mean
    over characters with a 95% bootstrap interval. Each character is standardized once and its
    reference encoded once per seed.

    resume: a folder where each character's scores are kept as soon as they are measured
    (NNNN.npz); a character found there is read back rather than scored again. The caller names
    the folder after everything the scores depend on (the models, the code, the data and the
    protocol but its `characters`, which only says how many are scored), so an interrupted run
    goes on where it stopped and a run over more characters scores only the new ones.

    oracle: the adapter reads each character's true standard render (`test.characters`), i.e.
    SerialGen with a perfect Stage I (an adapter trained with the `standard` pairing)."""
    from ..preprocess import PersonDetector

    detector = detector or PersonDetector()
    scenes = protocol_scenes(protocol.prompts, protocol.seed)
    prompts = [s["prompt"] for s in scenes]
    text = judge.text_features(prompts)
    rows = test.first_of_each_character()[:protocol.characters]
    folder = Path(resume) if resume is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    records, ap, fidelity, sheets, diversity, seconds = [], [], [], [], [], []
    bar = tqdm(total=len(rows) * protocol.seeds, desc="protocol", disable=not progress, leave=False)
    for c, first in enumerate(rows):
        path = folder / f"{c:04d}.npz" if folder is not None else None
        part = _load_character(path, prompts) if path is not None and path.exists() else None
        if part is not None and part["sample"] == int(first):
            bar.update(protocol.seeds)
        else:
            part = _score_character(serial, judge, test, first, c, protocol, scenes, text, standardize, face, detector,
                                    bar, oracle)
            if path is not None:
                _save_character(path, part)
        records += part["records"]
        ap.append(part["ap_clip_i"])
        diversity.append(part["layout_diversity"])
        seconds.append(part["seconds"])
        sheets.append(part["sheet"])
        if part["fidelity"] is not None:
            fidelity.append(tuple(part["fidelity"]))
    bar.close()

    n = len(rows)

    def ci(values):
        return bootstrap_ci(values, protocol.bootstrap, protocol.seed)

    def accuracy(subset, attrs):
        table = {a: ci(_per_character(subset, lambda r, a=a: r["correct"][a], n)) for a in attrs}
        table["mean"] = ci(np.nanmean([_per_character(subset, lambda r, a=a: r["correct"][a], n) for a in attrs], 0))
        return table

    per_character = {
        "clip_t": _per_character(records, lambda r: r["clip_t"], n),
        "clip_i": _per_character(records, lambda r: r["clip_i"], n),
        "ap_clip_i": np.asarray(ap),
        "face_sim": _per_character(records, lambda r: r["face_sim"], n),
        "text_control": np.nanmean([_per_character(records, lambda r, a=a: r["correct"][a], n) for a in TEXT_CONTROL], 0),
        "appearance": np.nanmean([_per_character(records, lambda r, a=a: r["correct"][a], n) for a in APPEARANCE], 0),
        "layout_diversity": np.asarray(diversity),
        "seconds": np.asarray(seconds),
    }
    scores = {
        "protocol": dataclasses.asdict(protocol), "characters": n, "images": len(records),
        "per_character": {k: [None if not np.isfinite(x) else float(x) for x in v] for k, v in per_character.items()},
        "clip_t": ci(_per_character(records, lambda r: r["clip_t"], n)),
        "clip_i": ci(_per_character(records, lambda r: r["clip_i"], n)),
        "ap_clip_i": ci(ap),
        "layout_diversity": ci(diversity),
        "seconds_per_character": ci(seconds),
        "face_sim": ci(_per_character(records, lambda r: r["face_sim"], n)),
        "face_found": float(np.mean([r["face_sim"] is not None for r in records])) if face is not None else 0.0,
        "mask_found": float(np.mean([r["mask_found"] for r in records])),
        "text_control": accuracy(records, TEXT_CONTROL),
        "appearance": accuracy(records, APPEARANCE),
        "per_category": {cat: {"clip_t": ci(_per_character([r for r in records if r["category"] == cat],
                                                            lambda r: r["clip_t"], n)),
                               "accuracy": ci(_per_character([r for r in records if r["category"] == cat],
                                                             lambda r, cat=cat: r["correct"][cat], n))}
                         for cat in CATEGORIES},
        "chance": chance(TEXT_CONTROL + APPEARANCE),
        "prompts": prompts, "sheets": sheets,
    }
    if fidelity:
        scores["stage1_psnr"] = ci([p for p, _ in fidelity])
        scores["stage1_ssim"] = ci([q for _, q in fidelity])
    return scores


@torch.no_grad()
def adapter_loss_gap(personalize, test: WorldArrays, references: np.ndarray, targets: np.ndarray,
                     timesteps=(100, 300, 500, 700, 900), seed: int = 0) -> dict:
    """Does the adapter carry the reference's character? Held-out denoising loss, not samples.

    Each target (indices into `test`) is noised at fixed `timesteps` with fixed noise and
    denoised under its scene-only caption (no words about the look) with image tokens from:
    `reference` (its own reference, references[i], uint8 (N, H, W, 3)), `other` (another
    character's reference: the list rolled by one), `negative` (the unconditional image), and
    `look_caption` (negative image, the caption that names the look: what the words alone give).
    A useful adapter has reference < other: `gap` = 1 - reference / other. Scores are mean
    epsilon MSE over targets and timesteps; `per_target` holds each target's (mean over timesteps)
    and `gap_per_target` its 1 - reference / other."""
    from ..diffusion import training_scheduler
    from ..models.loading import add_time_ids, encode_text
    from ..world.attributes import scene_caption

    if len(references) != len(targets) or len(targets) < 2:
        raise ValueError(f"need as many references as targets (at least 2), got {len(references)} and {len(targets)}")
    base, device = personalize.base, personalize.device
    h, w = test.images["image"].shape[1:3]
    pixels = to_float(test.images["image"][targets]).to(device, base.vae.dtype)
    x0 = base.vae.encode(pixels).latent_dist.mode() * base.vae.config.scaling_factor
    scene = encode_text(base, [scene_caption(test.meta[i]) for i in targets], progress=False)
    look = encode_text(base, [test.meta[i]["caption"] for i in targets], progress=False)
    hidden = personalize.clip_hidden_states(list(references))
    negative = personalize.negative_hidden_states().expand_as(hidden)
    sdxl = getattr(base, "text_encoder_2", None) is not None
    ids = add_time_ids(base, h, w).to(device).repeat(len(targets), 1) if sdxl else None
    scheduler = training_scheduler()
    rows = {"reference": (hidden, scene), "other": (hidden.roll(1, 0), scene),
            "negative": (negative, scene), "look_caption": (negative, look)}
    out, per_target = {}, {}
    for name, (states, (text, pooled)) in rows.items():
        # SDXL: each caption's own pooled embedding and the size ids, as in training
        added = {"text_embeds": pooled.float().to(device), "time_ids": ids} if sdxl else None
        cond = {"text": text.to(x0), "tokens": personalize.adapter.tokens(states).to(x0), "added": added}
        losses = []
        for t in timesteps:
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed * 1000 + t)).to(x0)
            losses.append(personalize.model.errors(x0, cond, scheduler, noise, t).cpu().numpy())
        per_target[name] = np.mean(losses, 0)
        out[name] = float(per_target[name].mean())
    out["gap"] = 1.0 - out["reference"] / out["other"]
    out["targets"] = len(targets)
    out["per_target"] = {k: v.tolist() for k, v in per_target.items()}
    out["gap_per_target"] = (1.0 - per_target["reference"] / per_target["other"]).tolist()
    return out
