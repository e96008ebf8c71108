"""Stage I training speed: samples per second of a whole training step against one bare UNet
training step on the same batch.

The whole step is what `serialgen train stage1` runs per step with a config (default: the fifth
phase's): drawing the batch (re-composited backdrops, pose maps, the colour prior), VAE and CLIP
encoding of the references, the ReferenceNet pass, the PoseGuider, the denoising UNet reading the
reference bank, the loss, backward, the optimizer step and the EMA update. The bare step is the
floor under it: the denoising UNet alone (no bank, no pose, no CLIP context beyond a zero one) on
the same noised standard latents, forward, backward and an AdamW step over its own parameters.
Both are timed in turn, round after round, after a warm-up round; medians and the median of the
per-round ratios are printed.

    python benchmarks/stage1_train_speed.py --data data/world128 [--config configs/mini/stage1_phase5.toml]
        [--batch-size 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import os

import numpy as np
import torch
from _models import interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/world128", help="a world folder (`serialgen synth`); its training split is read")
    parser.add_argument("--config", default="configs/mini/stage1_phase5.toml")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from serialgen.data.memory import WorldArrays
    from serialgen.diffusion import epsilon_loss, latent_masks, region_weights, training_scheduler
    from serialgen.models.loading import load_image_encoder, load_vae
    from serialgen.models.standardizer import StandardizerConfig
    from serialgen.pipelines.standardize import encode_images
    from serialgen.train import stage1
    from serialgen.train.checkpoint import ema_update
    from serialgen.train.config import load_config
    from serialgen.world.backgrounds import SCENES, render_background

    if not os.path.isdir(args.data):
        raise SystemExit(f"{args.data} is not a world folder: make one with `serialgen synth --out {args.data}`")
    cfg = load_config(stage1.Stage1TrainConfig, stage1.PRESETS, "mini", args.config)
    train = WorldArrays.load(args.data, "train", keys=("image", "foreground"), limit=8 * args.batch_size,
                             per_character=("standard_image", "standard_pose_map", "standard_mask"), progress=False)
    h, w = train.images["image"].shape[1:3]
    template = stage1.template_keypoints([train.meta[i] for i in train.first_of_each_character()], w, h)
    rng = np.random.default_rng(0)
    backgrounds = np.stack([render_background(str(rng.choice(SCENES)), w, h, rng, 0.6) for _ in range(8)])
    pairs_for = stage1.PairMaker(cfg, train, template, backgrounds)
    vae, clip = load_vae(None).eval().requires_grad_(False), load_image_encoder(None).float().eval().requires_grad_(False)
    model = stage1.initial_model(cfg, StandardizerConfig(width=w, height=h, pose_channels=tuple(cfg.pose_channels),
                                                         fbdm=cfg.fbdm, rpim=cfg.rpim, template_keypoints=template,
                                                         standard_pose=cfg.standard_pose, colour_prior=cfg.colour_prior)).float()
    ema = copy.deepcopy(model).requires_grad_(False)
    objective = stage1.Stage1Objective(model, cfg.offset_noise)
    optimizer = torch.optim.AdamW(stage1.parameter_groups(model, cfg.fbdm_lr_scale, cfg.rpim_lr_scale), lr=1e-6)
    bare_unet = copy.deepcopy(model.denoiser)  # the same UNet, its own copy so neither step moves the other
    bare_optimizer = torch.optim.AdamW(bare_unet.parameters(), lr=1e-6)
    scheduler = training_scheduler()
    with torch.no_grad():
        standard = (vae.encode(stage1.to_tensor(train.characters["standard_image"])).latent_dist.mode()
                    * vae.config.scaling_factor)
    figure = latent_masks(train.characters["standard_mask"], standard.shape[-2:])
    idx = np.arange(args.batch_size)
    chars = train.character_row[idx]
    x0 = standard[chars]
    context = torch.zeros(args.batch_size, 1, model.denoiser.config.cross_attention_dim)
    print(f"{args.config}: batch {args.batch_size} at {w}x{h}; {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    def whole():
        pairs = pairs_for(idx, np.random.default_rng(1))
        batch = pairs.tensors("cpu")
        with torch.no_grad():
            latents, embeds = encode_images(vae, clip, batch["pixels"])
        loss = objective(latents, embeds, batch["background"], batch["reference_pose"], batch["target_pose"],
                         batch["keep"], x0, scheduler, torch.Generator().manual_seed(0),
                         region_weights(figure[pairs.characters], cfg.figure_weight) if cfg.figure_weight else None,
                         batch["prior"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(ema, model, cfg.ema_decay)

    def bare():
        unet = lambda x_t, t, cond: bare_unet(x_t, t, encoder_hidden_states=context).sample  # noqa: E731
        epsilon_loss(unet, x0, {}, scheduler, torch.Generator().manual_seed(0)).backward()
        bare_optimizer.step()
        bare_optimizer.zero_grad(set_to_none=True)

    times = interleaved({"whole": whole, "bare": bare}, args.repeats)
    ratios = np.array(times["whole"]) / np.array(times["bare"])
    t_whole, t_bare = np.median(times["whole"]), np.median(times["bare"])
    print(f"whole step {t_whole:.2f} s ({args.batch_size / t_whole:.2f} samples/s), bare UNet step {t_bare:.2f} s "
          f"({args.batch_size / t_bare:.2f} samples/s); ratio per round {', '.join(f'{r:.2f}' for r in ratios)}: "
          f"median {np.median(ratios):.2f}")


if __name__ == "__main__":
    main()
