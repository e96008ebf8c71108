"""`serialgen serve`: a Gradio app around `SerialGenPipeline`.

Upload a reference image, write one prompt per line, and see the reference as the pipeline
prepared it, the standardized image and the series. The models load once; the queue runs one
job at a time per worker (the pipeline is not re-entrant and a CPU is saturated by one job);
uploads are bounded in size, and a file the pipeline cannot use is answered with the same
one-line message the command line gives.

    serialgen serve [--port 7860] [--standardizer DIR --adapter FILE --base DIR ...]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .preprocess import load_image

# The app talks to no server but its own: no usage statistics, no version checks.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@dataclass(frozen=True)
class ServeLimits:
    max_upload_mb: int = 10  # larger uploads are refused before they reach the pipeline
    max_prompts: int = 16  # one job draws at most this many scenes
    max_pixels: int = 4096 * 4096  # decoded size; guards against decompression bombs
    queue_size: int = 32  # jobs waiting beyond this are turned away with a message


@dataclass
class SeriesResult:
    reference: Image.Image  # the reference as the pipeline prepared it (canvas crop)
    standardized: Image.Image | None
    images: list[Image.Image]
    prompts: list[str]
    notes: list[str]
    settings: dict | None = None  # what drew it (method, seed, steps, guidance, scale, ...), for series.json

    def zip(self, folder: str | Path) -> Path:
        """The series as `folder/series.zip`: NN.png, standardized.png, sheet.png and series.json
        (prompts, settings, notes), as `serialgen generate` writes them."""
        import tempfile
        import zipfile

        from .pipelines.serial import SerialGenOutput

        out = Path(folder) / "series.zip"
        with tempfile.TemporaryDirectory() as tmp:
            files = SerialGenOutput(self.images, self.standardized, None, self.notes).save(
                tmp, self.prompts, self.settings, shown=self.reference)
            names = files + [n for n in ("standardized.png", "sheet.png", "series.json") if (Path(tmp) / n).exists()]
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
                for name in names:
                    archive.write(Path(tmp) / name, name)
        return out


def parse_prompts(text: str, limit: int) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    prompts = [line.strip() for line in (text or "").splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError("Write at least one prompt, one scene per line")
    if len(prompts) > limit:
        raise ValueError(f"{len(prompts)} prompts: this server draws at most {limit} per job; split the series")
    return prompts


def check_upload(path: str | None, limits: ServeLimits) -> Image.Image:
    """An uploaded file -> RGB image, or a ValueError that names the file as the user knows it."""
    if not path:
        raise ValueError("Upload a reference image first")
    name = Path(path).name
    if Path(path).stat().st_size > limits.max_upload_mb * 2**20:
        raise ValueError(f"{name} is larger than {limits.max_upload_mb} MB: upload a smaller image")
    try:
        with Image.open(path) as probe:  # reads the header only
            width, height = probe.size
    except Image.DecompressionBombError:
        raise ValueError(f"{name} is too large to decode safely: upload one under "
                         f"{limits.max_pixels // 10**6} megapixels") from None
    except Exception:  # not an image, or a broken one: load_image below says which
        width = height = 0
    if width * height > limits.max_pixels:
        raise ValueError(f"{name} is {width}x{height} pixels: upload one under {limits.max_pixels // 10**6} megapixels")
    try:
        return load_image(path)
    except ValueError as error:
        raise ValueError(str(error).replace(str(path), name)) from None



def run_series(pipe, upload: str | None, prompts_text: str, *, seed: int = 0, steps: int = 20, scale: float = 1.0,
               guidance: float = 5.0, one_stage: bool = False, use_pose: bool = True, method: str = "serialgen",
               limits: ServeLimits = ServeLimits()) -> SeriesResult:
    """What the app's button does, without the app: check the inputs, run the pipeline (or the
    method built on it)."""
    prompts = parse_prompts(prompts_text, limits.max_prompts)
    image = check_upload(upload, limits)
    if not 1 <= int(steps) <= 100:
        raise ValueError(f"steps must be between 1 and 100, got {steps}")
    if not 0 <= float(guidance) <= 30:
        raise ValueError(f"guidance must be between 0 and 30, got {guidance}")
    from .pipelines import compose_method

    runner = compose_method(pipe, method)  # an unknown method is refused here
    settings = {"method": method, "seed": int(seed), "steps": int(steps), "guidance": float(guidance),
                "scale": float(scale), "one_stage": bool(one_stage), "detect_person": bool(use_pose)}
    try:
        out = runner(image, prompts, standardize=not one_stage, num_inference_steps=int(steps),
                     guidance_scale=float(guidance), scale=float(scale), seed=int(seed), use_pose=use_pose)
    except ValueError as error:  # e.g. no person found: point at the app's own switch
        raise ValueError(str(error).replace("pass --no-pose", "untick 'Detect the person'")
                         .replace(str(upload), Path(upload).name)) from None
    return SeriesResult(Image.fromarray(out.reference.image), out.standardized, out.images, prompts, out.notes,
                        settings)


def example_inputs() -> list[list[str]]:
    """The app's clickable examples: references and prompts shipped in the package (assets/)."""
    from importlib import resources

    demo = Path(str(resources.files("serialgen"))) / "assets" / "demo"
    prompts = (demo / "prompts.txt").read_text()
    return [[str(demo / "reference.png"), prompts]]


