"""Evaluation on held-out characters of the world, graded by the judge only.

The judge (`serialgen train judge`) is a second CLIP trained on a world of another seed, with
linear probes that read the world's attributes from its image embedding. It never sees the
models it grades. The world knows the truth of every held-out sample, so besides the paper's
embedding scores (CLIP-T, CLIP-I, AP-CLIP-I; Table 2) we report attribute accuracies: does
the image show the prompt's action, view and background (text control), and the reference
character's clothes and hair (appearance)?

- `evaluate_stage1`: PSNR/SSIM of standardized vs ground-truth standard renders (Table 3).
- `evaluate_t2i`: the base model from held-out captions: attribute accuracies, CLIP-T.
- `evaluate_series`: one reference + a series of scene prompts per held-out character,
  through `SerialGenPipeline` (with or without Stage I): CLIP-T, CLIP-I, AP-CLIP-I and
  attribute accuracies.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data.memory import WorldArrays, to_float
from .models.clip import preprocess
from .world.attributes import PROBE_ATTRIBUTES, probe_value, scene_caption

TEXT_CONTROL = ("action", "view", "background")
APPEARANCE = ("top_color", "bottom_color", "shoes_color", "hair_color", "hair_style")


@dataclass
class Judge:
    """CLIP (transformers CLIPModel) + tokenizer + one linear probe per attribute."""

    model: torch.nn.Module
    tokenizer: object
    probes: dict[str, torch.nn.Linear]
    values: dict[str, tuple[str, ...]]

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> "Judge":
        from safetensors.torch import load_file

        from .models.loading import bundled, load_clip

        folder = Path(folder) if folder is not None else bundled("judge")
        if not (folder / "probes.safetensors").exists():
            raise FileNotFoundError(f"No judge at {folder}: train one with `serialgen train judge` (it needs "
                                    "probes.safetensors and probes.json beside the CLIP weights)")
        model, tokenizer = load_clip(folder)
        values = {k: tuple(v) for k, v in json.loads((folder / "probes.json").read_text()).items()}
        tensors = load_file(str(folder / "probes.safetensors"))
        probes = {}
        for attribute, names in values.items():
            weight = tensors[f"{attribute}.weight"].float()
            probe = torch.nn.Linear(weight.shape[1], len(names))
            probe.load_state_dict({"weight": weight, "bias": tensors[f"{attribute}.bias"].float()})
            probes[attribute] = probe.eval()
        return cls(model.float().eval(), tokenizer, probes, values)

    @torch.no_grad()
    def image_features(self, images, batch: int = 64) -> torch.Tensor:
        """uint8 (N, H, W, 3) array or list of PIL images -> unit embeddings (N, D)."""
        a = np.stack([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in images])
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
    def predict(self, features: torch.Tensor, attribute: str) -> list[str]:
        """Image embeddings -> the probe's value for `attribute`, per image."""
        index = self.probes[attribute](features).argmax(1).tolist()
        return [self.values[attribute][i] for i in index]


def _tensor(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def attribute_accuracy(judge: Judge, features: torch.Tensor, metas: list[dict], attributes) -> dict[str, float]:
    """Share of images whose probed attribute equals the truth in `metas` (samples without the
    attribute, e.g. a dress's bottom colour, are skipped); plus the mean over attributes."""
    out = {}
    for attribute in attributes:
        keep = [k for k, m in enumerate(metas) if probe_value(m, attribute) is not None]
        if not keep:
            continue
        pred = judge.predict(features[keep], attribute)
        out[attribute] = float(np.mean([p == probe_value(metas[k], attribute) for p, k in zip(pred, keep, strict=True)]))
    out["mean"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


def chance(attributes) -> dict[str, float]:
    """Uniform-guess accuracy of each attribute."""
    return {a: 1.0 / len(PROBE_ATTRIBUTES[a]) for a in attributes}


def evaluate_stage1(pipe, test: WorldArrays, count: int = 64, steps: int = 20, guidance: float = 2.5,
                    seed: int = 0) -> dict:
    """PSNR/SSIM of `pipe` (a StandardizePipeline) on `count` held-out characters."""
    from .train.stage1 import Stage1TrainConfig, evaluate, held_out_references

    refs, truth = held_out_references(test, count)
    return evaluate(pipe, refs, truth, Stage1TrainConfig(sample_steps=steps, guidance_scale=guidance, seed=seed))


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
    attributes = TEXT_CONTROL + ("expression",) + APPEARANCE
    real = judge.image_features(test.images["image"][picks])
    return {"count": count, "clip_t": float(100 * (features * text).sum(1).mean()),
            "clip_t_real_images": float(100 * (real * text).sum(1).mean()),
            "accuracy": attribute_accuracy(judge, features, metas, attributes),
            "accuracy_real_images": attribute_accuracy(judge, real, metas, attributes),
            "chance": chance(attributes), "images": images}


@torch.no_grad()
def evaluate_series(serial, judge: Judge, test: WorldArrays, characters: int = 16, prompts: int = 6,
                    standardize: bool = True, steps: int = 20, guidance: float = 5.0, seed: int = 0) -> dict:
    """Per held-out character: its first sample is the reference, the scene captions of its next
    `prompts` samples the series. Scores (paper Table 2 and the world's attributes):
    clip_t (image vs prompt), clip_i (image vs reference), ap_clip_i (mean pairwise within a
    series), text control and appearance accuracies of the judge's probes."""
    from .preprocess import Reference

    rows = test.first_of_each_character()[:characters]
    feats, text_feats, ref_feats, metas, series_feats, sheets = [], [], [], [], [], []
    for first in tqdm(rows, desc="series", leave=False):
        same = np.flatnonzero(test.character_row == test.character_row[first])[1:prompts + 1]
        ref = Reference.from_world(test.images["image"][first], test.images["foreground"][first],
                                   test.meta[first]["keypoints"])
        captions = [scene_caption(test.meta[i]) for i in same]
        out = serial(ref, captions, standardize=standardize, num_inference_steps=steps, guidance_scale=guidance,
                     seed=seed)
        f = judge.image_features(out.images)
        feats.append(f)
        series_feats.append(f)
        text_feats.append(judge.text_features(captions))
        ref_feats.append(judge.image_features([ref.image]).expand(len(f), -1))
        metas += [test.meta[i] for i in same]
        sheets.append((ref.image, out.standardized, out.images, captions))
    features, text, refs = torch.cat(feats), torch.cat(text_feats), torch.cat(ref_feats)
    pairwise = [float((a * b).sum()) for f in series_feats for a, b in itertools.combinations(f, 2)]
    return {"characters": len(rows), "images": len(features),
            "clip_t": float(100 * (features * text).sum(1).mean()),
            "clip_i": float(100 * (features * refs).sum(1).mean()),
            "ap_clip_i": float(100 * np.mean(pairwise)) if pairwise else float("nan"),
            "text_control": attribute_accuracy(judge, features, metas, TEXT_CONTROL),
            "appearance": attribute_accuracy(judge, features, metas, APPEARANCE),
            "chance": chance(TEXT_CONTROL + APPEARANCE), "sheets": sheets}
