"""Train CLIP (transformers CLIPModel, both towers) contrastively on (render, caption) pairs.

    serialgen train clip --data data/world128 --out runs/clip [--config FILE] [--resume]

The tokenizer is built first from the training captions (`models/tokenizer.py`) and saved
beside the model. Symmetric InfoNCE with a learnable temperature (Radford et al. 2021,
eq. in Fig. 3). With `hard_negatives`, each image's row also holds a copy of its caption with
one attribute changed (action, view, expression, a colour...), as NegCLIP does (Yuksekgonul
et al. 2023): a plain contrastive batch is won by colours and backgrounds alone and leaves
the rest of a caption unread. Held-out evaluation: image->text top-1 retrieval and per-attribute
zero-shot accuracy (`evaluate_clip`). The same script trains the judge's CLIP on a
disjoint world (other seed) for evaluation.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import write_json
from ..data.memory import WorldArrays, batch_indices, to_float
from ..models.backbones import CLIP_PRESETS, preset
from ..models.clip import preprocess
from ..models.loading import load_clip
from ..models.tokenizer import build_tokenizer, save_tokenizer
from . import loop
from .common import RunDir, make_accelerator
from .config import LoopConfig, Precision, Weights, folder


@dataclass(frozen=True)
class CLIPTrainConfig(LoopConfig):
    architecture: str = "mini"  # models.backbones.CLIP_PRESETS
    init_from: Weights = None  # continue from this CLIPModel folder and its tokenizer (or the bundled one)
    weight_decay: float = 0.1
    vocab_size: int = 1024
    ema_decay: float = 0.998
    eval_samples: int = 512
    zeroshot_samples: int = 128  # per attribute; each costs one text batch per sample
    hard_negatives: bool = False  # add one single-attribute-swapped caption per image to its row


# The paper trains no CLIP (it uses OpenCLIP ViT-H/14 and SD's text encoder); the mini CLIP's recipe
PRESETS = {"mini": CLIPTrainConfig(steps=3000, batch_size=128, lr=1e-3, warmup=200, mixed_precision=Precision.BF16,
                                   sample_every=500), "paper": None}


def tokenize(tokenizer, captions: list[str], max_length: int) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", truncation=True, max_length=max_length,
                     return_tensors="pt").input_ids


@torch.no_grad()
def embed_images(model, images: np.ndarray, size: int, batch: int = 128) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> unit image embeddings (N, D)."""
    out = []
    for k in range(0, len(images), batch):
        pixels = preprocess(to_float(images[k:k + batch]), size)
        out.append(F.normalize(_features(model.get_image_features(pixel_values=pixels)).float(), dim=-1))
    return torch.cat(out)


