"""Stage I speed: `StandardizePipeline` wall time as a ratio to the bare denoising loop.

The bare loop is the physical floor of the sampler: 20 DDIM steps of the denoising UNet with
the reference-concatenated attention (guidance halves batched in one call per step), with the
ReferenceNet bank, pose features and initial noise already made. The pipeline adds what a user
pays for: preparing the reference, VAE and CLIP encoding, one ReferenceNet pass, the target
pose (the standard-pose estimator, the colour prior's silhouette where the model reads one), the
pose guider, scheduler steps and decoding. Both are measured in this one run. Goal: <= 1.10.

The two are timed in turn, round after round (the median of 5 per-round ratios is reported), so a
drift of the machine's speed falls on both. The work outside the loop is then itemised, each part
timed alone the same way: the reference's VAE and CLIP encoding, the ReferenceNet pass, the target
pose (estimator, pose map, colour silhouette, PoseGuider) and the VAE decode. Their sum over the
bare loop is the ratio a pipeline with no overhead of its own would reach.

    python benchmarks/standardize_speed.py [--steps 20] [--repeats 5] [--random]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from _models import (
    interleaved,
    reference_inputs,
    standardize_loop,
    standardize_pipeline,
    target_pose_features,
    world_reference,
)


def fixed_parts(pipe, reference) -> dict:
    """-> callables for the work the pipeline does once per call, outside its denoising loop."""
    inputs = reference_inputs(pipe, reference)
    final = torch.randn_like(inputs["latents"])
    return {"VAE and CLIP encoding": lambda: pipe.encode_images(inputs["pixels"]),
            "ReferenceNet": lambda: pipe.standardizer.encode_reference(inputs["latents"], inputs["embeds"],
                                                                      inputs["background"], inputs["ref_pose"]),
            "target pose": lambda: target_pose_features(pipe, reference),
            "VAE decode": lambda: pipe.vae.decode(final / pipe.vae.config.scaling_factor)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--guidance", type=float, default=2.5)
    parser.add_argument("--random", action="store_true", help="random mini weights even if bundled ones exist")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    pipe, source = standardize_pipeline(args.random)
    pipe.progress = False
    reference = world_reference()
    print(f"{source}; {args.steps} DDIM steps, guidance {args.guidance}; {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs")

    def full():
        pipe(reference, num_inference_steps=args.steps, guidance_scale=args.guidance,
             seed=0)

    bare = standardize_loop(pipe, reference, args.steps)
    times = interleaved({"pipeline": full, "bare": bare}, args.repeats)
    ratios = np.array(times["pipeline"]) / np.array(times["bare"])
    t_full, t_bare = np.median(times["pipeline"]), np.median(times["bare"])
    print(f"pipeline {t_full:.3f} s, bare loop {t_bare:.3f} s ({t_bare / args.steps * 1000:.1f} ms per UNet call); "
          f"ratio per round {', '.join(f'{r:.3f}' for r in ratios)}: median {np.median(ratios):.3f} (goal <= 1.10)")
    parts = {name: float(np.median(t)) for name, t in interleaved(fixed_parts(pipe, reference), args.repeats).items()}
    fixed = sum(parts.values())
    print(f"outside the loop: {', '.join(f'{name} {t * 1000:.0f} ms' for name, t in parts.items())}; "
          f"sum {fixed * 1000:.0f} ms, the pipeline's other work {(t_full - t_bare - fixed) * 1000:.0f} ms; "
          f"(bare loop + these parts) / bare loop {(t_bare + fixed) / t_bare:.3f}")


if __name__ == "__main__":
    main()
