"""The `serialgen` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from .atomic import save_image, write_json
from .train import TRAINERS
from .train.config import PAIRINGS


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line that says what to do."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def _model_error(error: Exception) -> str | None:
    """A one-line message for a weights file that cannot be read (truncated, corrupt, not
    safetensors), or None for other errors."""
    kind = type(error).__name__
    unreadable = "safetensors" in str(error).lower() and isinstance(error, (OSError, RuntimeError))
    if kind == "SafetensorError" or unreadable:
        return f"a weights file is truncated or corrupt ({str(error).splitlines()[0]}): re-download or re-train it"
    if isinstance(error, (OSError, RuntimeError)) and ("Error(s) in loading state_dict" in str(error)
                                                       or "Unable to load weights" in str(error)):
        return f"weights that do not fit this model or cannot be read: {str(error).splitlines()[0]}"
    return None


def _same_file(a: str | Path, b: str | Path) -> bool:
    a, b = Path(a), Path(b)
    return a.exists() and b.exists() and a.resolve() == b.resolve()


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
        raise ValueError(f"cannot write to --out {path} ({error.strerror or error}); "
                         "choose a writable directory") from None


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
        if args.ray is not None and args.num_shards > 1:
            raise ValueError("--ray runs every shard as a Ray task: leave --num-shards and --shard-index out")
        if args.ray:
            from .data.shards import reachable

            reachable(args.ray)  # in seconds, before anything is written
        _writable_dir(Path(args.out))
    except ValueError as error:
        return _fail(prog, str(error))
    if args.characters < 5:
        print(f"{prog}: note: no held-out characters (every fifth id is held out, the first half of them for "
              "validation, the rest for test); use --characters 10 or more for both", file=sys.stderr)
    try:
        if args.ray is not None:
            from .data.shards import synthesize_ray

            counts = synthesize_ray(spec, Path(args.out), args.ray or None, num_cpus=args.workers,
                                    show_progress=not args.quiet)
        else:
            counts = synthesize(spec, Path(args.out), args.workers, args.num_shards, args.shard_index,
                                show_progress=not args.quiet)
    except (ValueError, RuntimeError, ImportError, ConnectionError) as error:
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
    save_image(out, sheet)
    print(f"wrote {out} ({sheet.width}x{sheet.height})")
    return 0


def _standardize(args) -> int:
    prog = "serialgen standardize"
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        return _fail(prog, f"--out {out} must end in .png, .jpg or .webp")
    if out.is_dir():
        return _fail(prog, f"--out {out} is a directory: give the path of the image to write, "
                           f"e.g. {out / 'standardized.png'}")
    if _same_file(out, args.image):
        return _fail(prog, f"--out {out} is the input image: choose another path, the input is never replaced")
    try:
        _writable_dir(out.parent if str(out.parent) else Path("."))
        from .pipelines.standardize import StandardizePipeline
        from .preprocess import load_image

        load_image(args.image)  # fail on a bad file before loading any model
        _device_options(args)
        pipe = _placed(StandardizePipeline.from_pretrained(args.weights, allow_pickle=args.allow_pickle), args)
        result = pipe(args.image, num_inference_steps=args.steps, guidance_scale=args.guidance,
                      seed=args.seed, use_pose=not args.no_pose,
                      start=args.start, strength=args.strength)
    except (ValueError, FileNotFoundError, ImportError) as error:
        return _fail(prog, str(error))
    except Exception as error:  # noqa: BLE001  (anything else is re-raised)
        if (message := _model_error(error)) is None:
            raise
        return _fail(prog, message)
    for note in result.references[0].notes:
        print(f"note: {note}")
    save_image(out, result.images[0])
    print(f"wrote {out}")
    return 0


def _read_prompts(args) -> list[str]:
    prompts = [p.strip() for p in args.prompt]
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise ValueError(f"--prompts-file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"--prompts-file {path} is not UTF-8 text: save it as UTF-8") from None
        prompts += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if any(not p for p in prompts):
        raise ValueError("a --prompt is empty: give each scene some words")
    if not prompts:
        raise ValueError("give at least one --prompt or a --prompts-file")
    return prompts


def _generate(args) -> int:
    prog = "serialgen generate"
    out = Path(args.out)
    created = not out.exists()
    try:
        if args.embedding is not None and args.method != "beyond-inserting":
            raise ValueError("--embedding is an identity for the beyond-inserting method: "
                             "add --method beyond-inserting")
        if args.method == "beyond-inserting" and (args.pipeline or args.standardizer or args.adapter
                                                  or args.image_encoder or args.standardized or args.one_stage):
            raise ValueError("beyond-inserting runs the text-to-image base alone: --pipeline, --standardizer, "
                             "--adapter, --image-encoder, --standardized and --one-stage do not apply (give --base)")
        if (args.reference is None and args.standardized is None and args.method != "consistent-attention"
                and args.embedding is None):
            raise ValueError("give --reference IMAGE (or --standardized IMAGE, a reference standardized earlier"
                             + (", or --embedding EMB.safetensors" if args.method == "beyond-inserting" else "") + ")")
        if args.method != "layout-retouch" and (args.switch is not None or args.retouch_strength is not None):
            raise ValueError("--switch and --retouch-strength are layout-retouch options: add --method layout-retouch")
        if args.one_stage and args.standardized:
            raise ValueError("--one-stage and --standardized exclude each other: the first skips standardization, the "
                             "second gives its result")
        if args.steps < 1 or args.batch_size < 1 or args.identity_images < 1:
            raise ValueError("--steps, --batch-size and --identity-images must be at least 1")
        prompts = _read_prompts(args)
        from .pipelines.serial import SERIES_FILES, series_names

        writes = [out / name for name in series_names(len(prompts)) + list(SERIES_FILES)]
        for flag, image in (("--reference", args.reference), ("--standardized", args.standardized)):
            if image is not None and any(_same_file(image, w) for w in writes):
                raise ValueError(f"{flag} {image} would be overwritten by the series written to --out {out}: choose "
                                 "another --out, inputs are never replaced")
        from .preprocess import load_image

        for image in (args.reference, args.standardized):
            if image is not None:
                load_image(image)  # fail on a bad file before loading any model
        _writable_dir(out)
        from .pipelines.serial import SerialGenPipeline

        _device_options(args)  # refused before any model loads
        from .pipelines import BeyondInsertingPipeline, compose_method

        if args.method == "beyond-inserting":
            pipe = _placed(BeyondInsertingPipeline.from_pretrained(args.base, allow_pickle=args.allow_pickle), args)
        else:
            serial = _placed(SerialGenPipeline.from_pretrained(
                args.pipeline, standardizer=args.standardizer, adapter=args.adapter, base=args.base,
                image_encoder=args.image_encoder, one_stage=True if args.one_stage or args.standardized else None,
                allow_pickle=args.allow_pickle), args)
            pipe = compose_method(serial, args.method, **{
                "serialgen": {}, "consistent-attention": {"identity_images": args.identity_images},
                "layout-retouch": {k: v for k, v in (("switch", args.switch),
                                                     ("retouch_strength", args.retouch_strength)) if v is not None}
            }[args.method])
        options = {} if args.reference is None and args.standardized is None else {"use_pose": not args.no_pose}
        if args.embedding is not None:
            from .models.identity_embedding import IdentityEmbedding

            options["embedding"] = IdentityEmbedding.load(args.embedding, pipe.serial.personalize.unet)
        result = pipe(args.reference, prompts, standardized=args.standardized,
                      num_inference_steps=args.steps, guidance_scale=args.guidance, scale=args.scale, seed=args.seed,
                      batch_size=args.batch_size, **options)
    except Exception as error:  # noqa: BLE001  (anything else is re-raised)
        message = str(error) if isinstance(error, (ValueError, FileNotFoundError, ImportError)) else _model_error(error)
        if message is None:
            raise
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed run leaves no empty folder behind
        return _fail(prog, message)
    for note in result.notes:
        print(f"note: {note}")

    shown = load_image(args.standardized) if result.reference is None and args.standardized else None
    files = result.save(out, prompts, {"method": args.method, "reference": args.reference,
                                       "standardized": args.standardized,
                                       "one_stage": args.one_stage, "seed": args.seed, "steps": args.steps,
                                       "guidance": args.guidance, "scale": args.scale}, shown=shown)
    print(f"wrote {len(files)} images, sheet.png and series.json to {out}")
    return 0


def _add_device_args(p) -> None:
    from .devices import DEVICES, DTYPES

    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to run: auto (default: CUDA when there is one, else the CPU), cpu or cuda")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="auto",
                   help="weights and activations: auto (default: float16 on CUDA, float32 on the CPU), float32, "
                        "float16 (GPU only) or bfloat16")
    p.add_argument("--offload", action="store_true",
                   help="model CPU offload, for large models on a small GPU: the models stay in CPU memory and each "
                        "moves to the GPU only while it runs (needs CUDA)")


def _device_options(args) -> None:
    """Refuse impossible --device/--dtype/--offload requests before any model loads."""
    from .devices import resolve

    device, _ = resolve(args.device, args.dtype)
    if getattr(args, "offload", False) and device.type != "cuda":
        raise ValueError("--offload moves each model to the GPU while it runs: it needs a CUDA device (--device cuda "
                         "or auto on a machine with one)")


def _placed(pipe, args):
    """pipe moved to --device/--dtype, or kept in CPU memory and offloaded model by model (--offload)."""
    from .devices import resolve
    from .quiet import library_logs

    device, dtype = resolve(args.device, args.dtype)
    with library_logs():  # diffusers warns on every cast to a dtype, even float32 to float32
        if not getattr(args, "offload", False):
            return pipe.to(device, dtype)
        return pipe.to("cpu", dtype).enable_model_cpu_offload(device)


def _personalize(args) -> int:
    """Beyond Inserting's per-character optimization: an identity embedding from a character's images."""
    prog = "serialgen personalize"
    out = Path(args.out)
    try:
        if out.suffix != ".safetensors":
            raise ValueError(f"--out {out} must end in .safetensors")
        import numpy as np

        from .pipelines.beyond_inserting import BeyondInsertingPipeline, Optimization
        from .preprocess import load_image, prepare_reference

        given = {k: getattr(args, k) for k in ("steps", "lr", "stages", "tokens", "attention_weight", "seed")
                 if getattr(args, k) is not None}  # the rest: Optimization's own defaults
        if args.no_attention_loss:
            given["attention_weight"] = None
        optimization = Optimization(**given)  # refused settings before any model loads
        for image in args.images:
            load_image(image)
        _writable_dir(out.parent if str(out.parent) else Path("."))
        _device_options(args)
        pipe = _placed(BeyondInsertingPipeline.from_pretrained(args.base, optimization,
                                                               allow_pickle=args.allow_pickle), args)
        size = pipe.serial.personalize.default_size()
        refs = [prepare_reference(image, size, use_pose=not args.no_pose) for image in args.images]
        masks = None
        if args.no_pose:  # no person detection: the region is the whole canvas
            masks = [np.ones(r.image.shape[:2], np.float32) for r in refs]
            print("note: --no-pose: the attention loss keeps the identity on the whole canvas, not on the person")
        embedding = pipe.optimize(refs, masks)
        embedding.save(out)
    except (ValueError, FileNotFoundError, ImportError) as error:
        return _fail(prog, str(error))
    print(f"wrote {out} ({embedding.stages} stages x {embedding.key.shape[1]} tokens, for this base)")
    return 0


def _demo(args) -> int:
    """The bundled reference (a character of a world no bundled model was trained on) through
    `generate` with the bundled prompts."""
    import shutil
    from importlib import resources

    prog = "serialgen demo"
    out = Path(args.out)
    assets = Path(str(resources.files("serialgen"))) / "assets" / "demo"
    try:
        _writable_dir(out)
    except ValueError as error:
        return _fail(prog, str(error))
    for name in ("reference.png", "reference_true_standard.png"):
        shutil.copyfile(assets / name, out / name)
    caption = json.loads((assets / "reference.json").read_text())["caption"]
    print(f"reference: {caption} -> {out / 'reference.png'}")
    return main(["generate", "--reference", str(out / "reference.png"), "--prompts-file", str(assets / "prompts.txt"),
                 "--out", str(out), "--seed", str(args.seed), "--steps", str(args.steps), "--device", args.device,
                 "--dtype", args.dtype, "--method", args.method] + (["--offload"] if args.offload else []))


def _serve(args) -> int:
    prog = "serialgen serve"
    if not 0 < args.port < 65536 or args.max_upload_mb < 1 or args.max_prompts < 1 or args.steps < 1:
        return _fail(prog, "--port must be 1-65535 and --max-upload-mb, --max-prompts, --steps at least 1")
    try:
        import gradio  # noqa: F401
    except ImportError:
        return _fail(prog, "the web app needs Gradio: pip install 'serialgen[serve]'")
    import socket

    try:  # the address first: a busy port or a bad host is said before 15 s of model loading
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as error:
        return _fail(prog, f"cannot serve on {args.host}:{args.port} ({error.strerror or error}): "
                           "choose another --port or --host")
    try:
        from .pipelines.serial import SerialGenPipeline
        from .serve import ServeLimits, serve

        pipe = SerialGenPipeline.from_pretrained(standardizer=args.standardizer, adapter=args.adapter, base=args.base,
                                                 image_encoder=args.image_encoder, allow_pickle=args.allow_pickle)
    except (ValueError, FileNotFoundError, ImportError) as error:
        return _fail(prog, str(error))
    except Exception as error:  # noqa: BLE001  (anything else is re-raised)
        if (message := _model_error(error)) is None:
            raise
        return _fail(prog, message)
    limits = ServeLimits(max_upload_mb=args.max_upload_mb, max_prompts=args.max_prompts)
    print(f"serving on http://{args.host}:{args.port} (Ctrl+C stops)")
    serve(pipe, host=args.host, port=args.port, limits=limits, default_steps=args.steps)
    return 0


def _named(values: list[str] | None, flag: str) -> tuple:
    """["name=path", ...] -> ((name, path), ...)"""
    out = []
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} takes NAME=PATH, got {v!r}")
        out.append((name, path))
    return tuple(out)


def _report(args) -> int:
    import shlex

    prog = "serialgen report"
    if not (Path(args.data) / "test").is_dir():
        return _fail(prog, f"--data {args.data} has no test/ shards; "
                           f"make them with `serialgen synth --out {args.data} ...`")
    if min(args.characters, args.prompts, args.seeds, args.steps, args.stage1_samples) < 1 or args.gap_characters < 2:
        return _fail(prog, "--characters, --prompts, --seeds, --steps and --stage1-samples must be at least 1, "
                           "--gap-characters at least 2")
    if args.method_characters is not None and not 1 <= args.method_characters <= args.characters:
        return _fail(prog, f"--method-characters must be between 1 and --characters ({args.characters}): the other "
                           "methods are scored on the first of Table 2's characters")
    if args.token_characters is not None and not 1 <= args.token_characters <= args.characters:
        return _fail(prog, f"--token-characters must be between 1 and --characters ({args.characters}): the token "
                           "study's rows are scored on the first of Table 2's characters")
    try:
        from .evaluation import Protocol
        from .evaluation.report import OTHER_METHODS, STAGE1_RUNS, ReportConfig, make_report

        _writable_dir(Path(args.out).parent if str(Path(args.out).parent) else Path("."))
        cfg = ReportConfig(data=args.data, out=args.out, scores=args.scores or "",
                           stage1=() if args.no_stage1 else (_named(args.stage1, "--stage1") or STAGE1_RUNS),
                           adapters=_named(args.adapter, "--adapter"), standardizer=args.standardizer,
                           base=args.base, image_encoder=args.image_encoder,
                           judge=args.judge, face_model=args.face_model, stage1_samples=args.stage1_samples,
                           gap_characters=args.gap_characters, force=args.force,
                           methods=() if args.no_methods else OTHER_METHODS, kept_only=args.kept_only,
                           pairings=not args.no_pairings,
                           method_characters=args.method_characters or 0,
                           token_characters=args.token_characters or 0,
                           protocol=Protocol(characters=args.characters, prompts=args.prompts, seeds=args.seeds,
                                             steps=args.steps, seed=args.seed))
        out = make_report(cfg, "serialgen " + " ".join(shlex.quote(a) for a in args.argv))
    except (ValueError, FileNotFoundError, ImportError) as error:
        return _fail(prog, str(error))
    except Exception as error:  # noqa: BLE001  (anything else is re-raised)
        if (message := _model_error(error)) is None:
            raise
        return _fail(prog, message)
    print(f"wrote {out}")
    return 0


def _bounded(low: int, high: int, what: str):
    """argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be {low}-{high}, got {text}")
        return value
    return parse


