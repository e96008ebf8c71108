"""Train the Stage II image adapter (SerialGen §3.4): IP-Adapter with all CLIP tokens on the
frozen text-to-image base, under one of three pairings (the paper's Table 2):

    serialgen train stage2 --data data/world128 --out runs/stage2 --pairing standardized [--config FILE] [--resume]

- `standardized` (SerialGen): the reference is the frozen Stage I standardizer's output for an
  image of the target's character. Standardizing is the expensive part, so it runs once, into
  safetensors shards under OUT/standardized (resumable: finished shards are kept), for
  `standardized_per_character` images per character (0 = every training image, as the paper).
- `paired` (one-stage): the reference is another non-standard image of the same character.
- `unpaired` (one-stage, IP-Adapter's own recipe): the reference is the target itself, randomly
  cropped and flipped.
- `standard` (an upper bound, possible only on the world): the reference is the character's true
  standard render, i.e. standardization by a perfect Stage I. It tells what standardized
  references are worth apart from how well our Stage I makes them.
- `generated` (one-stage, the paper's own paired baseline, §4.3.1): the pairs are made by
  applying the two-stage model to the data: each target x is standardized by Stage I, the
  two-stage adapter (`generator`) draws that character in a random scene, and the drawing is x's
  reference. Both are cached in shards like the standardized references (OUT/standardized,
  OUT/generated). The reference is not standardized; inference is one stage.

Only the adapter trains (projector + to_k_ip/to_v_ip); the base UNet, VAE, text encoder(s) and
CLIP image encoder are frozen. For guidance, the image, the text, or both are dropped (~5% each):
a dropped image is CLIP of an all-zero image, as at sampling time. A share of the captions
(`scene_captions`: half by default, all in the mini config) names only the scene ("a character,
waving, side view, ...") and not the look, which must then come through the adapter. The base is the bundled mini model or a local SD1.5/SDXL folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..atomic import atomic_path, write_json
from ..data.heldout import held_out_series
from ..data.latents import cached_latents, weights_digest
from ..data.memory import WorldArrays, batch_indices, to_float
from ..diffusion import epsilon_loss, training_scheduler
from ..models.clip import preprocess as clip_preprocess
from ..models.ip_adapter import IPAdapter
from ..models.loading import add_time_ids, empty_text, encode_text, record_digest
from ..models.personalizer import Personalizer
from ..models.standardizer import STARTS
from ..preprocess import Reference
from ..sheet import grid
from ..world.attributes import scene_caption
from . import loop
from .common import RunDir, make_accelerator
from .config import LoopConfig, Pairing, Precision, Source, Weights, describe, folder


@dataclass(frozen=True)
class Stage2TrainConfig(LoopConfig):
    pairing: Pairing = Pairing.STANDARDIZED
    base: Weights = Source.BUNDLED  # SD1.5/SDXL pipeline folder, or the bundled mini text-to-image model
    image_encoder: Weights = Source.BUNDLED  # CLIP vision folder
    standardizer: Weights = Source.BUNDLED  # Stage I folder for pairing = standardized or generated
    generator: Weights = Source.BUNDLED  # pairing = generated: the two-stage adapter that draws the references
    generate_steps: int = 20
    generate_guidance: float = 5.0
    standardized_per_character: int = 4  # images standardized per character; 0 = all
    # SerialGen eq. 5: each target's reference is its own standardization phi(x), and the targets are
    # the images that were standardized (all of them with standardized_per_character = 0). False: a
    # random standardized image of the target's character
    own_reference: bool = False
    standardize_steps: int = 20
    standardize_guidance: float = 2.5
    # the standardizer's sampling start for the references ("" = the one saved with its weights) and
    # the silhouette start's strength (0 = the saved one)
    standardize_start: str = ""
    standardize_strength: float = 0.0
    # pairing = standardized or generated: the seed of the cached references (which images are
    # standardized, their sampling noise, the drawings' scenes and noise); -1 = `seed`. Training-seed
    # replicas of one recipe set it to the first run's seed and share its cache (copy the run's
    # `standardized` and `generated` folders): the seed then varies the training alone
    reference_seed: int = -1
    scene_captions: float = 0.5  # share of captions without the character's look
    # the paper's token study (supplementary §10): CLS + patch tokens pooled to a g x g grid (0: CLS
    # alone); -1 = every token (the adapter SerialGen uses)
    token_grid: int = -1
    crop_scale: float = 0.7  # unpaired: smallest crop side, as a fraction of the image
    offset_noise: float = 0.0  # per (sample, channel) noise offset (diffusion.training_noise); 0.1 is usual
    drop_image: float = 0.05
    drop_text: float = 0.05
    drop_both: float = 0.05
    sample_steps: int = 20
    guidance_scale: float = 5.0

    def __post_init__(self):
        super().__post_init__()
        if self.standardize_start not in ("", *STARTS):
            raise ValueError(f"standardize_start must be one of {', '.join(STARTS)} (or empty: the standardizer's own), "
                             f"got {self.standardize_start!r}")
        if not 0 <= self.standardize_strength <= 1:
            raise ValueError(f"standardize_strength must be in (0, 1] (or 0: the standardizer's own), "
                             f"got {self.standardize_strength}")
        if self.reference_seed < -1:
            raise ValueError(f"reference_seed must be -1 (the run's seed) or a seed >= 0, got {self.reference_seed}")
        if self.token_grid < -1:
            raise ValueError(f"token_grid must be -1 (every image token), 0 (CLS alone) or a grid side, got {self.token_grid}")

    @property
    def references_seed(self) -> int:
        """The seed the cached references follow: `reference_seed`, or the run's seed."""
        return self.seed if self.reference_seed < 0 else self.reference_seed


