"""Serial pipeline speed: a series of 8 prompts in one call vs eight single-prompt calls.

One call standardizes the reference once, encodes it once and generates the 8 prompts in one
batch (guidance halves in the same UNet call). Eight independent calls pay standardization,
encoding and a batch-of-one denoising loop eight times. Goal: series / independent <= 0.5.

Also reported: the series call as a ratio to its bare denoising loops, the two samplers' UNet
calls and nothing else: Stage I's steps x one standardizer call on the guided batch of 2 (with
the ReferenceNet bank made beforehand) and Stage II's steps x one UNet call on the 16-row guided
batch. The rest is itemised: the VAE decodes (the standardized image and the series) and what is
left (VAE and CLIP encoding, the ReferenceNet pass, prompts, scheduler steps, Python). The series
and the loops are timed in turn, round after round; the median of the per-round ratios is
reported. Goal: series / loops <= 1.15.

    python benchmarks/series_speed.py [--prompts 8] [--steps 20] [--repeats 5] [--random]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from _models import interleaved, personalize_pipeline, standardize_loop, standardize_pipeline, timed, world_reference

SCENES = ["waving, front view, smiling, on a beach", "running, side view, in a forest",
          "sitting, three-quarter view, looking sad, in a room", "jumping, front view, under a night sky",
          "kicking, side view, looking angry, on a city street", "dancing, back view, in the snow",
          "pointing, three-quarter view, in a desert", "walking, front view, underwater"]


def main() -> None:
    from serialgen.pipelines.serial import SerialGenPipeline

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--random", action="store_true", help="random mini weights even if bundled ones exist")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    stage1, source1 = standardize_pipeline(args.random)
    stage2, source2 = personalize_pipeline(args.random)
    serial = SerialGenPipeline(stage1, stage2)
    serial.progress = False
    reference = world_reference()
    prompts = [f"a character, {SCENES[k % len(SCENES)]}, full body shot" for k in range(args.prompts)]
    print(f"Stage I: {source1}; Stage II: {source2}; {args.prompts} prompts, {args.steps} steps; "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    def series():
        serial(reference, prompts, num_inference_steps=args.steps, standardize_steps=args.steps,
               batch_size=args.prompts)

    def independent():
        for k, p in enumerate(prompts):
            serial(reference, [p], num_inference_steps=args.steps, standardize_steps=args.steps, seed=k)

    unet = stage2.unet
    tokens, negative = stage2.image_tokens(reference.image)
    n = 2 * args.prompts
    text, _, _, _ = stage2._encode_prompts(prompts, "")
    text = torch.cat([text, text])
    ip = torch.cat([negative.expand(args.prompts, -1, -1), tokens.expand(args.prompts, -1, -1)])
    h, w = stage2.default_size()[1] // 8, stage2.default_size()[0] // 8
    x = torch.randn(n, unet.config.in_channels, h, w)
    timesteps = np.linspace(999, 0, args.steps).round().astype(int)

    def bare():
        for t in timesteps:
            unet(x, int(t), encoder_hidden_states=text, cross_attention_kwargs={"ip_tokens": ip})

    stage1_loop = standardize_loop(stage1, reference, args.steps)
    vae1, vae2 = stage1.vae, stage2.base.vae
    z1, z2 = torch.randn(1, 4, h, w), torch.randn(args.prompts, 4, h, w)

    def decodes():
        vae1.decode(z1 / vae1.config.scaling_factor)
        vae2.decode(z2 / vae2.config.scaling_factor)

    times = interleaved({"series": series, "stage1": stage1_loop, "stage2": bare, "decode": decodes}, args.repeats)
    t = {k: np.array(v) for k, v in times.items()}
    ratios = t["series"] / (t["stage1"] + t["stage2"])
    m = {k: float(np.median(v)) for k, v in t.items()}
    t_independent = timed(independent, max(1, min(2, args.repeats - 1)))
    print(f"series of {args.prompts}: {m['series']:.2f} s; {args.prompts} independent calls: {t_independent:.2f} s; "
          f"ratio {m['series'] / t_independent:.3f} (goal <= 0.5)")
    rest = m["series"] - m["stage1"] - m["stage2"] - m["decode"]
    print(f"bare loops: Stage I {m['stage1']:.2f} s ({args.steps} x one standardizer call on 2 rows), Stage II "
          f"{m['stage2']:.2f} s ({args.steps} x one UNet call on {n} rows); VAE decodes {m['decode']:.2f} s; "
          f"the rest {rest:.2f} s")
    print(f"series / bare loops per round {', '.join(f'{r:.3f}' for r in ratios)}: median {np.median(ratios):.3f} "
          f"(goal <= 1.15); series / Stage II loop alone {np.median(t['series'] / t['stage2']):.3f}")


if __name__ == "__main__":
    main()
