"""Train the judge: the evaluator that grades every other model and is graded by none.

    serialgen train judge --data data/judge128 --out runs/judge [--config FILE] [--resume]

The judge is a second CLIP (same class and trainer as `train clip`) trained on a world made
with another seed (disjoint characters), for CLIP-T and CLIP-I, plus an attribute classifier
that reads the world's attributes (garment colours, hair, action, view, background,
expression): a small ResNet (transformers `ResNetModel`) at the renders' own 128x192, one
linear head per attribute, trained with cross-entropy on the same world. Linear probes on
the CLIP embedding read little beyond background and the top's colour (measured: shoes
0.10, view 0.34, action 0.12), hence a classifier of its own. Its training images are
blurred, resampled and noised at random, so that it reads generated images, which are softer
than renders, without ever seeing a graded model's output. Evaluation code (CLIP-I, CLIP-T,
attribute accuracies) uses only the judge.

`classifier_size` has the classifier read images resized to (H, W): at half the renders' size
a step costs a quarter, so the same time buys four times the training. `clip_from` keeps the
CLIP of an existing judge (a folder, or "bundled") and trains only a new classifier (a second
phase: a CLIP step costs a hundred classifier steps).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import write_json
from ..data.memory import WorldArrays
from ..models.judge import AttributeClassifier
from ..world.attributes import PROBE_ATTRIBUTES, probe_value
from . import loop
from .clip import CLIPTrainConfig, train_clip
from .common import RunDir
from .config import Precision, Source, Weights


@dataclass(frozen=True)
class JudgeTrainConfig(CLIPTrainConfig):
    seed: int = 1  # a different seed from the graded models, on a different world
    classifier_steps: int = 1500
    classifier_batch: int = 32
    classifier_lr: float = 1e-3
    classifier_widths: tuple = (32, 64, 128, 256)
    classifier_depths: tuple = (1, 1, 2, 1)
    classifier_size: tuple = ()  # (H, W) the classifier reads images at; () = as given
    clip_from: Weights = None  # a judge folder (or the bundled judge) whose CLIP is kept; None = train one


# The judge is this library's own instrument (the paper grades with published CLIPs); its recipe
PRESETS = {"mini": JudgeTrainConfig(steps=3000, batch_size=128, lr=1e-3, warmup=200, mixed_precision=Precision.BF16,
                                    sample_every=500), "paper": None}


def soften(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random softening of a batch (N, 3, H, W) in [-1, 1], per image: a 2x down/up resample or
    a Gaussian blur (sigma up to 1.2 px) or neither, then Gaussian noise (sigma up to 0.04),
    and a left-right flip (captions never say left or right)."""
    out = []
    for img in x:
        kind = rng.integers(3)
        if kind == 1:
            h, w = img.shape[1:]
            img = F.interpolate(F.interpolate(img[None], scale_factor=0.5, mode="bilinear", antialias=True),
                                size=(h, w), mode="bilinear")[0]
        elif kind == 2:
            sigma = float(rng.uniform(0.4, 1.2))
            r = torch.arange(-3, 4, dtype=img.dtype)
            k = torch.exp(-r**2 / (2 * sigma**2))
            k = k / k.sum()
            img = F.conv2d(F.pad(img[:, None], (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7))
            img = F.conv2d(F.pad(img, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1))[:, 0]
        img = img + float(rng.uniform(0, 0.04)) * torch.from_numpy(rng.standard_normal(img.shape).astype(np.float32))
        if rng.random() < 0.5:
            img = img.flip(-1)
        out.append(img.clamp(-1, 1))
    return torch.stack(out)


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


def train(cfg: JudgeTrainConfig, data, out, resume: bool = False, device: str = "auto") -> Path:
    """Train (or keep) the judge's CLIP on `device`, then its attribute classifier (on the CPU); export to
    OUT/model."""
    run = RunDir(out, cfg, resume)
    t0 = time.time()
    if cfg.clip_from is not None:
        from accelerate import PartialState

        if not PartialState().is_main_process:  # the classifier trains in one process, as after train_clip
            return run.path / "model"
        clip_scores = keep_clip(cfg.clip_from, run.path / "model")
        train = WorldArrays.load(data, "train", keys=("image",))
    else:
        clip_cfg = CLIPTrainConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(CLIPTrainConfig)})
        result = train_clip(clip_cfg, data, run, resume, device)
        if result is None:  # not the main process
            return run.path / "model"
        _, _, (_, train), clip_scores = result

    # the attribute classifier, trained on the judge world's training split, scored on its validation split
    test = WorldArrays.load(data, "validation", keys=("image",), progress=False)
    classifier, accuracy, chance = train_classifier(cfg, train, test, run)
    classifier.save_pretrained(run.path / "model" / "classifier")
    write_json(run.path / "model" / "training.json", run.provenance(
        data=str(data), steps=cfg.steps, heldout=clip_scores, classifier_accuracy=accuracy,
        classifier_majority_baseline=chance, wall_time_s=round(time.time() - t0, 1)))
    print("judge classifier (held-out accuracy / majority baseline): " +
          ", ".join(f"{a} {accuracy[a]:.2f}/{chance[a]:.2f}" for a in PROBE_ATTRIBUTES if accuracy[a] is not None))
    return run.path / "model"


