"""How much of a character's look the judge can read back from a standard image, by what limits it.

    python scripts/appearance_ceiling.py --data data/world128 [--split validation] [--samples 64]
        [--weights runs/stage1-p5/model ...]

On held-out characters (one reference each, as `serialgen eval stage1` picks them) the judge's
appearance read-back (clothing and hair attributes, `evaluation.APPEARANCE`) of:
- the true standard render (the ceiling Stage I is measured against);
- the true render through the bundled VAE (encode, decode): the ceiling of any model that draws
  in that latent space at this size;
- the true render blurred (Gaussian, sigma in pixels): how much sharpness the read-back needs;
- the flat colour silhouette of the reference (the trivial baseline) at the template A-pose;
- each standardizer given (`--weights`; default the bundled one).
Each with a 95% bootstrap interval over characters, and each minus the true render paired, then
the share read right of each attribute apart (which of them the standardizer loses).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image, ImageFilter

from serialgen.data.heldout import held_out_picks, held_out_references
from serialgen.data.memory import WorldArrays
from serialgen.evaluation import APPEARANCE, Judge, bootstrap_ci
from serialgen.evaluation.judge import attribute_accuracy, per_character_accuracy
from serialgen.evaluation.stage1 import standardize
from serialgen.models.loading import load_vae
from serialgen.pipelines.standardize import StandardizePipeline
from serialgen.silhouette import colour_silhouette


@torch.no_grad()
def through_vae(vae, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """uint8 (N, H, W, 3) -> the same images encoded (the posterior's mode) and decoded."""
    out = []
    for k in range(0, len(images), batch):
        x = torch.from_numpy(images[k:k + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
        z = vae.encode(x).latent_dist.mode()
        y = vae.decode(z).sample.clamp(-1, 1)
        out.append(((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="validation", choices=("validation",),
                        help="held-out split to read (the test split is the report's alone)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--weights", action="append", default=[], help="Stage I folder (repeat; default: bundled)")
    parser.add_argument("--sigma", type=float, action="append", default=[], help="blur sigmas (default 0.5, 1, 1.5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    test = WorldArrays.load(args.data, args.split, keys=("image", "foreground"), per_character=("standard_image",),
                            limit=args.samples * 16)
    refs, truth = held_out_references(test, args.samples)
    metas = [test.meta[i] for i in test.first_of_each_character()[:args.samples]]
    assert len(held_out_picks(test, args.samples)) == len(metas)
    judge = Judge.from_pretrained()
    kinds = {"true standard render": truth, "through the VAE": through_vae(load_vae().eval(), truth)}
    for sigma in args.sigma or [0.5, 1.0, 1.5]:
        kinds[f"blurred, sigma {sigma:g}"] = np.stack([np.asarray(Image.fromarray(t).filter(
            ImageFilter.GaussianBlur(sigma))) for t in truth])
    pipe = None
    for folder in args.weights or [None]:
        pipe = StandardizePipeline.from_pretrained(folder)
        pipe.progress = False
        made = standardize(pipe, refs, 20, 2.5, args.seed)  # as `serialgen eval stage1` draws them
        kinds[f"standardized ({folder or 'bundled'})"] = np.stack([np.asarray(im) for im in made])
    w, h = pipe.size
    kinds["colour silhouette (template pose)"] = np.stack(
        [colour_silhouette(r, pipe.standardizer.config.template_keypoints, w, h) for r in refs])
    per, attributes = {}, {}
    for name, images in kinds.items():
        reads = judge.read(list(images))
        per[name] = per_character_accuracy(reads, metas, APPEARANCE)
        attributes[name] = attribute_accuracy(reads, metas, APPEARANCE)
        ci = bootstrap_ci(per[name], 1000, args.seed)
        line = f"{name}: appearance {ci['mean']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]"
        if name != "true standard render":
            d = bootstrap_ci(per[name] - per["true standard render"], 1000, args.seed)
            line += f"; minus the true render {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
        print(line, flush=True)
    print(f"({len(metas)} characters of the {args.split} split; 95% bootstrap intervals over characters)")
    width = max(map(len, kinds))
    print("\nper attribute (share of the characters that have it read right):")
    print(f"{'':{width}}  " + "  ".join(f"{a:>11}" for a in APPEARANCE))
    for name, acc in attributes.items():
        print(f"{name:{width}}  " + "  ".join(f"{acc.get(a, float('nan')):>11.3f}" for a in APPEARANCE))


if __name__ == "__main__":
    main()