def _features(output) -> torch.Tensor:
    """transformers returns a tensor or (in newer releases) an output object with pooler_output."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def embed_texts(model, tokenizer, captions: list[str], max_length: int, batch: int = 256) -> torch.Tensor:
    out = []
    for k in range(0, len(captions), batch):
        ids = tokenize(tokenizer, captions[k:k + batch], max_length)
        out.append(F.normalize(_features(model.get_text_features(input_ids=ids)).float(), dim=-1))
    return torch.cat(out)


def train(cfg: CLIPTrainConfig, data, out, resume: bool = False, device: str = "auto") -> Path:
    """Train and export to OUT/model. -> that folder."""
    train_clip(cfg, data, RunDir(out, cfg, resume), resume, device)
    return Path(out) / "model"


def train_clip(cfg: CLIPTrainConfig, data, run: RunDir, resume: bool, device: str = "auto"):
    """Train and export to run.path/model. -> (EMA model, tokenizer, training arrays, scores)."""
    accelerator = make_accelerator(cfg, device)
    torch.manual_seed(cfg.seed)
    arch = preset(CLIP_PRESETS, cfg.architecture)

    # 1. Data and tokenizer: every non-standard render and each character's standard image
    train = WorldArrays.load(data, "train", keys=("image", "standard_image"), limit=cfg.limit or None,
                             progress=accelerator.is_main_process)
    captions = [m["caption"] for m in train.meta]
    first_of_character = train.first_of_each_character()
    images = np.concatenate([train.images["image"], train.images["standard_image"][first_of_character]])
    captions += [train.meta[k]["standard_caption"] for k in first_of_character]
    tokenizer_dir = run.path / "model" / "tokenizer"
    source = None
    if cfg.init_from is not None:
        source, tokenizer = load_clip(folder(cfg.init_from))
        save_tokenizer(tokenizer, tokenizer_dir)
    elif resume and tokenizer_dir.exists():
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = build_tokenizer(captions, cfg.vocab_size, arch.max_text_length)
        save_tokenizer(tokenizer, tokenizer_dir)
    token_ids = tokenize(tokenizer, captions, arch.max_text_length)  # (N, L)
    test = WorldArrays.load(data, "validation", keys=("image",), limit=cfg.eval_samples, progress=False)

    # 2. Model, EMA, optimizer (no weight decay on norms, biases, embeddings, temperature)
    model = arch.build(tokenizer)
    if source is not None:
        model.load_state_dict({k: v.float() for k, v in source.state_dict().items()})
        del source
    ema = copy.deepcopy(model).requires_grad_(False)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embedding" in name or "logit_scale" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    start, elapsed = loop.resume(run, cfg, model=model, optimizer=optimizer, ema=ema, requested=resume)
    wrapped, optimizer = accelerator.prepare(model, optimizer)

    # 3. Training loop
    def step(k: int, report: bool) -> loop.StepResult:
        idx = batch_indices(len(images), cfg.batch_size, k, cfg.seed, accelerator.process_index, accelerator.num_processes)
        x = to_float(images[idx])
        flip = torch.from_numpy(np.random.default_rng([cfg.seed, k, 7]).random(len(idx)) < 0.5)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)  # captions never say left or right
        pixels = preprocess(x, arch.image_size).to(accelerator.device)
        ids = token_ids[idx]
        if cfg.hard_negatives:
            rng = np.random.default_rng([cfg.seed, k, 11])
            ids = torch.cat([ids, tokenize(tokenizer, [hard_negative(train.meta, i, captions, rng) for i in idx],
                                           arch.max_text_length)])
        with accelerator.autocast():
            out = wrapped(input_ids=ids.to(accelerator.device), pixel_values=pixels)
        loss = contrastive_loss(out.logits_per_image)
        return loop.StepResult(loss, postfix={"loss": f"{loss.item():.3f}",
                                              "scale": f"{model.logit_scale.exp().item():.1f}"} if report else None)

    def clamp_scale() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    def sample(done: int, bar) -> None:
        scores = evaluate_clip(ema.eval(), tokenizer, test, arch, cfg.zeroshot_samples)
        run.log(done, **scores)
        bar.write(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))

    elapsed = loop.run(cfg, run, accelerator, step=step, wrapped=wrapped, optimizer=optimizer, model=model,
                       start=start, elapsed=elapsed, desc="clip", ema=ema, ema_decay=cfg.ema_decay,
                       after_update=clamp_scale, sample=sample)

    # 4. Export EMA weights with tokenizer, image size and provenance
    if accelerator.is_main_process:
        scores = evaluate_clip(ema.eval(), tokenizer, test, arch, cfg.zeroshot_samples)
        ema.save_pretrained(run.path / "model", safe_serialization=True)
        save_tokenizer(tokenizer, run.path / "model" / "tokenizer")
        write_json(run.path / "model" / "training.json", run.provenance(
            data=str(data), steps=cfg.steps, heldout=scores, wall_time_s=round(elapsed, 1)))
        print(f"saved {run.path / 'model'}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        return ema, tokenizer, (images, train), scores
    return None


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over (B, B) image-text logits; with (B, 2B) the extra columns are
    hard negatives that only the image->text direction sees."""
    b = logits_per_image.shape[0]
    target = torch.arange(b, device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image.float(), target)
            + F.cross_entropy(logits_per_image[:, :b].T.float(), target)) / 2


def hard_negative(meta: list[dict], k: int, captions: list[str], rng: np.random.Generator) -> str:
    """Caption k with one attribute it states set to another value; a standard image (k past
    the renders) states none that can change, so it gets another random caption."""
    from ..world.attributes import ATTRIBUTES, caption_variants

    if k < len(meta):
        for attr in rng.permutation(list(ATTRIBUTES)):
            options, truth = caption_variants(meta[k], str(attr))
            if len(options) > 1:
                return options[(truth + 1 + int(rng.integers(len(options) - 1))) % len(options)]
    return captions[int(rng.integers(len(captions)))]


def evaluate_clip(model, tokenizer, test: WorldArrays, arch, zeroshot_samples: int = 128) -> dict[str, float]:
    """Held-out image->text retrieval (top-1, top-5 among the test captions) and
    per-attribute zero-shot accuracy (the true caption against copies with that attribute
    swapped for each alternative). Chance levels are returned beside each accuracy."""
    from ..world.attributes import ATTRIBUTES, caption_variants

    img = embed_images(model, test.images["image"], arch.image_size)
    captions = [m["caption"] for m in test.meta]
    txt = embed_texts(model, tokenizer, captions, arch.max_text_length)
    sim = img @ txt.T  # (N, N)
    # several test samples can share a caption; any exact match counts
    same = torch.tensor([[a == b for b in captions] for a in captions])
    ranks = sim.argsort(dim=1, descending=True)
    scores = {
        "retrieval_top1": same.gather(1, ranks[:, :1]).any(1).float().mean().item(),
        "retrieval_top5": same.gather(1, ranks[:, :5]).any(1).float().mean().item(),
    }
    for attr in ATTRIBUTES:
        correct, n_options = [], []
        for k, meta in enumerate(test.meta[:zeroshot_samples]):
            options, truth = caption_variants(meta, attr)
            if len(options) < 2:
                continue
            t = embed_texts(model, tokenizer, options, arch.max_text_length)
            correct.append(int((t @ img[k]).argmax()) == truth)
            n_options.append(len(options))
        scores[f"zeroshot_{attr}"] = float(np.mean(correct))
        scores[f"chance_{attr}"] = float(np.mean([1.0 / n for n in n_options]))
    return scores
