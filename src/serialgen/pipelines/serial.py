"""SerialGenPipeline: one reference image + a series of prompts -> that character in each scene
(SerialGen: first standardization, then personalization).

It composes the two task pipelines and re-implements neither: `StandardizePipeline` turns the
reference into the standard image once (A-pose, front view, white background, neutral face),
then `PersonalizePipeline` encodes that image once and draws every prompt of the series,
in batches whose classifier-free guidance halves share one UNet call per step.

One-stage use (the baselines of the paper's Table 2, or a bare IP-Adapter): `standardize=False`
hands the reference, padded to the canvas, straight to the adapter. An image standardized
earlier can be passed as `standardized=` to skip Stage I.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import torch
from PIL import Image

from ..preprocess import Reference, load_image, prepare_reference
from .personalize import ADAPTER_FILE, PersonalizePipeline, prompt_list
from .standardize import StandardizePipeline

# pairings (train/stage2.py) whose adapters read a standardized reference
TWO_STAGE_PAIRINGS = ("standardized",)
PIPELINE_INDEX = "serialgen_pipeline.json"  # a pipeline folder's parts, relative to it
PARTS = ("standardizer", "adapter", "base", "image_encoder")


def bundled_root() -> Path:
    """The bundled mini models' folder: a pipeline folder (its serialgen_pipeline.json)."""
    from ..models.loading import bundled

    return bundled(PIPELINE_INDEX).parent


def read_pipeline_index(folder: str | Path) -> dict[str, Path]:
    """A pipeline folder's parts -> {part: path}; a clear error for a folder that is not one or
    lacks a part."""
    root = Path(folder)
    index = root / PIPELINE_INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{root} is not a serialgen pipeline folder (no {PIPELINE_INDEX}): save one with "
                                "SerialGenPipeline.save_pretrained")
    names = json.loads(index.read_text())
    out = {}
    for part in PARTS:
        if part == "standardizer" and part not in names:  # a one-stage pipeline has none
            out[part] = None
            continue
        if part not in names or not (root / names[part]).exists():
            raise FileNotFoundError(f"{root}: the pipeline's {part} ({names.get(part, f'not named in {PIPELINE_INDEX}')}) "
                                    "is missing")
        out[part] = root / names[part]
    return out


def _record_of(source: Path | None) -> Path | None:
    if source is None:
        return None
    record = (source if source.is_dir() else source.parent) / "training.json"
    return record if record.is_file() else None


def model_card(pipeline: "SerialGenPipeline", records: dict[str, dict]) -> str:
    """A model card for a saved pipeline: YAML front matter (license, base_model, pipeline_tag,
    library_name, tags), then each part's training data, budget and held-out scores as its
    training.json records them."""
    base = records.get("base", {})
    base_model = base.get("base") or ("serialgen mini text-to-image (trained on the character world)" if base
                                      else "unknown")
    lines = ["---", "license: apache-2.0", f"base_model: {json.dumps(str(base_model))}", "pipeline_tag: text-to-image",
             "library_name: serialgen", "tags:", "- serialgen", "- character-consistency", "- ip-adapter",
             "- personalization", "---", "", "# SerialGen pipeline", "",
             "One reference image of a character and any number of prompts in; that character in each scene out "
             f"(SerialGen, arXiv 2412.01485). Stages: {'Stage I (standardization), then ' if pipeline.standardize else ''}"
             f"Stage II (an image adapter trained on {pipeline.pairing} references).", "",
             "```python", "from serialgen.pipelines import SerialGenPipeline", "",
             "pipe = SerialGenPipeline.from_pretrained(\"THIS_FOLDER\")",
             "out = pipe(\"reference.png\", [\"a character, waving, on a beach, full body shot\"], seed=0)", "```", "",
             "| part | trained on | steps | wall time | held-out scores |", "|---|---|---|---|---|"]
    for part in PARTS:
        r = records.get(part)
        if r is None:
            lines.append(f"| {part} | (no training record: published or constructed weights) | | | |")
            continue
        data = r.get("data_manifest") or {}
        world = f"{data.get('characters', '?')} characters x {data.get('poses_per_character', '?')} poses, " \
                f"world seed {data.get('seed', '?')}" if data else str(r.get("data", "?"))
        held = r.get("heldout") or {}
        scores = ", ".join(f"{k} {v:.3g}" for k, v in held.items() if isinstance(v, (int, float)))
        wall = f"{r['wall_time_s'] / 60:.0f} min" if isinstance(r.get("wall_time_s"), (int, float)) else ""
        lines.append(f"| {part} | {world} | {r.get('steps', '')} | {wall} | {scores} |")
    lines += ["", "Trained with `scripts/train_mini.sh` or `serialgen train` (the command and config of each part are in "
              "its training.json). The measured claims are in the project's docs/REPRODUCTION.md."]
    return "\n".join(lines) + "\n"


