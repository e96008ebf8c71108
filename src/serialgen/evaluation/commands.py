"""What `serialgen eval stage1|t2i|stage2` runs: load the models, score them on the held-out split,
and lay out the results as markdown tables and one image sheet. The CLI only parses and prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.memory import WorldArrays
from ..sheet import grid
from .judge import Judge
from .series import Protocol, evaluate_series
from .stage1 import background_leak, evaluate_stage1
from .t2i import evaluate_t2i


@dataclass
class Scored:
    rows: list[tuple[str, dict]]  # (model name, its scores), then the baselines
    sheet: np.ndarray | None  # uint8 (H, W, 3): what the models made, beside their inputs and the truth
    tables: list[str] = field(default_factory=list)  # markdown, for the terminal


def run_name(path: str) -> str:
    """A run's name from its model folder (runs/NAME/model -> NAME)."""
    p = Path(path)
    return p.parent.name if p.name == "model" and p.parent.name else p.name


def table(rows: list[tuple[str, dict]], columns: list[tuple[str, str]]) -> str:
    """A markdown table: one row per (name, scores), columns (header, dotted key)."""
    def get(scores, key):
        for part in key.split("."):
            scores = scores.get(part, float("nan")) if isinstance(scores, dict) else float("nan")
        if isinstance(scores, dict) and "mean" in scores:  # a bootstrap interval
            return f"{scores['mean']:.3f} [{scores['lo']:.3f}, {scores['hi']:.3f}]"
        return f"{scores:.3f}" if isinstance(scores, float) else str(scores)

    lines = ["| model | " + " | ".join(h for h, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(get(scores, k) for _, k in columns) + " |" for name, scores in rows]
    return "\n".join(lines)


def score_stage1(test: WorldArrays, weights: list[str | None], judge: Judge, samples: int, steps: int,
                 guidance: float, seed: int, leak: bool = False) -> Scored:
    """Each standardizer folder (None = the bundled one) on `samples` held-out characters, then
    the white canvas, the colour silhouette and the true standard render as rows. Sheet rows:
    references, each model's images, the silhouettes, the truth."""
    from ..data.heldout import held_out_references
    from ..pipelines.standardize import StandardizePipeline

    refs, truth = held_out_references(test, min(samples, 8))
    columns, rows, silhouettes = [[r.image for r in refs]], [], None
    for folder in weights:
        pipe = StandardizePipeline.from_pretrained(folder)
        scores = evaluate_stage1(pipe, test, samples, steps, guidance, seed, judge=judge)
        columns.append(scores.pop("images")[:len(refs)])
        silhouettes = scores.pop("silhouettes")
        if leak:
            scores["leak"] = {"fbdm": background_leak(pipe, judge, test, samples, steps, guidance, seed)}
            if pipe.standardizer.config.fbdm:
                scores["leak"]["no_fbdm"] = background_leak(pipe, judge, test, samples, steps, guidance, seed,
                                                            fbdm=False)
        rows.append((run_name(folder) if folder else "bundled", scores))
    if silhouettes is not None:
        columns.append(silhouettes[:len(refs)])
    first = rows[0][1]
    rows.append(("white canvas (floor)", {"psnr_ci": first["blank"]["psnr"], "ssim_ci": first["blank"]["ssim"]}
                 | first["baselines"]["white"]))
    if "silhouette" in first["baselines"]:
        rows.append(("colour silhouette (trivial)", first["baselines"]["silhouette"]
                     | {"appearance_ci": first["silhouette_appearance"]["mean"]}))
    rows.append(("true standard render", {"appearance_ci": first["appearance_truth_ci"],
                                          "height": {"within_5pct_ci": 1.0}}))
    headers = [("PSNR (dB)", "psnr_ci"), ("SSIM", "ssim_ci"), ("figure PSNR", "figure_psnr_ci"),
               ("figure SSIM", "figure_ssim_ci"), ("appearance read back", "appearance_ci"),
               ("height within 5%", "height.within_5pct_ci"), ("characters", "count")]
    if leak:
        headers += [("leak", "leak.fbdm.leak_ci"), ("leak without FBDM", "leak.no_fbdm.leak_ci")]
    tables = [table(rows, headers)]
    if len(weights) > 1:
        tables.append(f"Each model minus {rows[0][0]}, paired over the same characters (t intervals):\n"
                      + table(stage1_differences(rows[:len(weights)]), DIFFERENCES))
    return Scored(rows, grid(columns + [list(truth)]), tables)


DIFFERENCES = [("PSNR (dB)", "psnr"), ("SSIM", "ssim"), ("figure PSNR", "figure_psnr"), ("figure SSIM", "figure_ssim"),
               ("appearance read back", "appearance"), ("height within 5%", "within_5pct")]


def stage1_differences(models: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Each of `models[1:]` ((name, evaluate_stage1's scores), on the same characters) minus the
    first, per character, as t intervals (`seed_character_ci` with one model per row) of every
    DIFFERENCES column. -> rows for `table`."""
    from .stats import seed_character_ci

    def values(scores: dict, key: str) -> np.ndarray:
        if key == "within_5pct":
            return (np.asarray(scores["height"]["per_character"]) <= 0.05).astype(float)
        return np.asarray(scores["per_character"].get(key, [np.nan] * scores["count"]), np.float64)

    first, base = models[0]
    return [(f"{name} - {first}", {key: seed_character_ci(values(scores, key), values(base, key)) for _, key in DIFFERENCES})
            for name, scores in models[1:]]


def score_t2i(test: WorldArrays, base: str | None, judge: Judge, samples: int, steps: int, guidance: float,
              seed: int) -> Scored:
    """The text-to-image base from `samples` held-out captions; real renders and chance as rows."""
    from ..models.loading import load_base

    scores = evaluate_t2i(load_base(base), judge, test, samples, steps, guidance, seed)
    images = scores.pop("images")
    rows = [(Path(base).name if base else "bundled", scores)]
    keys = ["action", "view", "background", "expression", "top_color", "hair_color"]
    tables = [table(rows, [("CLIP-T", "clip_t")] + [(k, f"accuracy.{k}") for k in keys]),
              table([("real renders", scores["accuracy_real_images"] | {"clip_t": scores["clip_t_real_images"]}),
                     ("chance", scores["chance"] | {"clip_t": float("nan")})],
                    [("CLIP-T", "clip_t")] + [(k, k) for k in keys])]
    return Scored(rows, grid([images[k:k + 8] for k in range(0, min(len(images), 32), 8)]), tables)


def score_series(test: WorldArrays, adapters: list[str | None], judge: Judge, protocol: Protocol,
                 standardizer: str | None = None, base: str | None = None, image_encoder: str | None = None,
                 face=None, method: str = "serialgen") -> Scored:
    """Each image adapter (None = the bundled one) under the paper's protocol, with Stage I when the
    adapter was trained on standardized references (`SerialGenPipeline.from_pretrained` decides);
    one standardizer is loaded once and shared. method: the generation method run on each (METHODS:
    serialgen, or one composed on it). Sheet: the two-stage model's series (else the last)."""
    from ..models.loading import bundled
    from ..pipelines import compose_method
    from ..pipelines.serial import TWO_STAGE_PAIRINGS, SerialGenPipeline, adapter_pairing
    from ..pipelines.standardize import StandardizePipeline

    rows, sheet, shared = [], None, None
    for adapter in adapters:
        if shared is None and adapter_pairing(adapter) in TWO_STAGE_PAIRINGS:
            shared = StandardizePipeline.from_pretrained(standardizer)
        serial = SerialGenPipeline.from_pretrained(standardizer=shared, adapter=adapter, base=base,
                                                   image_encoder=image_encoder)
        two_stage = serial.standardize is not None
        serial.progress = False
        scores = evaluate_series(compose_method(serial, method), judge, test, protocol, two_stage, face=face)
        made = scores.pop("sheets")
        folder = Path(adapter) if adapter else bundled("stage2")
        name = f"{run_name(str(folder if folder.is_dir() else folder.parent))} ({serial.pairing})"
        rows.append((name if method == "serialgen" else f"{method}: {name}", scores))
        if sheet is None or two_stage:
            sheet = grid([[ref, np.asarray(std) if std is not None else ref] + list(ims[:8])
                          for ref, std, ims, _ in made[:6]])
    tables = [table(rows, [("CLIP-T", "clip_t"), ("CLIP-I", "clip_i"), ("AP-CLIP-I", "ap_clip_i"),
                           ("face sim.", "face_sim"), ("text control", "text_control.mean"),
                           ("appearance", "appearance.mean"), ("layout div.", "layout_diversity"),
                           ("s/character", "seconds_per_character")]),
              f"{rows[-1][1]['characters']} held-out characters x {protocol.prompts} prompts x {protocol.seeds} "
              "seeds; mean [95% bootstrap interval over characters]"]
    return Scored(rows, sheet, tables)
