"""The `serialgen` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line that says what to do."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def _writable_dir(path: Path) -> None:
    """Create `path` if needed and prove we can write there, before any work starts."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file; give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"cannot write to --out {path} ({error.strerror or error}); choose a writable directory") from None


def _synth(args) -> int:
    from .data.shards import SynthSpec, parse_size, synthesize

    prog = "serialgen synth"
    try:
        width, height = parse_size(args.size)
        spec = SynthSpec(args.characters, args.poses_per_character, width, height, args.seed, args.samples_per_shard)
        spec.validate()
        if args.workers < 1:
            raise ValueError("--workers must be at least 1")
        if args.num_shards < 1:
            raise ValueError("--num-shards must be at least 1")
        if not 0 <= args.shard_index < args.num_shards:
            raise ValueError(f"--shard-index {args.shard_index} is out of range for --num-shards {args.num_shards}; "
                             f"use 0..{args.num_shards - 1}")
        _writable_dir(Path(args.out))
    except ValueError as error:
        return _fail(prog, str(error))
    if args.characters < 5:
        print(f"{prog}: note: no held-out characters (every fifth id is the test split); use --characters 5 or more "
              "for a test split", file=sys.stderr)
    try:
        counts = synthesize(spec, Path(args.out), args.workers, args.num_shards, args.shard_index,
                            show_progress=not args.quiet)
    except (ValueError, RuntimeError) as error:
        return _fail(prog, str(error))
    print(f"{counts['samples']} pairs in {counts['written']} new shards under {args.out} "
          f"({counts['skipped']} of {counts['shards']} shards were already complete)")
    return 0


def _sheet(args) -> int:
    from .sheet import render_sheet

    prog = "serialgen sheet"
    if args.characters < 1 or args.poses < 1:
        return _fail(prog, "--characters and --poses must be at least 1")
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        return _fail(prog, f"--out {out} must end in .png or .jpg")
    try:
        _writable_dir(out.parent if str(out.parent) else Path("."))
        sheet = render_sheet(args.data, args.characters, args.poses, args.tile_height)
    except (ValueError, FileNotFoundError) as error:
        return _fail(prog, str(error))
    tmp = out.with_name(out.name + ".tmp" + out.suffix)
    sheet.save(tmp)
    os.replace(tmp, out)
    print(f"wrote {out} ({sheet.width}x{sheet.height})")
    return 0


def _standardize(args) -> int:
    prog = "serialgen standardize"
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        return _fail(prog, f"--out {out} must end in .png, .jpg or .webp")
    if args.steps < 1:
        return _fail(prog, f"--steps must be at least 1, got {args.steps}")
    try:
        _writable_dir(out.parent if str(out.parent) else Path("."))
        import torch

        from .pipelines.standardize import StandardizePipeline
        from .preprocess import load_image

        load_image(args.image)  # fail on a bad file before loading any model
        pipe = StandardizePipeline.from_pretrained(args.weights, allow_pickle=args.allow_pickle)
        result = pipe(args.image, num_inference_steps=args.steps, guidance_scale=args.guidance,
                      generator=torch.Generator().manual_seed(args.seed), use_pose=not args.no_pose)
    except (ValueError, FileNotFoundError, ImportError) as error:
        return _fail(prog, str(error))
    for note in result.references[0].notes:
        print(f"note: {note}")
    tmp = out.with_name(out.name + ".tmp" + out.suffix)
    result.images[0].save(tmp)
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