def adapter_pairing(adapter: str | Path | None) -> str:
    """The pairing an image adapter was trained with, from the training.json beside it (None: the
    bundled adapter); "standardized" when there is no record."""
    from ..models.loading import bundled

    folder = Path(adapter) if adapter is not None else bundled("stage2")
    record = (folder if folder.is_dir() else folder.parent) / "training.json"
    return json.loads(record.read_text()).get("pairing", "standardized") if record.is_file() else "standardized"


@dataclass
class SerialGenOutput:
    images: list[Image.Image]  # one per prompt, in order
    standardized: Image.Image | None  # the reference the adapter saw, when Stage I ran or was given
    reference: Reference | None  # the prepared input (canvas, mask, pose map), when one was given
    notes: list[str] = field(default_factory=list)

    def save(self, folder: str | Path, prompts: list[str], record: dict | None = None,
             shown: Image.Image | None = None) -> list[str]:
        """Write the series into `folder`: NN.png per image, standardized.png, sheet.png (`shown`, the
        reference as given, default the prepared one, then the series) and series.json (`record`
        plus prompts, files and notes), each atomically. A series written there before loses the files
        its series.json listed that this one does not replace; no other file is touched.
        -> the image files' names."""
        from ..atomic import save_image, write_json
        from ..sheet import series_sheet

        folder = Path(folder)
        names = series_names(len(self.images))
        previous = folder / "series.json"
        if previous.exists():
            try:
                old = json.loads(previous.read_text()).get("files", [])
            except (ValueError, AttributeError):
                old = []
            for name in set(old) - set(names):
                if Path(name).name == name and (folder / name).is_file():
                    (folder / name).unlink()
            if self.standardized is None and (folder / "standardized.png").is_file():
                (folder / "standardized.png").unlink()
        for image, name in zip(self.images, names, strict=True):
            save_image(folder / name, image)
        if self.standardized is not None:
            save_image(folder / "standardized.png", self.standardized)
        if shown is None and self.reference is not None:
            shown = Image.fromarray(self.reference.image)
        if shown is not None:
            save_image(folder / "sheet.png", series_sheet(shown, self.standardized, self.images, prompts))
        write_json(folder / "series.json", (record or {}) | {"prompts": prompts, "files": names, "notes": self.notes},
                   indent=1)
        return names


# what SerialGenOutput.save writes besides the numbered images
SERIES_FILES = ("standardized.png", "sheet.png", "series.json")


def series_names(count: int) -> list[str]:
    """The image files of a series of `count`: 01.png, 02.png, ... (wider for 100 or more)."""
    digits = max(2, len(str(count)))
    return [f"{k + 1:0{digits}d}.png" for k in range(count)]


