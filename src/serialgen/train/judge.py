"""Train the judge: the evaluator that grades every other model and is graded by none.

    serialgen train judge --data data/judge128 --out runs/judge [--config FILE] [--resume]

The judge is a second CLIP (same class and trainer as `train clip`) trained on a world made
with another seed (disjoint characters), plus linear probes on its image embedding that
read the world's attributes (garment colours, hair, action, view, background, expression).
Evaluation code (CLIP-I, CLIP-T, attribute accuracies) uses only the judge.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..data.memory import WorldArrays
from ..world.attributes import PROBE_ATTRIBUTES, probe_value
from .clip import CLIPTrainConfig, embed_images, train_clip
from .common import RunDir, load_config, write_json


@dataclass(frozen=True)
class JudgeTrainConfig(CLIPTrainConfig):
    seed: int = 1  # a different seed from the graded models, on a different world
    probe_epochs: int = 300
    probe_lr: float = 1e-2


def fit_probe(features: torch.Tensor, labels: torch.Tensor, classes: int, epochs: int, lr: float,
              seed: int) -> torch.nn.Linear:
    """Multinomial logistic regression on frozen features (full batch, Adam, light L2)."""
    torch.manual_seed(seed)
    probe = torch.nn.Linear(features.shape[1], classes)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        loss = F.cross_entropy(probe(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return probe


def _labels(meta: list[dict], attribute: str) -> tuple[np.ndarray, np.ndarray]:
    """-> (indices of samples stating the attribute, their class indices)."""
    values = PROBE_ATTRIBUTES[attribute]
    idx, labels = [], []
    for k, m in enumerate(meta):
        v = probe_value(m, attribute)
        if v is not None:
            idx.append(k)
            labels.append(values.index(v))
    return np.array(idx, dtype=int), np.array(labels, dtype=int)


def main(args) -> int:
    cfg = load_config(JudgeTrainConfig, args.config)
    run = RunDir(args.out, cfg, args.resume)
    t0 = time.time()
    clip_cfg = CLIPTrainConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(CLIPTrainConfig)})
    result = train_clip(clip_cfg, args.data, run, args.resume)
    if result is None:  # not the main process
        return 0
    model, _, (_, train), clip_scores = result
    size = model.config.vision_config.image_size

    # probes on the judge's own image embedding, trained on its training split, scored on its test split
    features = embed_images(model, train.images["image"], size)
    test = WorldArrays.load(args.data, "test", keys=("image",), progress=False)
    test_features = embed_images(model, test.images["image"], size)
    tensors, accuracy, chance = {}, {}, {}
    for attribute, values in PROBE_ATTRIBUTES.items():
        idx, y = _labels(train.meta, attribute)
        probe = fit_probe(features[idx], torch.from_numpy(y), len(values), cfg.probe_epochs, cfg.probe_lr, cfg.seed)
        tensors[f"{attribute}.weight"] = probe.weight.detach().contiguous()
        tensors[f"{attribute}.bias"] = probe.bias.detach().contiguous()
        tidx, ty = _labels(test.meta, attribute)
        if len(ty) == 0:  # no held-out sample states it (a tiny test split)
            accuracy[attribute] = chance[attribute] = None
            continue
        with torch.no_grad():
            pred = probe(test_features[tidx]).argmax(1).numpy()
        accuracy[attribute] = float((pred == ty).mean())
        chance[attribute] = float(np.bincount(ty, minlength=len(values)).max() / len(ty))  # majority class
    save_file(tensors, str(run.path / "model" / "probes.safetensors"))
    (run.path / "model" / "probes.json").write_text(json.dumps({a: list(v) for a, v in PROBE_ATTRIBUTES.items()}, indent=1))
    write_json(run.path / "model" / "training.json", run.provenance(
        data=str(args.data), steps=cfg.steps, heldout=clip_scores, probe_accuracy=accuracy,
        probe_majority_baseline=chance, wall_time_s=round(time.time() - t0, 1)))
    print("judge probes (held-out accuracy / majority baseline): " +
          ", ".join(f"{a} {accuracy[a]:.2f}/{chance[a]:.2f}" for a in PROBE_ATTRIBUTES if accuracy[a] is not None))
    return 0