_seed = _bounded(0, 2**31 - 1, "a seed")
_steps = _bounded(1, 1000, "DDIM steps")  # the training schedule has 1000 timesteps


def _scale(text: str) -> float:
    """argparse type: a finite number >= 0 (guidance and adapter scales); NaN, infinity and
    negatives are refused before any model loads."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _strength(text: str) -> float:
    """argparse type: a share of the denoising steps, in (0, 1]."""
    value = _scale(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _share(text: str) -> float:
    """argparse type: a share of the denoising steps, in [0, 1]."""
    value = _scale(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _eval(args) -> int:
    prog = f"serialgen eval {args.what}"
    data = Path(args.data)
    if not (data / "test").is_dir():
        return _fail(prog, f"--data {data} has no test/ shards; make them with `serialgen synth --out {data} ...`")
    if args.samples is None:
        args.samples = 8 if args.what == "stage2" else 64
    if min(args.samples, args.prompts, args.seeds, args.bootstrap) < 1:
        return _fail(prog, "--samples, --prompts, --seeds and --bootstrap must be at least 1")
    try:
        for path in (args.out, args.sheet):
            if path:
                _writable_dir(Path(path).parent if str(Path(path).parent) else Path("."))
        from . import evaluation
        from .data.memory import WorldArrays
        from .data.splits import reading_test_split
        from .evaluation import commands

        with reading_test_split() if args.split == "test" else contextlib.nullcontext():
            test = WorldArrays.load(data, args.split, keys=("image", "foreground"), per_character=("standard_image",),
                                    limit=args.samples * 16 if args.what != "t2i" else None)
        judge = evaluation.Judge.from_pretrained(args.judge)
        if args.what == "stage1":
            scored = commands.score_stage1(test, args.weights or [None], judge, args.samples, args.steps,
                                           args.guidance or 2.5, args.seed, leak=args.leak)
        elif args.what == "t2i":
            scored = commands.score_t2i(test, args.base, judge, args.samples, args.steps, args.guidance or 5.0,
                                        args.seed)
        else:
            face = None
            if not args.no_face:
                from .face import face_embedder

                face = face_embedder(args.face_model)
            protocol = evaluation.Protocol(characters=args.samples, prompts=args.prompts, seeds=args.seeds,
                                           steps=args.steps, guidance=args.guidance or 5.0, seed=args.seed,
                                           bootstrap=args.bootstrap)
            scored = commands.score_series(test, args.adapter or [None], judge, protocol, args.standardizer, args.base,
                                           args.image_encoder, face, args.method)
        print("\n".join(scored.tables))
        rows, sheet = scored.rows, scored.sheet
    except (ValueError, FileNotFoundError, ImportError) as error:
        return _fail(prog, str(error))
    except Exception as error:  # noqa: BLE001  (anything else is re-raised)
        if (message := _model_error(error)) is None:
            raise
        return _fail(prog, message)
    if args.out:
        write_json(args.out, {name: scores for name, scores in rows}, indent=1)
        print(f"wrote {args.out}")
    if args.sheet and sheet is not None:
        save_image(args.sheet, sheet)
        print(f"wrote {args.sheet}")
    return 0


def _train(args) -> int:
    from .train import trainer
    from .train.config import load_config

    prog = f"serialgen train {args.model}"
    if (args.no_fbdm or args.no_rpim) and args.model != "stage1":
        return _fail(prog, "--no-fbdm and --no-rpim are Stage I ablations: use them with `serialgen train stage1`")
    if args.pairing is not None and args.model != "stage2":
        return _fail(prog, "--pairing chooses Stage II training pairs: use it with `serialgen train stage2`")
    data = Path(args.data)
    if not (data / "train").is_dir():
        return _fail(prog, f"--data {data} has no train/ shards; make them with `serialgen synth --out {data} ...`")
    try:
        chosen = trainer(args.model)
        overrides = {"fbdm": False if args.no_fbdm else None, "rpim": False if args.no_rpim else None,
                     "pairing": args.pairing, "mixed_precision": args.mixed_precision, "seed": args.seed}
        cfg = load_config(chosen.config, chosen.presets, args.preset, args.config,
                          **{k: v for k, v in overrides.items() if v is not None})
        from .devices import resolve

        device, _ = resolve(args.device)  # refused before any data loads
        if cfg.mixed_precision == "fp16" and device.type != "cuda":
            raise ValueError("mixed precision fp16 needs a GPU; on the CPU use bf16 or no")
        _writable_dir(Path(args.out))
        chosen.train(cfg, data, Path(args.out), args.resume, device=args.device)
        return 0
    except (ValueError, FileNotFoundError) as error:
        return _fail(prog, str(error))


def _model_options(p: argparse.ArgumentParser) -> None:
    """Where the serial pipeline's models come from (generate, serve)."""
    p.add_argument("--standardizer", help="Stage I weights folder (default: bundled mini)")
    p.add_argument("--adapter", help="IP-Adapter .safetensors file or folder (default: bundled mini)")
    p.add_argument("--base", help="Stable Diffusion 1.5 / SDXL pipeline folder (default: bundled mini text-to-image)")
    p.add_argument("--image-encoder", help="CLIP vision folder the adapter was trained with (default: bundled mini)")
    p.add_argument("--allow-pickle", action="store_true", help="load .bin/.ckpt weights (pickles can run code)")


