"""The judge that grades every model (evaluation only): a second CLIP for CLIP-T and CLIP-I, and
the attribute classifier (models/judge.py) that reads the world's attributes, both trained on a
world of another seed (`serialgen train judge`). Attribute accuracies and their intervals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.memory import to_float
from ..models.clip import preprocess
from ..world.attributes import PROBE_ATTRIBUTES, probe_value

TEXT_CONTROL = ("action", "view", "background", "expression")
APPEARANCE = ("top_color", "bottom_color", "shoes_color", "hair_color", "hair_style")


@dataclass
class Judge:
    """CLIP (transformers CLIPModel) + tokenizer for CLIP-T/CLIP-I, and an attribute classifier
    (`serialgen.models.judge.AttributeClassifier`) that reads the world's attributes."""

    model: torch.nn.Module
    tokenizer: object
    classifier: torch.nn.Module

    @property
    def values(self) -> dict[str, tuple[str, ...]]:
        return self.classifier.values

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> "Judge":
        from ..models.judge import AttributeClassifier
        from ..models.loading import bundled, load_clip

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


def per_character_accuracy(reads: dict[str, list[str]], metas: list[dict], attributes) -> np.ndarray:
    """Each image's share of `attributes` read right (those its character has); NaN for none. For
    paired differences between models scored on the same characters."""
    out = []
    for k, m in enumerate(metas):
        hits = [reads[a][k] == probe_value(m, a) for a in attributes if probe_value(m, a) is not None]
        out.append(float(np.mean(hits)) if hits else float("nan"))
    return np.array(out)


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


# Colour families a person names at a glance, as sets of the world's colour names (world.character
# COLORS): neighbours a person might name either way belong to both
COLOUR_FAMILIES = {
    "red": {"red"}, "orange": {"orange"}, "yellow": {"yellow"}, "green": {"green", "teal"},
    "blue": {"blue", "navy", "teal"}, "purple": {"purple"}, "pink": {"pink"}, "brown": {"brown", "beige"},
    "white": {"white", "beige"}, "grey": {"grey", "black"}, "black": {"black", "navy", "grey"},
}