DEFAULT_PROMPTS = (
    "a character, waving, front view, smiling, on a beach, full body shot",
    "a character, running, side view, in a forest, full body shot",
    "a character, sitting, three-quarter view, in a room, full body shot",
    "a character, jumping, front view, under a night sky, full body shot",
)


def build_app(pipe, *, limits: ServeLimits = ServeLimits(), default_steps: int = 20, title: str = "serialgen"):
    """The Gradio Blocks app; `.queue()` and `.launch()` are the caller's (see `serve`)."""
    import tempfile

    import gradio as gr

    from .pipelines import METHODS

    def generate(upload, prompts_text, seed, steps, guidance, scale, method, one_stage, use_pose,
                 progress=gr.Progress(track_tqdm=True)):
        try:
            result = run_series(pipe, upload, prompts_text, seed=int(seed or 0), steps=int(steps),
                                guidance=float(guidance), scale=float(scale), method=method, one_stage=bool(one_stage),
                                use_pose=bool(use_pose), limits=limits)
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None
        notes = "\n".join(f"- {n}" for n in result.notes) or "- nothing to report"
        gallery = [(np.asarray(im), p) for im, p in zip(result.images, result.prompts, strict=True)]
        archive = result.zip(tempfile.mkdtemp(prefix="serialgen-"))
        return result.reference, result.standardized, gallery, f"**Notes**\n{notes}", str(archive)

    with gr.Blocks(title=title) as app:
        gr.Markdown(f"# {title}\nOne reference image of a character, one prompt per line: the character, "
                    "standardized once, then drawn in every scene.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Reference image", file_types=["image"], type="filepath", elem_id="reference")
                prompts = gr.Textbox(label="Prompts, one per line", value="\n".join(DEFAULT_PROMPTS), lines=6,
                                     elem_id="prompts")
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0)
                    steps = gr.Slider(1, 100, value=default_steps, step=1, label="Steps")
                with gr.Row():
                    guidance = gr.Slider(0.0, 15.0, value=5.0, step=0.5, label="Guidance (prompt strength)",
                                         elem_id="guidance")
                    scale = gr.Slider(0.0, 1.5, value=1.0, step=0.05, label="Image prompt scale")
                method = gr.Radio(list(METHODS), value="serialgen", label="Method", elem_id="method",
                                  info="consistent-attention: the series' images also share their self-attention; "
                                       "layout-retouch: the base model draws the layout, then the character is "
                                       "retouched in")
                with gr.Row():
                    use_pose = gr.Checkbox(value=True, label="Detect the person (mask and pose for Stage I)",
                                           elem_id="use_pose")
                    one_stage = gr.Checkbox(value=False, label="Skip standardization (one-stage)", elem_id="one_stage")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                gr.Examples(example_inputs(), [upload, prompts], label="Examples (a character of a world no model saw)")
            with gr.Column():
                with gr.Row():
                    prepared = gr.Image(label="Reference as prepared", type="pil", interactive=False,
                                        elem_id="prepared")
                    standardized = gr.Image(label="Standardized", type="pil", interactive=False,
                                            elem_id="standardized")
                series = gr.Gallery(label="Series", columns=4, object_fit="contain", height="auto", elem_id="series")
                notes = gr.Markdown(elem_id="notes")
                download = gr.File(label="Download the series (zip: images, sheet, series.json)", interactive=False,
                                   elem_id="download")
        gr.Markdown(f"One job runs at a time; up to {limits.queue_size} wait in the queue, and a job beyond that is "
                    "turned away with a message (try again later).")
        button.click(generate, [upload, prompts, seed, steps, guidance, scale, method, one_stage, use_pose],
                     [prepared, standardized, series, notes, download], concurrency_limit=1)
    return app


def serve(pipe, *, host: str = "127.0.0.1", port: int = 7860, limits: ServeLimits = ServeLimits(),
          default_steps: int = 20, block: bool = True):
    """Queue (one job at a time, bounded) and launch. block=False returns the running app."""
    app = build_app(pipe, limits=limits, default_steps=default_steps)
    app.queue(max_size=limits.queue_size, default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, max_file_size=f"{limits.max_upload_mb}mb", ssr_mode=False,
               prevent_thread_lock=not block, quiet=not block, footer_links=[])
    return app