METHOD_NAMES = ("serialgen", "consistent-attention", "layout-retouch", "beyond-inserting")  # pipelines.METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="serialgen",
                     description="SerialGen: one character, drawn consistently in any number of scenes.")
    parser.add_argument("--verbose", action="store_true",
                        help="show what the libraries underneath log (MediaPipe's TensorFlow Lite lines, model load "
                             "reports and progress bars); also SERIALGEN_VERBOSE=1")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser(
        "synth", help="render the procedural 3D character world to WebDataset shards",
        description="Render (non-standard, standard) image pairs of procedural 3D characters into WebDataset tar "
                    "shards under OUT/train and OUT/test (every fifth character id held out; the held-out ids in "
                    "the first half of the world are the validation split, the rest the test split). Reruns skip "
                    "finished shards; a killed run leaves no half-written shard. Same arguments give byte-identical "
                    "shards whatever --workers. To fan out over a cluster, run the same command with --num-shards N "
                    "and --shard-index 0..N-1 (e.g. $SLURM_ARRAY_TASK_ID) against one shared --out.",
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
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="one shard per Ray task: on the Ray cluster at ADDRESS (HOST:PORT, ray://HOST:PORT or auto; "
                        "--out must be a folder every node sees), or, with no ADDRESS, on a local Ray with --workers "
                        "CPUs (needs pip install 'serialgen[cluster]')")
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
    p.add_argument("--tile-height", type=_bounded(16, 1024, "the tile height"), default=192,
                   help="pixel height of each tile (default 192)")
    p.set_defaults(run=_sheet)

    p = sub.add_parser(
        "train", help="train a model on a synthesized dataset",
        description="Train one model: " + "; ".join(f"{name}: {what}" for name, what in TRAINERS.items()) + ". Runs on "
                    "accelerate (`accelerate launch -m serialgen.cli train ...` spreads it over GPUs). Checkpoints "
                    "go to OUT/checkpoint every few hundred steps (atomically); --resume continues exactly. The "
                    "final EMA weights are saved to OUT/model with training.json (command, config, data, scores).",
    )
    p.add_argument("model", choices=sorted(TRAINERS), help="what to train")
    p.add_argument("--data", required=True, help="dataset directory made by `serialgen synth`")
    p.add_argument("--out", required=True, help="run directory: checkpoint/, samples/, log.jsonl, model/")
    p.add_argument("--preset", choices=("mini", "paper"), default="mini",
                   help="the config to start from: mini (the recipe of the bundled weights, default) or paper (the "
                        "paper's recipe; stage1 and stage2 only, the paper trains no other model)")
    p.add_argument("--config",
                   help="TOML file overriding the preset's values (unknown keys and wrong types are refused)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint (made with the same config)")
    from .devices import DEVICES

    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to train: auto (default: CUDA when there is one, else the CPU), cpu or cuda; several "
                        "GPUs: start with `accelerate launch`")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"),
                   help="autocast dtype, overriding the config's mixed_precision (fp16: GPU only; recorded in the "
                        "run's config)")
    p.add_argument("--seed", type=_seed,
                   help="training seed, overriding the config's (initialisation, batches, noise, drops); recorded in "
                        "the run's config, so --resume needs the same one. Training-seed replicas of one recipe")
    p.add_argument("--no-fbdm", action="store_true",
                   help="stage1 only: without foreground-background distinction (ablation)")
    p.add_argument("--no-rpim", action="store_true", help="stage1 only: without reference pose injection (ablation)")
    p.add_argument("--pairing", choices=PAIRINGS,
                   help="stage2 only: reference of each training image: its standardized form (SerialGen, default), "
                        "another image of the same character (paired one-stage), itself cropped and flipped "
                        "(unpaired one-stage), or the world's true standard render of its character (standard: "
                        "SerialGen with a perfect Stage I, an upper bound), or an image the two-stage model drew "
                        "of its character in a random scene (generated: the paper's paired one-stage baseline)")
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
    p.add_argument("--steps", type=_steps, default=20, help="DDIM steps (default 20)")
    p.add_argument("--guidance", type=_scale, default=2.5, help="classifier-free guidance scale (default 2.5; 1 = off)")
    p.add_argument("--seed", type=_seed, default=0, help="noise seed (default 0)")
    p.add_argument("--weights", help="saved standardizer folder (default: the bundled mini one)")
    p.add_argument("--no-pose", action="store_true", help="skip person detection: no mask or pose guidance")
    p.add_argument("--start", choices=("canvas", "noise", "silhouette"),
                   help="sampling start (default: the one saved with the weights, chosen on validation characters): "
                        "the noised white canvas around the target figure, pure noise, or the reference's colour "
                        "silhouette in its standard pose, noised part of the way (see --strength)")
    p.add_argument("--strength", type=_strength,
                   help="silhouette start: the share of the steps run from the noised silhouette, in (0, 1] "
                        "(default: the one saved with the weights)")
    p.add_argument("--allow-pickle", action="store_true", help="load .bin/.ckpt weights (pickles can run code)")
    _add_device_args(p)
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
    p.add_argument("--seed", type=_seed, default=0, help="seed; image i uses noise from (seed, i) (default 0)")
    p.add_argument("--steps", type=_steps, default=20, help="DDIM steps per image (default 20)")
    p.add_argument("--guidance", type=_scale, default=5.0, help="classifier-free guidance scale (default 5)")
    p.add_argument("--scale", type=_scale, default=1.0, help="image adapter scale: 0 = text only (default 1)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default 8)")
    p.add_argument("--standardized", help="an already standardized reference: skip Stage I")
    p.add_argument("--one-stage", action="store_true",
                   help="skip standardization: the adapter sees the reference as is")
    p.add_argument("--no-pose", action="store_true", help="Stage I without person detection (no mask or pose guidance)")
    p.add_argument("--pipeline", help="a pipeline folder (SerialGenPipeline.save_pretrained; default: the bundled mini "
                                      "models); --standardizer, --adapter, --base, --image-encoder replace its parts")
    p.add_argument("--method", choices=METHOD_NAMES, default="serialgen",
                   help="serialgen (default): Stage I, then the image adapter; consistent-attention: the same, while "
                        "the series' images share their self-attention tokens (StoryDiffusion; training-free; "
                        "without --reference, the text-to-image base alone); layout-retouch: the base alone draws "
                        "the first steps (the layout), the adapter the rest, then the layout is inverted and "
                        "re-denoised reading the layout's and the reference's self-attention (Layout-and-Retouch; "
                        "training-free); beyond-inserting: an identity embedding optimized on the reference (or "
                        "--embedding, made by `serialgen personalize`) drawn by the base model (Beyond Inserting)")
    p.add_argument("--embedding",
                   help="beyond-inserting: an identity embedding (.safetensors) from `serialgen personalize`")
    p.add_argument("--identity-images", type=int, default=4,
                   help="consistent-attention: the first images, denoised together, whose tokens the rest read "
                        "(default 4)")
    p.add_argument("--switch", type=_share,
                   help="layout-retouch: the share of the steps the base alone denoises, in [0, 1] (default 0.2, "
                        "chosen on validation characters)")
    p.add_argument("--retouch-strength", type=_share,
                   help="layout-retouch: the share of the schedule the layout is inverted and re-denoised, in [0, 1] "
                        "(0: no retouch; default 0.5)")
    _add_device_args(p)
    _model_options(p)
    p.set_defaults(run=_generate)

    p = sub.add_parser(
        "personalize", help="optimize an identity embedding on a character's images (Beyond Inserting)",
        description="Beyond Inserting (Li et al. 2024): one identity as per-stage tokens, each a key and a value "
                    "feature, optimized on the character's images with the frozen text-to-image base's diffusion loss "
                    "and an attention loss that keeps the identity's cross-attention on the character (its mask, "
                    "from person detection). Writes a small .safetensors that records the base it was made for; "
                    "`serialgen generate --method beyond-inserting --embedding OUT` draws with it.",
    )
    p.add_argument("--method", choices=("beyond-inserting",), default="beyond-inserting",
                   help="the per-character method (beyond-inserting, the only one)")
    p.add_argument("--images", nargs="+", required=True, help="images of the character (any format Pillow opens)")
    p.add_argument("--out", required=True, help="the embedding file to write (.safetensors)")
    p.add_argument("--steps", type=int, help="optimization steps (default 150)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 0.1)")
    p.add_argument("--stages", type=int, help="timestep stages, one token set each (default 4)")
    p.add_argument("--tokens", type=int, help="identity tokens per stage (default 2)")
    p.add_argument("--attention-weight", type=float, help="weight of the attention loss (default 0.1)")
    p.add_argument("--no-attention-loss", action="store_true", help="plain token optimization (no attention loss)")
    p.add_argument("--no-pose", action="store_true", help="no person detection: the attention region is the canvas")
    p.add_argument("--seed", type=_seed, help="seed of the batches and noise (default 0)")
    p.add_argument("--base", help="Stable Diffusion 1.5 / SDXL pipeline folder (default: bundled mini text-to-image)")
    p.add_argument("--allow-pickle", action="store_true", help="load .bin/.ckpt weights (pickles can run code)")
    _add_device_args(p)
    p.set_defaults(run=_personalize)

    p = sub.add_parser(
        "demo", help="the whole pipeline on the bundled models: one unseen character in four scenes",
        description="The bundled reference, a character of a world no bundled model was trained on, in a "
                    "non-standard pose and background, goes through `generate` with the bundled scene prompts: "
                    "person detection, Stage I once, then Stage II for every prompt. Writes OUT/reference.png, "
                    "OUT/reference_true_standard.png (the world's own standard render, to compare with), "
                    "OUT/standardized.png, OUT/01.png ..., OUT/sheet.png and OUT/series.json.",
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--seed", type=_seed, default=0, help="generation seed (default 0)")
    p.add_argument("--steps", type=_steps, default=20, help="DDIM steps (default 20)")
    p.add_argument("--method", choices=METHOD_NAMES, default="serialgen",
                   help="the generation method (default serialgen; see `serialgen generate --help`)")
    _add_device_args(p)
    p.set_defaults(run=_demo)

    p = sub.add_parser(
        "serve", help="a web app: upload a reference, write prompts, see the standardized image and the series",
        description="Serve a Gradio app on http://HOST:PORT. Models load once (the bundled mini ones unless given); "
                    "jobs run one at a time per worker and at most --max-prompts scenes each; uploads over "
                    "--max-upload-mb are refused. Bind --host 0.0.0.0 to reach it from other machines.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-upload-mb", type=int, default=10, help="largest upload accepted (default 10)")
    p.add_argument("--max-prompts", type=int, default=16, help="most scenes per job (default 16)")
    p.add_argument("--steps", type=_steps, default=20, help="default DDIM steps shown in the app (default 20)")
    _model_options(p)
    p.set_defaults(run=_serve)

    p = sub.add_parser(
        "report", help="docs/REPRODUCTION.md: the paper's Tables 2 and 3 and its claims, on the character world",
        description="Score the Stage I ablation (full, no FBDM, no RPIM, neither; default the three training seeds "
                    "of each, runs/stage1-abl-ROW-sSEED/model) and the three Stage II pairings (default: the bundled "
                    "unpaired, paired and two-stage adapters) on held-out characters under the paper's protocol, "
                    "graded by the judge; write the tables with 95% t intervals over training seeds and characters, "
                    "the paper's numbers beside them, a verdict per claim from paired differences, and figures. "
                    "Scores are kept as JSON in the scores folder and reused while the models, settings, scoring code "
                    "and data are unchanged; a discussion.md there is included in the report.",
    )
    p.add_argument("--data", required=True, help="dataset directory (its test/ split: held-out characters)")
    p.add_argument("--out", default="docs/REPRODUCTION.md", help="the report (default docs/REPRODUCTION.md)")
    p.add_argument("--scores", help="folder for scores and figures (default: reproduction/ beside --out)")
    p.add_argument("--characters", type=int, default=40,
                   help="held-out characters for Table 2 (default 40, the paper's count)")
    p.add_argument("--prompts", type=int, default=20, help="scene prompts per character (default 20)")
    p.add_argument("--seeds", type=int, default=4, help="images per prompt (default 4)")
    p.add_argument("--steps", type=_steps, default=20, help="DDIM steps (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--stage1-samples", type=int, default=64, help="held-out characters for Table 3 (default 64)")
    p.add_argument("--gap-characters", type=int, default=48,
                   help="held-out characters for the adapters' loss gap: how much lower the denoising loss is "
                        "with the character's own reference than with another's (default 48)")
    p.add_argument("--stage1", action="append",
                   help="NAME=DIR, a Stage I ablation row; repeat a name for its training seeds (default the four rows "
                        "x three seeds of scripts/train_mini.sh)")
    p.add_argument("--no-stage1", action="store_true",
                   help="score no Stage I model (Table 3 shows the scores measured earlier, if any)")
    p.add_argument("--adapter", action="append", help="NAME=PATH, a Stage II row; repeat (default the bundled three)")
    p.add_argument("--no-pairings", action="store_true",
                   help="score no Stage II row (Table 2 shows the scores measured earlier, if any): with --no-methods, "
                        "only the Stage I ablation is scored")
    p.add_argument("--standardizer", help="Stage I for the two-stage row (default bundled)")
    p.add_argument("--base", help="text-to-image pipeline folder the adapters were trained on (default bundled)")
    p.add_argument("--image-encoder", help="the adapters' CLIP vision folder (default bundled)")
    p.add_argument("--judge", help="judge folder (default bundled)")
    p.add_argument("--face-model", help="an ArcFace .onnx model for face similarity (default dlib's descriptor)")
    p.add_argument("--no-methods", action="store_true",
                   help="score none of the other methods (consistent self-attention, Layout-and-Retouch, Beyond "
                        "Inserting and its plain token optimization; about 4x the two-stage row's time together)")
    p.add_argument("--method-characters", type=int,
                   help="score the other methods on the first N of the --characters only (default all of them): "
                        "each costs 1-3x a Table 2 row; their claims compare with SerialGen on those N")
    p.add_argument("--token-characters", type=int,
                   help="score the token study's rows (\"unpaired one-stage, N image tokens\") on the first N of "
                        "the --characters only (default all of them): a figure of three more adapters, each a Table 2 "
                        "row's cost")
    p.add_argument("--force", action="store_true", help="recompute every score")
    p.add_argument("--kept-only", action="store_true",
                   help="score nothing: write the report from the scores kept in the scores folder (rows never "
                        "scored are left out; rows measured on other characters are marked with a dagger, rows "
                        "whose model here would be scored again (other scoring code, model files or settings) with a "
                        "double dagger, and claims that compare a marked row are not judged)")
    p.set_defaults(run=_report)

    p = sub.add_parser(
        "eval", help="score models on held-out characters (graded by the judge)",
        description="stage1: PSNR/SSIM of standardized vs ground-truth standard renders, one row per --weights (the "
                    "paper's Table 3 ablation: pass the full, no-FBDM, no-RPIM and neither models). t2i: the base "
                    "model from held-out captions, scored by the judge's attribute probes and CLIP-T. stage2: the "
                    "paper's protocol through each --adapter (standardized when its training.json says so, one-stage "
                    "otherwise): held-out characters x 20 scene prompts (action, background, viewpoint, expression) "
                    "x 4 seeds; CLIP-T, CLIP-I on background-removed images, AP-CLIP-I (Table 2), face similarity "
                    "(dlib, or ArcFace with --face-model), the judge's text-control and appearance accuracies and "
                    "Stage I PSNR/SSIM, each a mean over characters with a 95% bootstrap interval. The judge never "
                    "grades itself: it is trained on another world.",
    )
    p.add_argument("what", choices=("stage1", "t2i", "stage2"), help="what to score")
    p.add_argument("--data", required=True, help="dataset directory (a world made by `serialgen synth`)")
    p.add_argument("--split", choices=("validation", "test"), default="validation",
                   help="the held-out characters scored: validation (default; every choice is made on it) or test "
                        "(read once, for the final numbers)")
    p.add_argument("--weights", action="append",
                   help="stage1: standardizer folder; repeat to compare (default bundled)")
    p.add_argument("--adapter", action="append", help="stage2: IP-Adapter file or folder; repeat (default bundled)")
    p.add_argument("--standardizer", help="stage2: Stage I folder for standardized adapters (default bundled)")
    p.add_argument("--method", choices=METHOD_NAMES, default="serialgen",
                   help="stage2: the generation method run on each adapter (default serialgen; its default settings)")
    p.add_argument("--base", help="t2i/stage2: text-to-image pipeline folder (default bundled)")
    p.add_argument("--image-encoder", help="stage2: the adapters' CLIP vision folder (default bundled)")
    p.add_argument("--judge", help="judge folder (default bundled)")
    p.add_argument("--samples", type=int,
                   help="stage1: characters (default 64); t2i: prompts (default 64); stage2: characters (default 8)")
    p.add_argument("--prompts", type=int, default=20,
                   help="stage2: scene prompts per character (default 20, as the paper)")
    p.add_argument("--seeds", type=int, default=4, help="stage2: images per prompt (default 4, as the paper)")
    p.add_argument("--face-model",
                   help="stage2: an ArcFace .onnx model for face similarity (default: dlib's descriptor)")
    p.add_argument("--no-face", action="store_true", help="stage2: skip face similarity")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="stage2: bootstrap resamples for the intervals (default 1000)")
    p.add_argument("--steps", type=_steps, default=20, help="DDIM steps (default 20)")
    p.add_argument("--guidance", type=_scale, help="guidance scale (default 2.5 for stage1, 5 otherwise)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--leak", action="store_true",
                   help="stage1: also the background-leak test (references on saturated backdrops, with and without "
                        "FBDM)")
    p.add_argument("--out", help="write the scores as JSON here")
    p.add_argument("--sheet", help="write a sheet of examples here (.png)")
    p.set_defaults(run=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.verbose:
        os.environ["SERIALGEN_VERBOSE"] = "1"
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