class SerialGenPipeline:
    """Components: standardize (`StandardizePipeline`, None for one-stage use) and personalize
    (`PersonalizePipeline`)."""

    def __init__(self, standardize: StandardizePipeline | None, personalize: PersonalizePipeline,
                 pairing: str = "standardized"):
        self.standardize, self.personalize, self.pairing = standardize, personalize, pairing
        self.sources: dict[str, Path | None] = {}  # where from_pretrained found each part (their training records)

    @classmethod
    def from_pretrained(cls, pipeline: str | Path | None = None, *,
                        standardizer: str | Path | StandardizePipeline | None = None,
                        adapter: str | Path | None = None, base: str | Path | None = None,
                        image_encoder: str | Path | None = None, one_stage: bool | None = None,
                        allow_pickle: bool = False) -> "SerialGenPipeline":
        """pipeline: a folder `save_pretrained` wrote (its serialgen_pipeline.json names the parts);
        the other arguments, where given, replace its parts. Every argument None: the bundled mini
        models (a pipeline folder too). standardizer: a Stage I folder, or a loaded
        `StandardizePipeline` to share; adapter: an IP-Adapter file or folder; base: a SD1.5/SDXL
        pipeline folder; image_encoder: the adapter's CLIP vision folder.

        One or two stages follow from the adapter: its training.json records the pairing it was
        trained with (`serialgen train stage2 --pairing`). An adapter trained on standardized
        references (and one without a record, e.g. a published IP-Adapter, for SerialGen's use)
        gets Stage I; one trained on raw references (paired, unpaired, or the true standard renders)
        gets none, as it was trained. one_stage=True/False overrides that."""
        given = {"standardizer": standardizer, "adapter": adapter, "base": base, "image_encoder": image_encoder}
        if pipeline is None and all(v is not None for v in given.values()):
            parts = given  # every part named: no pipeline folder is read
        elif pipeline is None and not (bundled_root() / PIPELINE_INDEX).is_file():
            raise FileNotFoundError(f"No bundled mini weights at {bundled_root()}: make them with "
                                    "`bash scripts/train_mini.sh` (it runs `serialgen train` for every part)")
        else:
            parts = read_pipeline_index(pipeline if pipeline is not None else bundled_root())
        standardizer = parts["standardizer"] if standardizer is None else standardizer
        adapter = parts["adapter"] if adapter is None else adapter
        base = parts["base"] if base is None else base
        image_encoder = parts["image_encoder"] if image_encoder is None else image_encoder
        pairing = adapter_pairing(adapter)
        personalize = PersonalizePipeline.from_pretrained(adapter, base=base, image_encoder=image_encoder,
                                                          allow_pickle=allow_pickle)
        if one_stage is None:
            one_stage = pairing not in TWO_STAGE_PAIRINGS
        stage1 = None
        if not one_stage:
            stage1 = standardizer if isinstance(standardizer, StandardizePipeline) else \
                StandardizePipeline.from_pretrained(standardizer, allow_pickle=allow_pickle)
        serial = cls(stage1, personalize, pairing)
        serial.sources = {"standardizer": None if isinstance(standardizer, StandardizePipeline) or one_stage
                          else Path(standardizer), "adapter": Path(adapter), "base": Path(base),
                          "image_encoder": Path(image_encoder)}
        return serial

    def save_pretrained(self, folder: str | Path) -> Path:
        """One folder holding the whole pipeline, each part in its own published layout:
        standardizer/ (a Stage I folder with its vae/ and image_encoder/), base/ (a diffusers
        Stable Diffusion pipeline), image_encoder/ (CLIP vision), adapter/ (ip-adapter.safetensors),
        each with the training.json it was loaded with; serialgen_pipeline.json naming them; and a
        model card, README.md. Written beside and renamed into place: an interrupted save leaves
        the folder as it was. `from_pretrained(folder)` loads it."""
        import os
        import shutil

        from ..atomic import write_json, write_text

        sources = self.sources
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            parts = {"adapter": "adapter", "base": "base", "image_encoder": "image_encoder"}
            if self.standardize is not None:
                parts["standardizer"] = "standardizer"
                self.standardize.standardizer.save_pretrained(tmp / "standardizer")
                self.standardize.vae.save_pretrained(tmp / "standardizer" / "vae")
                self.standardize.image_encoder.save_pretrained(tmp / "standardizer" / "image_encoder")
            personalize = self.personalize
            personalize.base.save_pretrained(tmp / "base", safe_serialization=True)
            personalize.image_encoder.save_pretrained(tmp / "image_encoder")
            (tmp / "adapter").mkdir()
            personalize.adapter.save(tmp / "adapter" / ADAPTER_FILE)
            records = {}
            for part in parts:
                record = _record_of(sources.get(part))
                if record is not None:
                    shutil.copyfile(record, tmp / parts[part] / "training.json")
                    records[part] = json.loads(record.read_text())
            write_json(tmp / PIPELINE_INDEX, {"_class_name": type(self).__name__, **parts, "pairing": self.pairing},
                       indent=2)
            write_text(tmp / "README.md", model_card(self, records))
            if folder.exists():  # replaced whole: the old folder goes only once the new one is complete
                old = folder.parent / f".{folder.name}.old-{os.getpid()}"
                folder.rename(old)
                tmp.rename(folder)
                shutil.rmtree(old)
            else:
                tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Path(folder)

    def to(self, device=None, dtype=None) -> "SerialGenPipeline":
        """Move (and cast) both stages."""
        self.personalize.to(device, dtype)
        if self.standardize is not None:
            self.standardize.to(device, dtype)
        return self

    def enable_model_cpu_offload(self, device="cuda") -> "SerialGenPipeline":
        """Model CPU offload for large (paper-scale) models: every model stays in CPU memory and moves
        to `device` only while it runs, one model of both stages at a time (`devices.ModelOffload`).
        Peak device memory is then the largest model's (a UNet) plus activations."""
        from ..devices import ModelOffload

        offload = ModelOffload(device)
        if self.standardize is not None:
            self.standardize.enable_model_cpu_offload(offload=offload)
        self.personalize.enable_model_cpu_offload(offload=offload)
        return self

    @property
    def progress(self) -> bool:
        return self.personalize.progress

    @progress.setter
    def progress(self, value: bool) -> None:
        self.personalize.progress = value
        if self.standardize is not None:
            self.standardize.progress = value

    def reference_image(self, reference, standardized, standardize: bool, *, seed: int = 0, steps: int = 20,
                        guidance: float = 2.5, use_pose: bool = True, detector=None):
        """The image the adapter reads: `standardized` as given, else Stage I's standardization of
        `reference` (standardize=True), else the prepared reference itself (one-stage use).
        -> (image, the prepared reference or None, notes)."""
        if reference is None and standardized is None:
            raise ValueError("Give a reference image (or an already standardized one as standardized=)")
        if standardized is None and standardize and self.standardize is None:
            raise ValueError("This pipeline has no standardizer: pass standardize=False for one-stage use, or load one")
        notes: list[str] = []
        prepared = None
        if standardized is not None:
            image = Image.fromarray(standardized) if isinstance(standardized, np.ndarray) else load_image(standardized)
        elif standardize:
            result = self.standardize(reference, num_inference_steps=steps, guidance_scale=guidance, seed=seed,
                                      use_pose=use_pose, detector=detector)
            prepared, image = result.references[0], result.images[0]
            notes += prepared.notes
        else:
            prepared = reference if isinstance(reference, Reference) else prepare_reference(
                reference, self.personalize.default_size(), use_pose=False)
            image = Image.fromarray(prepared.image)
            notes.append("one-stage: the reference goes to the adapter unstandardized")
        return image, prepared, notes

    @torch.no_grad()
    def __call__(self, reference=None, prompts: list[str] | str = (), *, standardized=None, standardize: bool | None = None,
                 num_inference_steps: int = 20, guidance_scale: float = 5.0, scale: float = 1.0, seed: int = 0,
                 batch_size: int = 8, negative_prompt: str = "", standardize_steps: int = 20,
                 standardize_guidance: float = 2.5, use_pose: bool = True, detector=None,
                 first_index: int = 0) -> SerialGenOutput:
        """reference: an image path, PIL image or prepared `Reference`. standardized: an image already
        standardized (skips Stage I; `reference` may then be None). standardize=False: one-stage use;
        None (default): Stage I when this pipeline has a standardizer.
        Image i of the series starts from noise seeded by (seed, i), whatever the batching;
        first_index: the series index of the first prompt (a series drawn in several calls)."""
        # 1. Check inputs
        standardize = self.standardize is not None if standardize is None else standardize
        prompts = prompt_list(prompts)

        # 2. Stage I, once: the standardized reference (or the given one, or none for one-stage use)
        image, prepared, notes = self.reference_image(reference, standardized, standardize, seed=seed,
                                                      steps=standardize_steps, guidance=standardize_guidance,
                                                      use_pose=use_pose, detector=detector)

        # 3. Stage II: encode the reference once, then the series in guidance-batched groups
        tokens = self.personalize.image_tokens(np.asarray(image.convert("RGB")))
        series = self.personalize(image_tokens=tokens, prompts=prompts, negative_prompt=negative_prompt,
                                  num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, scale=scale,
                                  seed=seed, batch_size=batch_size, first_index=first_index)
        return SerialGenOutput(series.images, image if (standardize or standardized is not None) else None, prepared,
                               notes)


class SerialMethod:
    """What every method built on a `SerialGenPipeline` (its `serial`) shares: the serial pipeline's
    device, dtype, model offload and progress bars are the method's."""

    serial: SerialGenPipeline

    def to(self, device=None, dtype=None) -> Self:
        self.serial.to(device, dtype)
        return self

    def enable_model_cpu_offload(self, device="cuda") -> Self:
        """SerialGenPipeline.enable_model_cpu_offload."""
        self.serial.enable_model_cpu_offload(device)
        return self

    @property
    def progress(self) -> bool:
        return self.serial.progress

    @progress.setter
    def progress(self, value: bool) -> None:
        self.serial.progress = value