def _read_prompts(args) -> list[str]:
    prompts = [p.strip() for p in args.prompt]
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise ValueError(f"--prompts-file {path} does not exist")
        prompts += [line.strip() for line in path.read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    if any(not p for p in prompts):
        raise ValueError("a --prompt is empty: give each scene some words")
    if not prompts:
        raise ValueError("give at least one --prompt or a --prompts-file")
    return prompts


def _generate(args) -> int:
    import json

    prog = "serialgen generate"
    out = Path(args.out)
    try:
        if args.reference is None and args.standardized is None:
            raise ValueError("give --reference IMAGE (or --standardized IMAGE, a reference standardized earlier)")
        if args.one_stage and args.standardized:
            raise ValueError("--one-stage and --standardized exclude each other: the first skips standardization, the "
                             "second gives its result")
        if args.steps < 1 or args.batch_size < 1:
            raise ValueError("--steps and --batch-size must be at least 1")
        prompts = _read_prompts(args)
        _writable_dir(out)
        from .preprocess import load_image

        for image in (args.reference, args.standardized):
            if image is not None:
                load_image(image)  # fail on a bad file before loading any model
        from .pipelines.serial import SerialGenPipeline
        from .sheet import series_sheet

        pipe = SerialGenPipeline.from_pretrained(standardizer=args.standardizer, adapter=args.adapter, base=args.base,
                                                 image_encoder=args.image_encoder,
                                                 one_stage=args.one_stage or args.standardized is not None,
                                                 allow_pickle=args.allow_pickle)
        result = pipe(args.reference, prompts, standardized=args.standardized, standardize=not args.one_stage,
                      num_inference_steps=args.steps, guidance_scale=args.guidance, scale=args.scale, seed=args.seed,
                      batch_size=args.batch_size, use_pose=not args.no_pose)
    except (ValueError, FileNotFoundError, ImportError) as error:
        return _fail(prog, str(error))
    for note in result.notes:
        print(f"note: {note}")

    def save(image, name: str) -> Path:
        path = out / name
        tmp = path.with_name(path.stem + ".tmp.png")
        image.save(tmp)
        os.replace(tmp, path)
        return path

    digits = max(2, len(str(len(prompts))))
    files = [save(im, f"{k + 1:0{digits}d}.png").name for k, im in enumerate(result.images)]
    if result.standardized is not None:
        save(result.standardized, "standardized.png")
    from PIL import Image

    shown = Image.fromarray(result.reference.image) if result.reference is not None else load_image(args.standardized)
    save(series_sheet(shown, result.standardized, result.images, prompts), "sheet.png")
    record = {"reference": args.reference, "standardized": args.standardized, "one_stage": args.one_stage,
              "prompts": prompts, "files": files, "seed": args.seed, "steps": args.steps, "guidance": args.guidance,
              "scale": args.scale, "notes": result.notes}
    tmp = out / "series.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out / "series.json")
    print(f"wrote {len(files)} images, sheet.png and series.json to {out}")
    return 0


TRAINERS = {
    "vae": ("serialgen.train.vae", "the VAE (diffusers AutoencoderKL) on renders"),
    "clip": ("serialgen.train.clip", "CLIP (transformers CLIPModel) on (render, caption) pairs, with its tokenizer"),
    "t2i": ("serialgen.train.t2i", "the text-to-image base UNet on VAE latents and CLIP text states"),
    "judge": ("serialgen.train.judge", "the evaluator: a second CLIP on a disjoint world, with attribute probes"),
    "stage1": ("serialgen.train.stage1", "the Stage I standardizer (ReferenceNet + denoising UNet, FBDM, RPIM)"),
    "stage2": ("serialgen.train.stage2", "the Stage II image adapter (IP-Adapter, all CLIP tokens) under --pairing"),
}


def _train(args) -> int:
    import importlib

    prog = f"serialgen train {args.model}"
    if (args.no_fbdm or args.no_rpim) and args.model != "stage1":
        return _fail(prog, "--no-fbdm and --no-rpim are Stage I ablations: use them with `serialgen train stage1`")
    if args.pairing is not None and args.model != "stage2":
        return _fail(prog, "--pairing chooses Stage II training pairs: use it with `serialgen train stage2`")
    data = Path(args.data)
    if not (data / "train").is_dir():
        return _fail(prog, f"--data {data} has no train/ shards; make them with `serialgen synth --out {data} ...`")
    try:
        _writable_dir(Path(args.out))
        return importlib.import_module(TRAINERS[args.model][0]).main(args)
    except (ValueError, FileNotFoundError) as error:
        return _fail(prog, str(error))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="serialgen", description="SerialGen: one character, drawn consistently in any number of scenes.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser(
        "synth", help="render the procedural 3D character world to WebDataset shards",
        description="Render (non-standard, standard) image pairs of procedural 3D characters into WebDataset tar "
                    "shards under OUT/train and OUT/test (characters split 80/20 by id). Reruns skip finished "
                    "shards; a killed run leaves no half-written shard. Same arguments give byte-identical shards "
                    "whatever --workers. To fan out over a cluster, run the same command with --num-shards N and "
                    "--shard-index 0..N-1 (e.g. $SLURM_ARRAY_TASK_ID) against one shared --out.",
    )
    p.add_argument("--out", required=True, help="dataset directory (created if missing)")
    p.add_argument("--characters", type=int, required=True, help="number of characters (ids 0..N-1)")
    p.add_argument("--poses-per-character", type=int, required=True, help="non-standard samples per character")
    p.add_argument("--size", default="256x384", help="WIDTHxHEIGHT, 2:3, multiples of 8 (default 256x384)")
    p.add_argument("--seed", type=int, default=0, help="world seed: characters and samples follow from it (default 0)")
    p.add_argument("--workers", type=int, default=1, help="parallel render processes on this machine (default 1)")
    p.add_argument("--samples-per-shard", type=int, default=128, help="pairs per tar shard (default 128)")
    p.add_argument("--num-shards", type=int, default=1, help="split the work into this many parts (default 1)")
    p.add_argument("--shard-index", type=int, default=0, help="which part this process writes, 0..N-1 (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_synth)

    p = sub.add_parser(
        "sheet", help="draw a contact sheet of a synthesized dataset",
        description="Draw one row per character: its standard image, then non-standard samples with their "
                    "foreground masks and pose maps.",
    )
    p.add_argument("data", help="dataset directory made by `serialgen synth`")
    p.add_argument("--out", required=True, help="output image (.png or .jpg)")
    p.add_argument("--characters", type=int, default=6, help="rows (default 6)")
    p.add_argument("--poses", type=int, default=3, help="samples per row (default 3)")
    p.add_argument("--tile-height", type=int, default=192, help="pixel height of each tile (default 192)")
    p.set_defaults(run=_sheet)

    p = sub.add_parser(
        "train", help="train a model on a synthesized dataset",
        description="Train one model: " + "; ".join(f"{k}: {v}" for k, v in TRAINERS.items()) + ". Runs on "
                    "accelerate (`accelerate launch -m serialgen.cli train ...` spreads it over GPUs). Checkpoints "
                    "go to OUT/checkpoint every few hundred steps (atomically); --resume continues exactly. The "
                    "final EMA weights are saved to OUT/model with training.json (command, config, data, scores).",
    )
    p.add_argument("model", choices=sorted(TRAINERS), help="what to train")
    p.add_argument("--data", required=True, help="dataset directory made by `serialgen synth`")
    p.add_argument("--out", required=True, help="run directory: checkpoint/, samples/, log.jsonl, model/")
    p.add_argument("--config", help="TOML file overriding the training config's defaults")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--no-fbdm", action="store_true", help="stage1 only: without foreground-background distinction (ablation)")
    p.add_argument("--no-rpim", action="store_true", help="stage1 only: without reference pose injection (ablation)")
    p.add_argument("--pairing", choices=("standardized", "paired", "unpaired"),
                   help="stage2 only: reference of each training image: its standardized form (SerialGen, default), "
                        "another image of the same character (paired one-stage), or itself cropped and flipped "
                        "(unpaired one-stage)")
    p.set_defaults(run=_train)

    p = sub.add_parser(
        "standardize", help="standardize a reference image (Stage I)",
        description="Redraw the character of IMAGE in the standard form: A-pose, front view, white background, "
                    "neutral face, face at a fixed place, 2:3. Real photos go through person detection (MediaPipe) "
                    "for the mask and pose; with no --weights the bundled mini standardizer runs, which was trained "
                    "on the procedural character world only.",
    )
    p.add_argument("image", help="reference image (any format Pillow opens)")
    p.add_argument("--out", required=True, help="output image (.png or .jpg)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    p.add_argument("--guidance", type=float, default=2.5, help="classifier-free guidance scale (default 2.5; 1 = off)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--weights", help="saved standardizer folder (default: the bundled mini one)")
    p.add_argument("--no-pose", action="store_true", help="skip person detection: no mask or pose guidance")
    p.add_argument("--allow-pickle", action="store_true", help="load .bin/.ckpt weights (pickles can run code)")
    p.set_defaults(run=_standardize)

    p = sub.add_parser(
        "generate", help="draw one character in a series of scenes (Stage I, then Stage II)",
        description="Standardize the reference once (A-pose, front view, white background), then draw the character "
                    "once per prompt. Writes OUT/01.png, 02.png, ..., OUT/standardized.png, OUT/sheet.png (reference, "
                    "standardized, series) and OUT/series.json (prompts, seeds, settings). With no weight options the "
                    "bundled mini models run; they know only the procedural character world, so describe scenes in "
                    "its words, e.g. \"a character, waving, side view, smiling, on a beach, full body shot\".",
    )
    p.add_argument("--reference", help="reference image of the character (any format Pillow opens)")
    p.add_argument("--prompt", action="append", default=[], help="a scene to draw; repeat for a series")
    p.add_argument("--prompts-file", help="text file with one prompt per line (blank lines and # comments skipped)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed; image i uses noise from (seed, i) (default 0)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps per image (default 20)")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (default 5)")
    p.add_argument("--scale", type=float, default=1.0, help="image adapter scale: 0 = text only (default 1)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default 8)")
    p.add_argument("--standardized", help="an already standardized reference: skip Stage I")
    p.add_argument("--one-stage", action="store_true", help="skip standardization: the adapter sees the reference as is")
    p.add_argument("--no-pose", action="store_true", help="Stage I without person detection (no mask or pose guidance)")
    p.add_argument("--standardizer", help="Stage I weights folder (default: bundled mini)")
    p.add_argument("--adapter", help="IP-Adapter .safetensors file or folder (default: bundled mini)")
    p.add_argument("--base", help="Stable Diffusion 1.5 / SDXL pipeline folder (default: bundled mini text-to-image)")
    p.add_argument("--image-encoder", help="CLIP vision folder the adapter was trained with (default: bundled mini)")
    p.add_argument("--allow-pickle", action="store_true", help="load .bin/.ckpt weights (pickles can run code)")
    p.set_defaults(run=_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
