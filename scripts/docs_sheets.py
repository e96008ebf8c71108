"""Draw the pictures in docs/ from the bundled mini weights, for a person to look at.

    python scripts/docs_sheets.py vae      # docs/vae_recon.png: held-out renders over their reconstructions
    python scripts/docs_sheets.py t2i      # docs/t2i_samples.png: held-out renders over samples from their captions
    python scripts/docs_sheets.py stage1   # docs/stage1_heldout.png (reference / ours / truth) and docs/stage1_real.png
    python scripts/docs_sheets.py series   # docs/series_*.png: serialgen generate on held-out characters

Held-out characters come from a world of another seed (3), which no model has seen.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REAL = ROOT / "tests" / "assets" / "images"


def held_out(count: int, poses=(0,)):
    from serialgen.world.generator import CharacterWorld

    world = CharacterWorld(128, 192, seed=3)
    return [world.sample(c, p) for c in range(count) for p in poses]


def save(image: np.ndarray | Image.Image, name: str) -> None:
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    image.save(DOCS / name)
    print(f"wrote docs/{name} ({image.width}x{image.height})")


def vae_sheet() -> None:
    from serialgen.data.memory import to_float, to_uint8
    from serialgen.metrics import psnr
    from serialgen.models.loading import load_vae
    from serialgen.sheet import grid

    vae = load_vae().float().eval()
    images = np.stack([s["image"] for s in held_out(8)] + [s["standard_image"] for s in held_out(4)])
    with torch.no_grad():
        recon = to_uint8(vae.decode(vae.encode(to_float(images)).latent_dist.mode()).sample)
    print(f"PSNR {psnr(list(recon), images).mean():.2f} dB on these {len(images)} images")
    save(grid([list(images[:6]), list(recon[:6]), list(images[6:]), list(recon[6:])]), "vae_recon.png")


def t2i_sheet() -> None:
    from serialgen.models.loading import load_base
    from serialgen.sheet import grid

    base = load_base()
    samples = held_out(8)
    out = base([s["meta"]["caption"] for s in samples], height=192, width=128, num_inference_steps=20,
               guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="np").images
    made = list((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
    save(grid([[s["image"] for s in samples], made]), "t2i_samples.png")
    for s in samples:
        print(s["meta"]["caption"])


def stage1_sheets() -> None:
    from serialgen.metrics import psnr, ssim
    from serialgen.pipelines import StandardizePipeline
    from serialgen.preprocess import Reference
    from serialgen.sheet import grid

    pipe = StandardizePipeline.from_pretrained()
    pipe.progress = False
    samples = held_out(8)
    refs = [Reference.from_world(s["image"], s["foreground"], s["keypoints"]) for s in samples]
    out = pipe(refs, seed=0).images
    truth = np.stack([s["standard_image"] for s in samples])
    print(f"held-out: PSNR {psnr(out, truth).mean():.2f} dB, SSIM {ssim(out, truth).mean():.3f}")
    save(grid([[r.image for r in refs], [np.asarray(o) for o in out], list(truth)]), "stage1_heldout.png")
    rows = []
    for path in sorted(REAL.glob("*.png")):
        result = pipe(str(path), seed=0)
        ref = result.references[0]
        rows.append([ref.image, np.asarray(result.images[0])])
        print(f"{path.name}: {'; '.join(ref.notes) or 'ok'}")
    save(grid([[r[0] for r in rows], [r[1] for r in rows]]), "stage1_real.png")


def series_sheets() -> None:
    from serialgen.pipelines import SerialGenPipeline
    from serialgen.preprocess import Reference
    from serialgen.sheet import series_sheet

    pipe = SerialGenPipeline.from_pretrained()
    prompts = ["a character, waving, front view, smiling, on a beach, full body shot",
               "a character, running, side view, in a forest, full body shot",
               "a character, sitting, three-quarter view, looking sad, in a room, full body shot",
               "a character, jumping, front view, under a night sky, full body shot",
               "a character, kicking, side view, looking angry, on a city street, full body shot",
               "a character, walking, back view, in the snow, full body shot",
               "a character, pointing, three-quarter view, in a desert, waist-up shot",
               "a character, dancing, front view, with eyes closed, in a park, full body shot"]
    for k, s in enumerate(held_out(2, poses=(3,))):
        ref = Reference.from_world(s["image"], s["foreground"], s["keypoints"])
        out = pipe(ref, prompts, seed=0)
        save(series_sheet(Image.fromarray(ref.image), out.standardized, out.images, prompts), f"series_{k}.png")


if __name__ == "__main__":
    jobs = {"vae": vae_sheet, "t2i": t2i_sheet, "stage1": stage1_sheets, "series": series_sheets}
    for name in sys.argv[1:] or list(jobs):
        jobs[name]()