def keep_clip(source: Source | Path, out) -> dict:
    """Copy the CLIP (weights and tokenizer) of the judge at `source` (Source.BUNDLED: the shipped
    one) to `out` -> its recorded held-out scores, and where they come from."""
    from ..models.loading import bundled, load_clip
    from ..models.tokenizer import save_tokenizer

    folder = bundled("judge") if source is Source.BUNDLED else Path(source)
    model, tokenizer = load_clip(folder)
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, Path(out) / "tokenizer")
    record = folder / "training.json"
    info = json.loads(record.read_text()) if record.exists() else {}
    return info.get("heldout", {}) | {"clip_from": str(folder), "clip_data": info.get("data"),
                                      "clip_command": info.get("command")}


def _targets(meta: list[dict]) -> dict[str, np.ndarray]:
    """Class index per sample and attribute; -1 where the sample has no such attribute."""
    out = {}
    for attribute, values in PROBE_ATTRIBUTES.items():
        idx, labels = _labels(meta, attribute)
        t = np.full(len(meta), -1, dtype=np.int64)
        t[idx] = labels
        out[attribute] = t
    return out


def train_classifier(cfg: JudgeTrainConfig, train: WorldArrays, test: WorldArrays, run: RunDir):
    """-> (classifier, held-out accuracy per attribute, majority-class baseline per attribute).
    Checkpoints under run.path/classifier and resumes from there."""
    from ..data.memory import batch_indices, to_float
    from .common import lr_factor

    torch.manual_seed(cfg.seed)
    model = AttributeClassifier.build(cfg.classifier_widths, cfg.classifier_depths, tuple(cfg.classifier_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.classifier_lr, weight_decay=1e-4)
    folder = run.path / "classifier"
    start, elapsed = loop.resume(run, cfg, model=model, optimizer=optimizer, folder=folder, truncate_log=False)
    images, targets = train.images["image"], {a: torch.from_numpy(t) for a, t in _targets(train.meta).items()}
    model.train()

    def set_lr(k: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = cfg.classifier_lr * lr_factor(k, 100, cfg.classifier_steps)

    def step(k: int, report: bool) -> loop.StepResult:
        idx = batch_indices(len(images), cfg.classifier_batch, k, cfg.seed)
        x = soften(to_float(images[idx]), np.random.default_rng([cfg.seed, k, 13]))
        logits = model(x)
        loss = sum(F.cross_entropy(logits[a], targets[a][idx], ignore_index=-1) for a in logits
                   if (targets[a][idx] >= 0).any())
        return loop.StepResult(loss, {"classifier_loss": loss.item()}, {"loss": f"{loss.item():.3f}"}) if report \
            else loop.StepResult(loss)

    loop.run(cfg, run, None, step=step, wrapped=model, optimizer=optimizer, model=model, start=start,
             elapsed=elapsed, desc="judge classifier", max_grad_norm=None, folder=folder, steps=cfg.classifier_steps,
             lr_of=set_lr)
    model.eval()
    accuracy, chance = {}, {}
    with torch.no_grad():
        logits = {a: [] for a in PROBE_ATTRIBUTES}
        for k in range(0, len(test), 128):
            for a, v in model(to_float(test.images["image"][k:k + 128])).items():
                logits[a].append(v)
    for attribute, t in _targets(test.meta).items():
        keep = t >= 0
        if not keep.any():  # no held-out sample states it (a tiny test split)
            accuracy[attribute] = chance[attribute] = None
            continue
        pred = torch.cat(logits[attribute]).argmax(1).numpy()
        accuracy[attribute] = float((pred[keep] == t[keep]).mean())
        chance[attribute] = float(np.bincount(t[keep], minlength=len(PROBE_ATTRIBUTES[attribute])).max() / keep.sum())
    return model, accuracy, chance