PRESETS = {
    "mini": Stage2TrainConfig(steps=1500, batch_size=32, lr=1e-4, warmup=100, sample_every=500),
    # IP-Adapter's recipe (Ye et al. 2023, §4.1; SerialGen §4.1 trains Stage II as IP-Adapter on
    # SDXL): AdamW at 1e-4 (weight decay 0.01), batch 8 on each of 8 GPUs (batch_size is per
    # process), 1M steps, image, text and both dropped 5% each; fp16 on GPUs; every training image
    # standardized. The base and encoder folders come from a TOML file (configs/paper/stage2.toml)
    "paper": Stage2TrainConfig(steps=1_000_000, batch_size=8, lr=1e-4, warmup=500, mixed_precision=Precision.FP16,
                               checkpoint_every=5000, sample_every=20_000, standardized_per_character=0,
                               scene_captions=0.0),
}


@torch.no_grad()
def clip_hidden_states(image_encoder, pixels: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> penultimate hidden states (N, T, d)."""
    x = clip_preprocess(pixels, image_encoder.config.image_size).to(image_encoder.device, image_encoder.dtype)
    return image_encoder(pixel_values=x, output_hidden_states=True).hidden_states[-2]


def augment(images: np.ndarray, rng: np.random.Generator, smallest: float) -> torch.Tensor:
    """unpaired: a random crop (side in [smallest, 1] of the image, same aspect) resized back, and
    a horizontal flip half the time. uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    x = to_float(np.ascontiguousarray(images))
    n, _, h, w = x.shape
    out = torch.empty_like(x)
    for k in range(n):
        s = rng.uniform(smallest, 1.0)
        ch, cw = max(8, round(h * s)), max(8, round(w * s))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = x[k:k + 1, :, top:top + ch, left:left + cw]
        crop = F.interpolate(crop, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        out[k] = crop[0].flip(-1) if rng.random() < 0.5 else crop[0]
    return out


def _metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def standardized_sources(train: WorldArrays, per_character: int, seed: int) -> np.ndarray:
    """Training-sample indices to standardize: `per_character` per character (seeded), or all."""
    rng = np.random.default_rng([seed, 21])
    picks = []
    for c in range(int(train.character_row.max()) + 1):
        rows = np.flatnonzero(train.character_row == c)
        picks.append(rows if per_character <= 0 else rng.permutation(rows)[:per_character])
    return np.sort(np.concatenate(picks))


def precompute_shards(sources: np.ndarray, folder: Path, make, made_by: str, rank: int = 0, world_size: int = 1,
                      shard_size: int = 64, progress: bool = True, desc: str = "standardizing references") -> None:
    """make(shard index, rows) -> uint8 images of those rows, kept in folder/NNNNN.safetensors shards
    (images, sources), each recording `made_by` (what made them: models, sampler, settings) in its
    metadata. A shard already on disk with the same sources and the same `made_by` is kept, so an
    interrupted run resumes; one made otherwise is made again."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = [sources[k:k + shard_size] for k in range(0, len(sources), shard_size)]
    todo = []
    for s, rows in enumerate(shards):
        path = folder / f"{s:05d}.safetensors"
        if s % world_size != rank:
            continue
        if path.exists():
            with safe_open(str(path), "pt") as f:  # metadata and sources only, not the images
                if (f.metadata() or {}).get("made_by", "") == made_by and \
                        np.array_equal(f.get_tensor("sources").numpy(), rows):
                    continue
        todo.append((s, rows, path))
    for s, rows, path in tqdm(todo, desc=desc, unit="shard", disable=not progress):
        images = make(s, rows)
        tensors = {"images": torch.from_numpy(np.stack([np.asarray(im) for im in images])),
                   "sources": torch.from_numpy(np.asarray(rows, np.int64))}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"made_by": made_by})


def precompute_standardized(train: WorldArrays, sources: np.ndarray, folder: Path, pipe, cfg: Stage2TrainConfig,
                            rank: int = 0, world_size: int = 1, shard_size: int = 64, progress: bool = True,
                            made_by: str = "") -> None:
    """Standardize train[sources] into folder's shards (`precompute_shards`)."""
    pipe.progress = False

    def make(s, rows):
        refs = [Reference.from_world(train.images["image"][i], train.images["foreground"][i], train.meta[i]["keypoints"])
                for i in rows]
        return pipe(refs, num_inference_steps=cfg.standardize_steps, guidance_scale=cfg.standardize_guidance,
                    seed=cfg.references_seed * 7919 + s, batch_size=len(rows), start=cfg.standardize_start or None,
                    strength=cfg.standardize_strength or None).images

    precompute_shards(sources, folder, make, made_by, rank, world_size, shard_size, progress)


def generation_prompts(train: WorldArrays, sources: np.ndarray, seed: int) -> list[str]:
    """pairing = generated: the scene each source's reference is drawn in, the scene-only caption
    ("a character, ...") of a random training image (seeded)."""
    rng = np.random.default_rng([seed, 41])
    return [scene_caption(train.meta[j]) for j in rng.integers(0, len(train), len(sources))]


def precompute_generated(standardized: np.ndarray, prompts: list[str], sources: np.ndarray, folder: Path, personalize,
                         cfg: Stage2TrainConfig, rank: int = 0, world_size: int = 1, shard_size: int = 64,
                         progress: bool = True, made_by: str = "") -> None:
    """The paper's paired one-stage references (§4.3.1): each source's standardization
    (`standardized`, in `sources` order) drawn by the two-stage model `personalize` in the scene of
    its prompt, into folder's shards (`precompute_shards`)."""
    personalize.progress = False

    def make(s, rows):
        at = slice(s * shard_size, s * shard_size + len(rows))
        return personalize(list(standardized[at]), prompts[at], num_inference_steps=cfg.generate_steps,
                           guidance_scale=cfg.generate_guidance, seed=cfg.references_seed * 7919 + s,
                           batch_size=16).images

    precompute_shards(sources, folder, make, made_by, rank, world_size, shard_size, progress,
                      desc="drawing references")


def _adapter_file(weights: Weights) -> Path:
    """The IP-Adapter file of a Stage II folder (or file); the bundled two-stage adapter for BUNDLED."""
    from ..models.loading import bundled
    from ..pipelines.personalize import ADAPTER_FILE

    path = folder(weights) or bundled("stage2")
    return path / ADAPTER_FILE if path.is_dir() else path


def load_standardized(folder: Path, sources: np.ndarray) -> np.ndarray:
    """-> uint8 (len(sources), H, W, 3), in `sources` order."""
    images, seen = [], []
    for path in sorted(folder.glob("[0-9]*.safetensors")):
        tensors = load_file(str(path))
        images.append(tensors["images"].numpy())
        seen.append(tensors["sources"].numpy())
    if not images or not np.array_equal(np.concatenate(seen), sources):
        raise ValueError(f"{folder} does not hold the standardized references of this run's data and config")
    return np.concatenate(images)


def train(cfg: Stage2TrainConfig, data, out, resume: bool = False, device: str = "auto") -> Path:
    """Train the adapter under cfg.pairing and export it in IP-Adapter's layout to OUT/model. -> that folder."""
    from ..models.loading import load_base, load_image_encoder
    from ..pipelines.personalize import ADAPTER_FILE, PersonalizePipeline
    from ..pipelines.serial import SerialGenPipeline
    from ..pipelines.standardize import StandardizePipeline

    if cfg.own_reference and cfg.pairing is not Pairing.STANDARDIZED:
        raise ValueError(f"own_reference needs pairing = standardized (the target's own standardization), got "
                         f"{cfg.pairing.value!r}")
    run = RunDir(out, cfg, resume)
    accelerator = make_accelerator(cfg, device)
    torch.manual_seed(cfg.seed)
    main_process = accelerator.is_main_process
    device = accelerator.device

    # 1. Frozen models: the base pipeline (UNet, VAE, text encoders) and the CLIP image encoder
    base = load_base(folder(cfg.base))
    base.to(device)
    for module in (base.unet, base.vae, base.text_encoder, getattr(base, "text_encoder_2", None)):
        if module is not None:
            module.float().eval().requires_grad_(False)
    image_encoder = load_image_encoder(folder(cfg.image_encoder)).float().to(device).eval().requires_grad_(False)
    sdxl = getattr(base, "text_encoder_2", None) is not None
    side = image_encoder.config.image_size // image_encoder.config.patch_size
    if cfg.token_grid > side:
        raise ValueError(f"token_grid {cfg.token_grid} is finer than the image encoder's {side}x{side} patch grid")

    # 2. Data: targets (latents and captions, cached in OUT) and the references of the pairing
    keys = {"standardized": ("image", "foreground"), "generated": ("image", "foreground"),
            "standard": ("image", "standard_image")}.get(cfg.pairing, ("image",))
    train = WorldArrays.load(data, "train", keys=keys, limit=cfg.limit or None, progress=main_process)
    h, w = train.images["image"].shape[1:3]
    cache = run.path / "cache.safetensors"
    made_by = json.dumps({"data": str(Path(data).resolve()), "limit": cfg.limit, "seed": cfg.seed,
                          "scene_captions": cfg.scene_captions,
                          "base": "" if cfg.base is Source.BUNDLED else str(cfg.base)}, sort_keys=True)
    if cache.exists() and _metadata(cache).get("made_by") == made_by:
        cached = load_file(str(cache))
    else:  # none yet, or made for other data, captions or base model
        rng = np.random.default_rng([cfg.seed, 31])
        captions = [scene_caption(m) if rng.random() < cfg.scene_captions else m["caption"] for m in train.meta]
        latents = cached_latents(base.vae, train.images["image"], data, "train", run.path, device=device,
                                 progress=main_process, write=main_process)
        text, pooled = encode_text(base, captions, progress=main_process)
        empty, empty_pooled = empty_text(base)
        cached = {"latents": latents.cpu(), "text": text.cpu(), "empty": empty.cpu()}
        if pooled is not None:
            cached |= {"pooled": pooled.cpu(), "empty_pooled": empty_pooled.cpu()}
        if main_process:
            with atomic_path(cache) as tmp:
                save_file({k: v.contiguous() for k, v in cached.items()}, str(tmp), metadata={"made_by": made_by})
        accelerator.wait_for_everyone()
        cached = load_file(str(cache))  # a fresh and a resumed run train on the very same tensors
    latents, text = cached["latents"], cached["text"]
    added_ids = None
    if sdxl:
        added_ids = add_time_ids(base, h, w)

    samples_of = [np.flatnonzero(train.character_row == c) for c in range(int(train.character_row.max()) + 1)]
    stage1 = None
    if cfg.pairing in ("standardized", "generated"):
        stage1 = StandardizePipeline.from_pretrained(folder(cfg.standardizer)).to(device)
        sources = standardized_sources(train, cfg.standardized_per_character, cfg.references_seed)
        shards = run.path / "standardized"
        # the weights as loaded: the standardizer and the VAE and CLIP it runs with, wherever they came from;
        # the sampling start where it is not the canvas (before the silhouette start, the only one)
        start = {"start": cfg.standardize_start or stage1.standardizer.config.start,
                 "strength": cfg.standardize_strength or stage1.standardizer.config.strength}
        start = {} if start["start"] == "canvas" else start
        shard_origin = json.dumps({"weights": [weights_digest(m) for m in (stage1.standardizer, stage1.vae,
                                                                             stage1.image_encoder)],
                                   "sampler": StandardizePipeline.SAMPLER_REVISION, "steps": cfg.standardize_steps,
                                   "guidance": cfg.standardize_guidance, "seed": cfg.references_seed} | start,
                                  sort_keys=True)
        precompute_standardized(train, sources, shards, stage1, cfg, accelerator.process_index,
                                accelerator.num_processes, progress=main_process, made_by=shard_origin)
        accelerator.wait_for_everyone()
        standardized = load_standardized(shards, sources)
        standardized_of = [np.flatnonzero(train.character_row[sources] == c) for c in range(len(samples_of))]
    if cfg.pairing == "generated":  # the two-stage model draws each standardized target in a random scene
        drawer = PersonalizePipeline(base, image_encoder, IPAdapter.load(_adapter_file(cfg.generator), base.unet).eval())
        drawn = run.path / "generated"
        origin = json.dumps({"references": shard_origin, "adapter": weights_digest(drawer.adapter),
                             "steps": cfg.generate_steps, "guidance": cfg.generate_guidance,
                             "seed": cfg.references_seed}, sort_keys=True)
        precompute_generated(standardized, generation_prompts(train, sources, cfg.references_seed), sources, drawn,
                             drawer, cfg, accelerator.process_index, accelerator.num_processes,
                             progress=main_process, made_by=origin)
        accelerator.wait_for_everyone()
        generated = load_standardized(drawn, sources)
        stage1 = drawer = None  # one stage from here: the trained adapter reads the drawings
    with torch.no_grad():
        size = image_encoder.config.image_size  # CLIP of an all-zero *normalised* image, as sampling does
        negative = image_encoder(pixel_values=torch.zeros(1, 3, size, size, device=device),
                                 output_hidden_states=True).hidden_states[-2]

    # the training targets: every training image, or (eq. 5, and the drawn pairs) the standardized ones
    targets = sources if cfg.own_reference or cfg.pairing == "generated" else np.arange(len(train))

    def references(idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """The reference of each target in idx, float (B, 3, H, W) in [-1, 1]."""
        if cfg.pairing == "unpaired":
            return augment(train.images["image"][idx], rng, cfg.crop_scale)
        if cfg.pairing == "paired":
            picks = []
            for i in idx:
                others = samples_of[train.character_row[i]]
                others = others[others != i] if len(others) > 1 else others
                picks.append(rng.choice(others))
            return to_float(train.images["image"][np.array(picks)])
        if cfg.pairing == "standard":
            return to_float(train.images["standard_image"][idx])
        if cfg.pairing == "generated":
            return to_float(generated[np.searchsorted(sources, idx)])
        if cfg.own_reference:
            return to_float(standardized[np.searchsorted(sources, idx)])
        return to_float(standardized[np.array([rng.choice(standardized_of[train.character_row[i]]) for i in idx])])

    # 3. The adapter, its optimizer; the UNet gets the decoupled processors
    adapter = IPAdapter.for_unet(base.unet, image_encoder.config.hidden_size,
                                 None if cfg.token_grid < 0 else cfg.token_grid)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=0.01)
    start, elapsed = loop.resume(run, cfg, model=adapter, optimizer=optimizer, requested=resume)
    model = Personalizer(base.unet, adapter)
    objective, optimizer = accelerator.prepare(model, optimizer)
    noise_scheduler = training_scheduler()
    test_keys = ("image", "foreground") + (("standard_image",) if cfg.pairing == "standard" else ())  # sample sheets
    test = WorldArrays.load(data, "validation", keys=test_keys, limit=64, progress=False)
    personalize = PersonalizePipeline(base, image_encoder, adapter)
    sampler = SerialGenPipeline(stage1, personalize, cfg.pairing.value)

    # 4. Training loop: batch, references, dropout and noise all follow (seed, step)
    def training_step(step: int, report: bool) -> loop.StepResult:
        idx = batch_indices(len(targets), cfg.batch_size, step, cfg.seed, accelerator.process_index,
                            accelerator.num_processes)
        idx = targets[idx]
        rng = np.random.default_rng([cfg.seed, step, 12])
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        u = rng.random(len(idx))
        no_image = torch.from_numpy(u < cfg.drop_image + cfg.drop_both).to(device)  # [0, a + c): image dropped
        no_text = torch.from_numpy((u >= cfg.drop_image) & (u < cfg.drop_image + cfg.drop_both + cfg.drop_text))
        hidden = clip_hidden_states(image_encoder, references(idx, rng).to(device))  # (B, T, d)
        hidden = torch.where(no_image.view(-1, 1, 1), negative.expand_as(hidden), hidden)
        cond = torch.where(no_text.view(-1, 1, 1), cached["empty"].float().expand(len(idx), -1, -1), text[idx].float())
        added = None
        if sdxl:
            pooled = torch.where(no_text.view(-1, 1), cached["empty_pooled"].float().expand(len(idx), -1),
                                 cached["pooled"][idx].float())
            added = {"text_embeds": pooled.to(device), "time_ids": added_ids.to(device).repeat(len(idx), 1)}
        with accelerator.autocast():  # the Personalizer's loss, through accelerate's wrapper of it
            loss = epsilon_loss(objective, latents[idx].float().to(device),
                                {"text": cond.to(device), "hidden": hidden, "added": added}, noise_scheduler, g,
                                cfg.offset_noise)
        return loop.StepResult(loss)

    def sample(done: int, bar) -> None:
        run.save_image(f"samples_{done:06d}.png", sample_sheet(sampler, test, cfg))

    elapsed = loop.run(cfg, run, accelerator, step=training_step, wrapped=objective, optimizer=optimizer, model=adapter,
                       start=start, elapsed=elapsed, desc=f"stage2 {cfg.pairing.value}", sample=sample)

    # 5. Export the adapter in IP-Adapter's layout, with what made it
    if main_process:
        model = run.path / "model"
        adapter.save(model / ADAPTER_FILE)
        write_json(model / "training.json", run.provenance(
            data=str(data), steps=cfg.steps, pairing=cfg.pairing.value, base=describe(cfg.base),
            base_made_by=record_digest(folder(cfg.base), "t2i"),
            image_encoder=describe(cfg.image_encoder), standardizer=describe(cfg.standardizer),
            **({"generator": describe(cfg.generator)} if cfg.pairing == "generated" else {}),
            wall_time_s=round(elapsed, 1)))
        g = cfg.token_grid
        tokens = "all CLIP tokens" if g < 0 else "the CLS token alone" if g == 0 else \
            f"the CLS token and the patch tokens pooled to {g}x{g}: {1 + g * g} tokens"
        (model / "README.md").write_text(f"IP-Adapter ({tokens}) trained with `{cfg.pairing.value}` pairing; "
                                         f"load with `PersonalizePipeline.from_pretrained('{model}')`.\n")
        print(f"saved {model / ADAPTER_FILE}")
    return run.path / "model"


@torch.no_grad()
def sample_sheet(sampler, test: WorldArrays, cfg: Stage2TrainConfig, characters: int = 4, prompts: int = 4
                 ) -> np.ndarray:
    """One row per held-out character: reference, the adapter's reference (standardized, the true
    standard render for the `standard` pairing, or the reference itself), then the series from its
    scene-only prompts."""
    sampler.progress = False
    rows = []
    firsts = test.first_of_each_character()
    for k, (ref, series) in enumerate(held_out_series(test, characters, prompts)):
        truth = test.images["standard_image"][firsts[k]] if cfg.pairing == "standard" else None
        out = sampler(ref, series, standardized=truth, standardize=sampler.standardize is not None,
                      num_inference_steps=cfg.sample_steps, guidance_scale=cfg.guidance_scale, seed=cfg.seed)
        seen = out.standardized if out.standardized is not None else ref.image
        rows.append([ref.image, np.asarray(seen)] + [np.asarray(im) for im in out.images])
    return grid(rows)

