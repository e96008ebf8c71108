"""Stage I speed: `StandardizePipeline` wall time as a ratio to the bare denoising loop.

The bare loop is the physical floor of the sampler: 20 DDIM steps of the denoising UNet with
the reference-concatenated attention (guidance halves batched in one call per step), with the
ReferenceNet bank, pose features and initial noise already made. The pipeline adds what a user
pays for: preparing the reference, VAE and CLIP encoding, one ReferenceNet pass, the pose
guider, scheduler steps and decoding. Both are measured in this one run. Goal: <= 1.10.

    python benchmarks/standardize_speed.py [--steps 20] [--repeats 3] [--random]
"""

from __future__ import annotations

import argparse
import os

import torch
from _models import standardize_pipeline, timed, world_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=2.5)
    parser.add_argument("--random", action="store_true", help="random mini weights even if bundled ones exist")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    pipe, source = standardize_pipeline(args.random)
    pipe.progress = False
    reference, standard_pose = world_reference()
    print(f"{source}; {args.steps} DDIM steps, guidance {args.guidance}; {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs")

    def full():
        pipe(reference, num_inference_steps=args.steps, guidance_scale=args.guidance,
             seed=0, target_pose=standard_pose)

    # the bare loop's inputs, made once outside the timing
    import numpy as np

    from serialgen.pipelines.standardize import to_tensor

    model = pipe.standardizer
    latents, embeds = pipe.encode_images(to_tensor(reference.image[None]))
    background = 1.0 - torch.from_numpy(reference.mask[None, None]).float()
    bank = model.encode_reference(latents, embeds, background, to_tensor(reference.pose_map[None]))
    bank.keep = torch.tensor([False, True])
    pose = model.pose_features(to_tensor(standard_pose[None])).expand(2, -1, -1, -1)
    cond = {"reference": bank, "pose": pose, "image": torch.cat([torch.zeros_like(embeds), embeds])}
    x = torch.randn(2, *latents.shape[1:])
    timesteps = np.linspace(999, 0, args.steps).round().astype(int)

    def bare():
        for t in timesteps:
            model(x, torch.full((2,), int(t)), cond)

    t_full, t_bare = timed(full, args.repeats), timed(bare, args.repeats)
    print(f"pipeline {t_full:.3f} s, bare loop {t_bare:.3f} s ({t_bare / args.steps * 1000:.1f} ms per UNet call), "
          f"ratio {t_full / t_bare:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
