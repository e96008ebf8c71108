"""Evaluation on held-out characters of the world, graded by the judge only.

The judge (`serialgen train judge`) is a second CLIP trained on a world of another seed, with
an attribute classifier trained on that world that reads the world's attributes. It never sees the
models it grades. The world knows the truth of every held-out sample, so besides the paper's
embedding scores (CLIP-T, CLIP-I, AP-CLIP-I; Table 2) we report attribute accuracies: does
the image show the prompt's action, view and background (text control), and the reference
character's clothes and hair (appearance)?

- `evaluate_stage1`: PSNR/SSIM of standardized vs ground-truth standard renders (Table 3).
- `evaluate_t2i`: the base model from held-out captions: attribute accuracies, CLIP-T.
- `evaluate_series`: the paper's protocol (held-out characters x 20 scene prompts x 4 seeds)
  through `SerialGenPipeline`, with or without Stage I: CLIP-T, CLIP-I on background-removed
  images, AP-CLIP-I, face similarity, attribute accuracies, Stage I PSNR/SSIM; 95% bootstrap
  intervals over characters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data.memory import WorldArrays, to_float
from .models.clip import preprocess
from .world.attributes import PROBE_ATTRIBUTES, probe_value

TEXT_CONTROL = ("action", "view", "background", "expression")
APPEARANCE = ("top_color", "bottom_color", "shoes_color", "hair_color", "hair_style")


@dataclass
class Judge:
    """CLIP (transformers CLIPModel) + tokenizer for CLIP-T/CLIP-I, and an attribute classifier
    (`serialgen.train.judge.AttributeClassifier`) that reads the world's attributes."""

    model: torch.nn.Module
    tokenizer: object
    classifier: torch.nn.Module

    @property
    def values(self) -> dict[str, tuple[str, ...]]:
        return self.classifier.values

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> "Judge":
        from .models.loading import bundled, load_clip
        from .train.judge import AttributeClassifier

        folder = Path(folder) if folder is not None else bundled("judge")
        if not (folder / "classifier" / "heads.safetensors").exists():
            raise FileNotFoundError(f"No judge at {folder}: train one with `serialgen train judge` (it needs "
                                    "classifier/ beside the CLIP weights)")
        model, tokenizer = load_clip(folder)
        return cls(model.float().eval(), tokenizer, AttributeClassifier.from_pretrained(folder / "classifier"))

    @staticmethod
    def _array(images) -> np.ndarray:
        return np.stack([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in images])

    @torch.no_grad()
    def image_features(self, images, batch: int = 64) -> torch.Tensor:
        """uint8 (N, H, W, 3) array or list of PIL images -> unit CLIP embeddings (N, D)."""
        a = self._array(images)
        size = self.model.config.vision_config.image_size
        out = []
        for k in range(0, len(a), batch):
            x = self.model.get_image_features(pixel_values=preprocess(to_float(a[k:k + batch]), size))
            out.append(F.normalize(_tensor(x).float(), dim=-1))
        return torch.cat(out)

    @torch.no_grad()
    def text_features(self, texts: list[str], batch: int = 256) -> torch.Tensor:
        out = []
        for k in range(0, len(texts), batch):
            ids = self.tokenizer(texts[k:k + batch], padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
            out.append(F.normalize(_tensor(self.model.get_text_features(input_ids=ids)).float(), dim=-1))
        return torch.cat(out)

    @torch.no_grad()
    def read(self, images, batch: int = 64) -> dict[str, list[str]]:
        """Images -> the classifier's value of every attribute, per image."""
        a = self._array(images)
        logits: dict[str, list] = {k: [] for k in self.values}
        for k in range(0, len(a), batch):
            for attribute, v in self.classifier(to_float(a[k:k + batch])).items():
                logits[attribute].append(v)
        return {attribute: [self.values[attribute][i] for i in torch.cat(v).argmax(1).tolist()]
                for attribute, v in logits.items()}


def _tensor(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def attribute_accuracy(reads: dict[str, list[str]], metas: list[dict], attributes) -> dict[str, float]:
    """Share of images whose read attribute (`Judge.read`) equals the truth in `metas` (samples
    without the attribute, e.g. a dress's bottom colour, are skipped); plus the mean."""
    out = {}
    for attribute in attributes:
        keep = [k for k, m in enumerate(metas) if probe_value(m, attribute) is not None]
        if not keep:
            continue
        out[attribute] = float(np.mean([reads[attribute][k] == probe_value(metas[k], attribute) for k in keep]))
    out["mean"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


def accuracy_ci(reads: dict[str, list[str]], metas: list[dict], attributes, n: int = 1000, seed: int = 0,
                level: float = 0.95) -> dict:
    """`attribute_accuracy`'s mean with a percentile bootstrap interval from resampling images
    (one per character). -> {mean, lo, hi, n}"""
    rng = np.random.default_rng(seed)
    point = attribute_accuracy(reads, metas, attributes)["mean"]
    stats = []
    for _ in range(n):
        pick = rng.integers(0, len(metas), len(metas))
        stats.append(attribute_accuracy({a: [reads[a][k] for k in pick] for a in reads}, [metas[k] for k in pick],
                                        attributes)["mean"])
    lo, hi = np.nanpercentile(stats, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {"mean": float(point), "lo": float(lo), "hi": float(hi), "n": len(metas)}


def chance(attributes) -> dict[str, float]:
    """Uniform-guess accuracy of each attribute."""
    return {a: 1.0 / len(PROBE_ATTRIBUTES[a]) for a in attributes}


def figure_box(standard: np.ndarray, pad: int = 4, white: int = 245) -> tuple[slice, slice]:
    """The box around the figure of a standard render (every pixel not white), padded."""
    ys, xs = np.nonzero((standard < white).any(-1))
    if len(ys) == 0:
        return slice(None), slice(None)
    h, w = standard.shape[:2]
    return slice(max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)), slice(max(xs.min() - pad, 0), min(xs.max() + pad + 1, w))


def evaluate_stage1(pipe, test: WorldArrays, count: int = 64, steps: int = 20, guidance: float = 2.5,
                    seed: int = 0, bootstrap: int = 1000, judge: Judge | None = None) -> dict:
    """PSNR/SSIM of `pipe` (a StandardizePipeline) on `count` held-out characters (one reference
    each), with 95% bootstrap intervals and the per-character values (for paired comparisons
    between models scored on the same characters). "images": the standardized images.

    A standard render is mostly white canvas, so whole-frame scores reward a blank canvas
    ("blank": a white image's scores, the floor any standardizer has to clear); "figure_psnr" and
    "figure_ssim" score the box around the true figure only. With a judge, "appearance" is the
    share of the reference's clothing and hair attributes read back from the standardized image,
    beside the same reading of the true standard render ("appearance_truth")."""
    from .metrics import psnr, ssim
    from .train.stage1 import Stage1TrainConfig, held_out_references, standardize_all

    refs, truth = held_out_references(test, count)
    images = standardize_all(pipe, refs, Stage1TrainConfig(sample_steps=steps, guidance_scale=guidance, seed=seed))
    images = [np.asarray(im) for im in images]
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
        truth_reads = judge.read(list(truth))
        out["appearance_truth"] = attribute_accuracy(truth_reads, metas, APPEARANCE)
        out["appearance_truth_ci"] = accuracy_ci(truth_reads, metas, APPEARANCE, bootstrap, seed)
        out["silhouette_appearance"] = attribute_accuracy(judge.read(trivial["silhouette"]), metas, APPEARANCE) \
            if "silhouette" in trivial else None
    out["images"] = images
    return out


@torch.no_grad()
def evaluate_t2i(base, judge: Judge, test: WorldArrays, count: int = 64, steps: int = 20, guidance: float = 5.0,
                 seed: int = 0, batch: int = 16) -> dict:
    """Generate from `count` held-out captions (one per sample, characters in turn) and grade."""
    picks = np.linspace(0, len(test) - 1, count).round().astype(int)
    metas = [test.meta[i] for i in picks]
    prompts = [m["caption"] for m in metas]
    h, w = test.images["image"].shape[1:3]
    images = []
    for k in tqdm(range(0, count, batch), desc="t2i samples", leave=False):
        g = torch.Generator().manual_seed(seed * 1000 + k)
        out = base(prompts[k:k + batch], height=h, width=w, num_inference_steps=steps, guidance_scale=guidance,
                   generator=g, output_type="np").images
        images += list((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
    features = judge.image_features(images)
    text = judge.text_features(prompts)
    attributes = TEXT_CONTROL + APPEARANCE
    real = test.images["image"][picks]
    return {"count": count, "clip_t": float(100 * (features * text).sum(1).mean()),
            "clip_t_real_images": float(100 * (judge.image_features(real) * text).sum(1).mean()),
            "accuracy": attribute_accuracy(judge.read(images), metas, attributes),
            "accuracy_real_images": attribute_accuracy(judge.read(real), metas, attributes),
            "chance": chance(attributes), "images": images}


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
    from .diffusion import training_scheduler
    from .models.loading import add_time_ids
    from .train.stage2 import encode_text
    from .world.attributes import scene_caption

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
        tokens = personalize.adapter.tokens(states)
        losses = []
        for t in timesteps:
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed * 1000 + t)).to(x0)
            tt = torch.full((len(x0),), t, device=device)
            eps = base.unet(scheduler.add_noise(x0, noise, tt), tt, text.to(x0), added_cond_kwargs=added,
                            cross_attention_kwargs={"ip_tokens": tokens.to(x0)}).sample
            losses.append(((eps.float() - noise.float()) ** 2).mean(dim=(1, 2, 3)).cpu().numpy())
        per_target[name] = np.mean(losses, 0)
        out[name] = float(per_target[name].mean())
    out["gap"] = 1.0 - out["reference"] / out["other"]
    out["targets"] = len(targets)
    out["per_target"] = {k: v.tolist() for k, v in per_target.items()}
    out["gap_per_target"] = (1.0 - per_target["reference"] / per_target["other"]).tolist()
    return out


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
    from .world.backgrounds import SCENES
    from .world.character import EXPRESSIONS
    from .world.generator import VIEWS, scene_phrase
    from .world.poses import ACTIONS

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


def bootstrap_ci(values, n: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of per-character values (NaN = no value for that character) with a percentile
    bootstrap interval from resampling characters. -> {mean, lo, hi, n}"""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    means = v[np.random.default_rng(seed).integers(0, len(v), (n, len(v)))].mean(1)
    tail = (1 - level) / 2 * 100
    return {"mean": float(v.mean()), "lo": float(np.percentile(means, tail)),
            "hi": float(np.percentile(means, 100 - tail)), "n": int(len(v))}


def _per_character(records: list[dict], key, characters: int) -> np.ndarray:
    """Mean over each character's images of key(record) (None skipped; NaN where none)."""
    out = np.full(characters, np.nan)
    for c in range(characters):
        vals = [key(r) for r in records if r["character"] == c]
        vals = [float(x) for x in vals if x is not None]
        if vals:
            out[c] = np.mean(vals)
    return out


@torch.no_grad()
def evaluate_series(serial, judge: Judge, test: WorldArrays, protocol: Protocol = Protocol(),
                    standardize: bool = True, face=None, detector=None, progress: bool = True) -> dict:
    """Run the protocol through `serial` (a SerialGenPipeline; standardize=False for one-stage
    adapters) and grade it with the judge.

    Per image: CLIP-T (judge image vs prompt), CLIP-I (background-removed image vs background-
    removed reference: the world's mask for the reference, MediaPipe's person segmentation for
    the image), face similarity (`face`, an embedder from `serialgen.face`; None skips it) and the
    judge's attribute readings: the prompt's action, view, background and expression (text
    control) and the reference's clothes and hair (appearance). Per character: AP-CLIP-I, the
    mean pairwise CLIP-I among all its images, and with Stage I the PSNR/SSIM of its
    standardized reference against the world's true standard render. Every score is a mean
    over characters with a 95% bootstrap interval. Each character is standardized once and its
    reference encoded once per seed."""
    from .metrics import psnr, ssim
    from .preprocess import PersonDetector, Reference

    detector = detector or PersonDetector()
    scenes = protocol_scenes(protocol.prompts, protocol.seed)
    prompts = [s["prompt"] for s in scenes]
    text = judge.text_features(prompts)
    rows = test.first_of_each_character()[:protocol.characters]
    attributes = TEXT_CONTROL + APPEARANCE
    records, ap, fidelity, sheets = [], [], [], []
    bar = tqdm(total=len(rows) * protocol.seeds, desc="protocol", disable=not progress, leave=False)
    for c, first in enumerate(rows):
        image, foreground = test.images["image"][first], test.images["foreground"][first]
        ref = Reference.from_world(image, foreground, test.meta[first]["keypoints"])
        ref_feature = judge.image_features([on_white(image, foreground[..., 3] / 255.0)])[0]
        ref_face = face(image) if face is not None else None
        standardized, masked_features, first_images = None, [], None
        for k in range(protocol.seeds):
            out = serial(ref, prompts, standardized=standardized, standardize=standardize,
                         num_inference_steps=protocol.steps, guidance_scale=protocol.guidance,
                         seed=protocol.seed * 1000 + k, batch_size=protocol.batch_size, use_pose=True)
            if standardize and standardized is None:
                standardized = out.standardized  # Stage I once per character
                truth = test.characters["standard_image"][test.character_row[first]]
                made = np.asarray(standardized)[None]
                fidelity.append((float(psnr(made, truth[None])[0]), float(ssim(made, truth[None])[0])))
            images = [np.asarray(im) for im in out.images]
            first_images = first_images or images
            masks = [detector.segment(im) for im in images]
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
                    "correct": {a: (None if probe_value(meta, a) is None else reads[a][i] == probe_value(meta, a))
                                for a in attributes}})
            bar.update()
        f = torch.cat(masked_features)
        sim = (f @ f.T).numpy()
        ap.append(float(100 * sim[np.triu_indices(len(f), 1)].mean()) if len(f) > 1 else float("nan"))
        sheets.append((image, standardized, first_images, prompts))
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
    }
    scores = {
        "protocol": dataclasses.asdict(protocol), "characters": n, "images": len(records),
        "per_character": {k: [None if not np.isfinite(x) else float(x) for x in v] for k, v in per_character.items()},
        "clip_t": ci(_per_character(records, lambda r: r["clip_t"], n)),
        "clip_i": ci(_per_character(records, lambda r: r["clip_i"], n)),
        "ap_clip_i": ci(ap),
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


def _median_colour(image: np.ndarray, region: np.ndarray) -> np.ndarray | None:
    pixels = image[region]
    return np.median(pixels, 0) if len(pixels) >= 3 else None


def region_colours(reference) -> dict[str, np.ndarray]:
    """The reference's median colour of its top, bottom, shoes, skin and hair, read from its own
    pixels inside its figure mask at its keypoints (COCO-18): torso polygon, thighs, ankles, the
    face around the nose, the head above the eyes. Parts it does not show fall back to a neighbour
    (bottom -> top, shoes -> bottom, hair and skin -> top)."""
    from PIL import Image, ImageDraw

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


def colour_silhouette(reference, template_keypoints, width: int, height: int) -> np.ndarray:
    """The trivial Stage I baseline: the template A-pose as a flat-shaded silhouette on white, each
    part filled with the reference's own median colour of that part (`region_colours`): head (skin,
    hair on its upper half), torso and upper arms (top), forearms (skin), legs (bottom), feet (shoes).
    -> (H, W, 3) uint8."""
    from PIL import Image, ImageDraw

    c = {k: tuple(int(round(x)) for x in v) for k, v in region_colours(reference).items()}
    kp = np.asarray(template_keypoints, np.float32)[:, :2] * np.array([width, height], np.float32)
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


def background_leak(pipe, judge: Judge, test: WorldArrays, count: int = 64, steps: int = 20, guidance: float = 2.5,
                    seed: int = 0, fbdm: bool = True, backdrops: dict | None = None, bootstrap: int = 1000) -> dict:
    """Does the backdrop's colour leak into the clothes? The same held-out references (one per
    character, `test` needs its "foreground" images) composited on white and on each saturated
    backdrop, standardized, and the judge's top and bottom colour read back. `leak` = accuracy on
    white - accuracy on the coloured backdrops (mean over backdrops), per backdrop in `per_backdrop`.
    fbdm=False standardizes without the figure mask, which switches FBDM's term off (eq. 3)."""
    from .preprocess import Reference
    from .train.stage1 import Stage1TrainConfig, held_out_picks, standardize_all
    from .world.generator import CharacterWorld

    picks = held_out_picks(test, count)
    metas = [test.meta[i] for i in picks]
    h, w = test.images["image"].shape[1:3]
    attributes = ("top_color", "bottom_color")
    cfg = Stage1TrainConfig(sample_steps=steps, guidance_scale=guidance, seed=seed)
    correct: dict[str, np.ndarray] = {}
    for name, rgb in {"white": (255, 255, 255), **(backdrops or LEAK_BACKDROPS)}.items():
        backdrop = np.empty((h, w, 3), np.uint8)
        backdrop[:] = rgb
        refs = []
        for i in picks:
            fg = test.images["foreground"][i]
            r = Reference.from_world(CharacterWorld.composite(fg, backdrop), fg, test.meta[i]["keypoints"])
            refs.append(r if fbdm else dataclasses.replace(r, mask=None))
        reads = judge.read([np.asarray(im) for im in standardize_all(pipe, refs, cfg)])
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


# Colour families a person names at a glance, as sets of the world's colour names (world.character
# COLORS): neighbours a person might name either way belong to both
COLOUR_FAMILIES = {
    "red": {"red"}, "orange": {"orange"}, "yellow": {"yellow"}, "green": {"green", "teal"},
    "blue": {"blue", "navy", "teal"}, "purple": {"purple"}, "pink": {"pink"}, "brown": {"brown", "beige"},
    "white": {"white", "beige"}, "grey": {"grey", "black"}, "black": {"black", "navy", "grey"},
}
