"""`serialgen report`: docs/REPRODUCTION.md, the paper's claims checked on the character world.

    serialgen report --data data/world128 [--out docs/REPRODUCTION.md]

Scores the Stage I ablation models (the paper's Table 3) and the three Stage II pairings
(Table 2) on the test characters of `--data` under the paper's protocol, graded by the judge;
keeps the scores as JSON beside the report (a rerun reuses them while what made them is
unchanged, or --force), draws the figures, and writes the markdown: our tables with 95%
intervals over training seeds and characters, the paper's numbers beside them, and a verdict for
each claim from paired intervals of the differences (the compared models are scored on the same
characters). A discussion written after reading the results, `discussion.md` in the scores
folder, is included as it is.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import save_image, write_json, write_text
from . import APPEARANCE, TEXT_CONTROL, Protocol
from .gap import loss_gap, loss_gap_parts
from .stats import seed_character_ci

# Table 3's rows, three training seeds each (configs/mini/stage1_ablation_p5.toml, scripts/train_mini.sh)
STAGE1_RUNS = tuple((name, f"runs/stage1-abl-{run}-s{seed}/model") for name, run in
                    (("full", "full"), ("no FBDM", "no-fbdm"), ("no RPIM", "no-rpim"), ("neither", "neither"))
                    for seed in range(3))
PAIRINGS = (("unpaired one-stage", "stage2-unpaired"), ("paired one-stage", "stage2-paired"),
            ("SerialGen (two-stage)", "stage2"))  # name, bundled adapter

# Rows beyond the paper's three, given as --adapter NAME=PATH: its own paired baseline (pairing
# "generated": references the two-stage model drew, section 4.3.1; "paired one-stage" above is fed
# true renders of the character) and the oracle (pairing "standard": a perfect Stage I)
PAPER_PAIRED = "paired one-stage (drawn references, the paper's)"
ORACLE = "two-stage with true standard references (the oracle)"
# The paper's token study (supplementary §10): unpaired one-stage adapters reading fewer image
# tokens (`IPAdapter.token_grid`), rows named "unpaired one-stage, N image tokens"; the
# "unpaired one-stage" row is the study's every-token point. They get their own section and figure.
TOKEN_ROW = re.compile(r"^unpaired one-stage, (\d+) image tokens?$")
PAPER_TOKENS = "CLIP-I 83.94 -> 92.07 and CLIP-T 19.03 -> 16.88 as the tokens grow (SDXL, supplementary Fig. 13)"

# The other methods' rows (name, method, its options), each run on the shipped two-stage models
# (`pipelines.compose_method`); the last is Beyond Inserting's own comparison, plain token optimization.
OTHER_METHODS = (("consistent self-attention (StoryDiffusion)", "consistent-attention", {}),
                 ("Layout-and-Retouch", "layout-retouch", {}),
                 ("Beyond Inserting", "beyond-inserting", {}),
                 ("token optimization (Beyond Inserting without its attention loss)", "beyond-inserting",
                  {"attention_weight": None}),
                 ("text-to-image base alone (no reference: the floor)", "base-alone", {}))


class BaseAlone:
    """The floor of the other methods' table: the two-stage pipeline with its image adapter at scale
    0, i.e. the text-to-image base drawing each prompt without seeing the character. What CLIP-I
    and the judge's appearance give a model that was never shown the reference."""

    def __init__(self, serial):
        self.serial = serial

    def __call__(self, reference, prompts, **options):
        return self.serial(reference, prompts, **(options | {"scale": 0.0}))

# What the paper reports (arXiv 2412.01485 v2, §4.3.1 text; Table 3's values are not in its text).
PAPER_TABLE2 = {
    "unpaired one-stage": {"clip_t": 16.08, "clip_i": 89.62, "face_sim": 0.52},
    "paired one-stage": {"clip_t": "21.99 or 21.76", "ap_clip_i": 77.74},
    "SerialGen (two-stage)": {"clip_t": "21.99 or 21.76", "ap_clip_i": 83.17, "clip_i": "paired + 5.49"},
}


@dataclass
class ReportConfig:
    data: str
    out: str = "docs/REPRODUCTION.md"
    scores: str = ""  # folder for JSON scores and figures; "" = beside the report, in reproduction/
    stage1: tuple = STAGE1_RUNS  # (name, model folder)
    adapters: tuple = ()  # (name, adapter file/folder); () = the three bundled pairings
    standardizer: str | None = None  # Stage I of the two-stage row; None = bundled
    base: str | None = None  # text-to-image pipeline folder; None = bundled
    image_encoder: str | None = None  # the adapters' CLIP vision folder; None = bundled
    judge: str | None = None
    protocol: Protocol = field(default_factory=Protocol)
    stage1_samples: int = 64
    gap_characters: int = 48  # held-out characters for the adapters' loss gap
    face_model: str | None = None
    force: bool = False
    methods: tuple = OTHER_METHODS  # (name, method, options) rows of "Other methods"; () skips them
    method_characters: int = 0  # the other methods' characters: the first ones of Table 2's; 0 = all of them
    token_characters: int = 0  # the token study's rows' characters: the first ones of Table 2's; 0 = all of them
    kept_only: bool = False  # write the report from the kept scores alone, scoring nothing
    pairings: bool = True  # score Table 2's rows; False keeps the scores measured earlier

    def scores_dir(self) -> Path:
        return Path(self.scores) if self.scores else Path(self.out).parent / "reproduction"

    @property
    def method_protocol(self) -> Protocol:
        """The protocol the other methods are scored under: Table 2's, on its first
        `method_characters` characters when that is set (each method costs 1-3x a Table 2 row)."""
        if not self.method_characters:
            return self.protocol
        return dataclasses.replace(self.protocol, characters=self.method_characters)

    def row_protocol(self, name: str) -> Protocol:
        """The protocol a Stage II row is scored under: Table 2's, on its first `token_characters`
        characters for the token study's rows when that is set (a figure of three more adapters)."""
        if not (self.token_characters and TOKEN_ROW.match(name)):
            return self.protocol
        return dataclasses.replace(self.protocol, characters=self.token_characters)


def files_digest(path: str | Path) -> str:
    """A digest of what is in a model folder (every file's name and bytes), or of one file with the
    training.json beside it: retraining, re-saving or editing a config changes it."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else \
        [f for f in (p, p.parent / "training.json") if f.is_file()]
    h = hashlib.blake2b(digest_size=16)
    for f in files:
        h.update(str(f.relative_to(p if p.is_dir() else p.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# what makes no kept number: the trainers, the front ends, and this module (it lays the kept
# numbers out; the scoring it runs lives in stage1.py, series.py and gap.py)
NOT_SCORING = ("train", "cli.py", "serve.py", "comfy", "devices.py", "evaluation/report.py")


def source_digest(root: Path | None = None) -> str:
    """A digest of the code that makes the report's numbers: every module of the package (or of a
    copy of it at `root`) but `NOT_SCORING`."""
    root = root or Path(__file__).resolve().parents[1]
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        if rel.parts[0] in NOT_SCORING or rel.as_posix() in NOT_SCORING:
            continue
        h.update(str(rel).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def data_digest(test) -> str:
    """A digest of the held-out samples read: their images and metadata (not the folder's name)."""
    h = hashlib.blake2b(digest_size=16)
    for key in sorted(test.images):
        h.update(key.encode())
        h.update(np.ascontiguousarray(test.images[key]).tobytes())
    for key in sorted(test.characters):
        h.update(np.ascontiguousarray(test.characters[key]).tobytes())
    h.update(json.dumps(test.meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


def provenance(test) -> dict:
    """What every kept score depends on besides its own model: the scoring and sampling code, the
    data, and MediaPipe (person masks of the generated images)."""
    from importlib.metadata import version

    return {"code": source_digest(), "data": data_digest(test), "mediapipe": version("mediapipe")}


def _fingerprint(path: str | Path, settings: dict) -> str:
    """Identity of a scored model's numbers: its files (`files_digest`) and the settings."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(files_digest(path).encode())
    return h.hexdigest()[:16]


def _per_character_settings(settings: dict) -> dict:
    """What one character's scores depend on: the settings but how many characters are scored and
    how the intervals over them are drawn."""
    return {k: v for k, v in settings.items() if k not in ("characters", "bootstrap")}


def _characters_dir(folder: Path, name: str, key: str) -> Path:
    """Where a row's per-character scores are kept while it is scored (`evaluate_series(resume=)`),
    named after the row and what made its numbers: an interrupted report goes on from the last
    character, and one over more characters scores only the new ones."""
    return folder / "characters" / f"{_slug(name)}-{key}"


def _made_by(folder: str | None, bundled_name: str) -> str:
    """Identity of a component the scores depend on (the judge, the base, the standardizer): its
    files, so retraining, re-shipping or re-configuring it makes the kept scores stale."""
    from ..models.loading import bundled

    return files_digest(folder or bundled(bundled_name))


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save_json(path: Path, data: dict) -> None:
    write_json(path, data, indent=1)


def _store_row(path: Path, name: str, value: dict | None) -> dict:
    """Keep one row's scores in the scores file `path` (drop it for None) and return the file's rows.
    The file is re-read under a lock on its folder, so reports scoring other rows into the same
    folder at the same time keep theirs."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = _load_json(path)
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
        _save_json(path, data)
        return data
    finally:
        os.close(fd)  # releases the lock


def _absent(path: str | Path, name: str, kept: bool) -> None:
    """Say what happens to the row of a model that is not here."""
    print(f"report: {path} is not here; " + (f"keeping the scores measured earlier for {name!r}" if kept else
          f"the row {name!r} is left out (train it with scripts/train_mini.sh)"))


def grouped(pairs) -> dict[str, list[str]]:
    """(name, path) pairs -> {name: [paths]}, in order: a name given more than once is one row whose
    models were trained independently with the same recipe (training seeds)."""
    out: dict[str, list[str]] = {}
    for name, path in pairs:
        out.setdefault(name, []).append(str(path))
    return out


# per-character metric -> where its interval goes in a row (dotted), for Table 2 and Table 3 rows
PAIRING_METRICS = {"clip_t": "clip_t", "clip_i": "clip_i", "ap_clip_i": "ap_clip_i", "face_sim": "face_sim",
                   "text_control": "text_control.mean", "appearance": "appearance.mean", "loss_gap": "loss_gap",
                   "own_vs_none": "loss_parts.own_vs_none", "other_vs_none": "loss_parts.other_vs_none",
                   "look_vs_none": "loss_parts.look_vs_none", "layout_diversity": "layout_diversity",
                   "seconds": "seconds_per_character"}
STAGE1_METRICS = {"psnr": "psnr_ci", "ssim": "ssim_ci", "figure_psnr": "figure_psnr_ci",
                  "figure_ssim": "figure_ssim_ci", "appearance": "appearance_ci"}


def seed_tables(row: dict, metric: str) -> np.ndarray | None:
    """A row's (training seeds x characters) scores of one metric (NaN where a character has none)."""
    if metric in row.get("per_seed", {}):
        return np.array(row["per_seed"][metric], float)
    values = row.get("per_character", {}).get(metric)
    return None if values is None else np.array([[np.nan if v is None else v for v in values]], float)


def merge_runs(runs: list[dict], metrics: dict[str, str]) -> dict:
    """One row from the scores of its training seeds: the first run's fields, each metric's mean
    with an interval over seeds and characters (`seed_character_ci`) where `metrics` puts it, the
    (seeds x characters) tables for paired differences, and the runs themselves."""
    row = {k: v for k, v in runs[0].items() if k not in ("fingerprint",)}
    row["per_seed"] = {}
    for metric, where in metrics.items():
        tables = [seed_tables(r, metric) for r in runs]
        if any(t is None for t in tables) or len({t.shape[1] for t in tables}) != 1:
            continue
        table = np.concatenate(tables)
        row["per_seed"][metric] = [[None if not np.isfinite(x) else float(x) for x in seed] for seed in table]
        target, *path = where.split(".")
        ci = seed_character_ci(table)
        if path:
            row[target] = dict(row.get(target) or {}) | {path[0]: ci}
        else:
            row[target] = ci
    row["seeds"], row["runs"] = len(runs), runs
    return row


def attribute_accuracies(row: dict) -> dict[str, float]:
    """A Table 2 row's accuracy per attribute of the judge's (text control's and appearance's),
    the mean over its training seeds' runs (each scored on the same characters); a run without
    an attribute's images (n = 0) leaves it out."""
    values: dict[str, list[float]] = {}
    for run in _kept_runs(row):
        for attribute, score in (run.get("text_control", {}) | run.get("appearance", {})).items():
            if attribute != "mean" and isinstance(score, dict) and score.get("n"):
                values.setdefault(attribute, []).append(score["mean"])
    return {attribute: float(np.mean(v)) for attribute, v in values.items()}


def _training_seed(path: str | Path) -> dict:
    """{"training_seed": the seed a model was trained with} from the training.json beside it, or {}:
    a seed fixes the trainers' batches and noise, so rows trained with the same seeds are compared
    seed by seed (`difference`)."""
    p = Path(path)
    return _seed_in(_load_json((p if p.is_dir() else p.parent) / "training.json"))


def _seed_in(info: dict) -> dict:
    """{"training_seed": ...} from a model's loaded training.json, or {} when it names none."""
    seed = info.get("config", {}).get("seed")
    return {} if seed is None else {"training_seed": int(seed)}


def training_seeds(row: dict) -> list[int] | None:
    """The training seeds of a row's runs, in the order of its (seeds x characters) tables; None
    when a run's seed is not known or two runs share one."""
    seeds = [run.get("training_seed") for run in _kept_runs(row)]
    return seeds if None not in seeds and len(set(seeds)) == len(seeds) else None


def _kept_runs(entry: dict | None) -> list[dict]:
    if not entry:
        return []
    return entry.get("runs") or [entry]


def _scored_from(run: dict, path: str | Path) -> bool:
    """Whether a kept run was scored from the model folder `path` (as its row records it)."""
    recorded = run.get("model") or run.get("adapter")
    return recorded is not None and Path(recorded).resolve() == Path(path).resolve()


def _present(name: str, paths: list[str], cache: dict, runs: list[dict]):
    """Each (seed index, path, its kept run or None) of a row's models that is here; the kept run
    of a model that is not here goes into `runs` as it is. A model that is not here keeps only the
    run scored from its own path, never the run kept at its seed's place from another model (an
    earlier recipe's, or another seed's given alone); a model that is here is offered the run from
    its path, else the one at its place, which its caller reuses only if the fingerprint matches."""
    kept = _kept_runs(cache.get(name))
    for k, path in enumerate(paths):
        here = Path(path).exists()
        old = next((run for run in kept if _scored_from(run, path)), None)
        if old is None and here and k < len(kept):
            old = kept[k]  # e.g. a renamed folder: the same files give the same fingerprint
        if not here:
            _absent(path, name, kept=old is not None)
            runs += [old] if old is not None else []
            continue
        yield k, path, old


def _stage1_settings(cfg: ReportConfig, made: dict) -> dict:
    """What a Stage I ablation model's scores depend on besides its files."""
    return {"samples": cfg.stage1_samples, "steps": cfg.protocol.steps, "seed": cfg.protocol.seed,
            "judge": _made_by(cfg.judge, "judge")} | made


def _pairing_settings(cfg: ReportConfig, made: dict) -> tuple[dict, dict]:
    """What every Stage II row's scores depend on besides the protocol and the adapter's files, and
    what only the two-stage rows' depend on (the standardizer)."""
    common = made | {"face": cfg.face_model or "dlib", "gap_characters": cfg.gap_characters,
                     "base": _made_by(cfg.base, "t2i"), "judge": _made_by(cfg.judge, "judge")}
    return common, {"standardizer": _made_by(cfg.standardizer, "stage1")}


def _method_settings(cfg: ReportConfig, made: dict, adapter: str | None, protocol: Protocol) -> dict:
    """What the other methods' scores depend on besides the method and its options: the protocol and
    the two-stage models they run on (`adapter`: the two-stage row's first model; None: bundled)."""
    return dataclasses.asdict(protocol) | made | {
        "face": cfg.face_model or "dlib", "base": _made_by(cfg.base, "t2i"), "judge": _made_by(cfg.judge, "judge"),
        "standardizer": _made_by(cfg.standardizer, "stage1"), "image_encoder": _made_by(cfg.image_encoder, "clip"),
        "adapter": _made_by(adapter and str(Path(adapter) if Path(adapter).is_dir() else Path(adapter).parent),
                            "stage2")}


def _strip_file(folder: Path, name: str) -> Path:
    """Where a Table 3 row's first model's standardized test references are kept: the figure is
    drawn from every row's strip, so a row scored in another session keeps its place in it."""
    return folder / f"stage1_{_slug(name)}.png"


def run_stage1(cfg: ReportConfig, test, made: dict | None = None) -> dict:
    """Score each ablation model (cached); keep each row's first model's images on the figure's
    references, and draw the figure: the references, each row that has its images kept, the truth.
    made: `provenance(test)`, when the caller has it."""
    from ..data.heldout import held_out_references
    from ..pipelines.standardize import StandardizePipeline
    from . import Judge, evaluate_stage1
    from .stage1 import standardize

    folder = cfg.scores_dir()
    cache = _load_json(folder / "stage1_ablation.json")
    settings = _stage1_settings(cfg, made or provenance(test))
    refs, _ = held_out_references(test, min(8, cfg.stage1_samples))
    judge = None
    for name, paths in grouped(cfg.stage1).items():
        runs: list[dict] = []
        for k, path, old in _present(name, paths, cache, runs):
            key = _fingerprint(path, settings)
            if old is not None and old.get("fingerprint") == key and not cfg.force:
                runs.append(old | _training_seed(path))
                if k == 0 and not _strip_file(folder, name).exists():  # drawn as its scoring drew them:
                    batch, _ = held_out_references(test, min(16, cfg.stage1_samples))  # the first batch of 16
                    images = standardize(StandardizePipeline.from_pretrained(path), batch, cfg.protocol.steps, 2.5,
                                         cfg.protocol.seed)[:len(refs)]
                    save_image(_strip_file(folder, name), np.concatenate([np.asarray(im) for im in images], 1))
                continue
            pipe = StandardizePipeline.from_pretrained(path)
            judge = judge or Judge.from_pretrained(cfg.judge)  # only when some row is scored
            started = time.perf_counter()
            scores = evaluate_stage1(pipe, test, cfg.stage1_samples, cfg.protocol.steps, 2.5, cfg.protocol.seed,
                                     judge=judge)
            images = scores.pop("images")[:len(refs)]
            if k == 0:
                save_image(_strip_file(folder, name), np.concatenate(images, 1))
            scores.pop("silhouettes", None)  # the trivial baseline's images; its scores stay in "baselines"
            runs.append(scores | {"fingerprint": key, "model": str(path), "data": settings["data"],
                                  "cost": _cost(started)} | _training_seed(path))
            # each model kept as soon as it is measured
            cache = _store_row(folder / "stage1_ablation.json", name, merge_runs(runs, STAGE1_METRICS))
        if runs:
            cache = _store_row(folder / "stage1_ablation.json", name, merge_runs(runs, STAGE1_METRICS))
    draw_stage1_figure(cfg, test, cache)
    # the table lists the rows as the figure draws them, then rows kept from earlier runs
    return {name: cache[name] for name in grouped(cfg.stage1) if name in cache} | cache


def draw_stage1_figure(cfg: ReportConfig, test, cache: dict) -> None:
    """Table 3's figure from the kept strips (no model is read): the test references, each row that
    is kept with its strip drawn on these references (`cfg.stage1`'s first, then rows kept from
    earlier runs, as the table lists them), the truth."""
    from ..data.heldout import held_out_references

    folder = cfg.scores_dir()
    refs, truth = held_out_references(test, min(8, cfg.stage1_samples))
    first = np.concatenate([r.image for r in refs], 1)
    strips = {name: np.asarray(Image.open(_strip_file(folder, name)).convert("RGB"))
              for name in _figure_rows(grouped(cfg.stage1), cache) if _strip_file(folder, name).exists()}
    drawn = [name for name, strip in strips.items() if strip.shape == first.shape]  # drawn on these references
    if drawn:
        save_image(folder / "stage1_ablation.png",
                   np.concatenate([first] + [strips[n] for n in drawn] + [np.concatenate(list(truth), 1)], 0))
        _save_json(folder / "stage1_ablation_rows.json", {"rows": drawn})  # the figure's caption


def run_pairings(cfg: ReportConfig, test, made: dict | None = None) -> dict:
    """Score each Stage II pairing under the protocol (cached), every training seed of a row; draw
    the rows' first models' series side by side. made: `provenance(test)`, when the caller has it."""
    from ..models.loading import record_digest
    from ..pipelines.serial import TWO_STAGE_PAIRINGS, SerialGenPipeline, adapter_pairing
    from ..pipelines.standardize import StandardizePipeline
    from . import Judge, evaluate_series

    folder = cfg.scores_dir()
    cache = _load_json(folder / "pairings.json")
    adapters = _adapter_rows(cfg)
    common, standardizer = _pairing_settings(cfg, made or provenance(test))
    trained_on = record_digest(cfg.base, "t2i")  # the base's identity as trainers record it (training.json)
    judge, face, standardize = None, None, None
    for name, paths in adapters.items():
        runs: list[dict] = []
        protocol = cfg.row_protocol(name)
        settings = dataclasses.asdict(protocol) | common
        for k, path, old in _present(name, paths, cache, runs):
            info = _load_json((Path(path) if Path(path).is_dir() else Path(path).parent) / "training.json")
            if info.get("base_made_by", trained_on) != trained_on:
                print(f"report: {path} was trained on another text-to-image base than this report's; it is left out "
                      f"of the row {name!r} (retrain it on this base)")
                continue
            pairing = adapter_pairing(path)
            two_stage = pairing in TWO_STAGE_PAIRINGS
            oracle = pairing == "standard"  # fed the true standard render: a perfect Stage I
            row_settings = settings | standardizer if two_stage else settings
            key = _fingerprint(path, row_settings)
            if old is not None and old.get("fingerprint") == key and not cfg.force and \
                    (k or _sheet_file(folder, name).exists()):
                runs.append(old | _seed_in(info))
                continue
            if judge is None:
                from ..face import face_embedder

                judge, face = Judge.from_pretrained(cfg.judge), face_embedder(cfg.face_model)
            if two_stage:
                standardize = standardize or StandardizePipeline.from_pretrained(cfg.standardizer)
            serial = SerialGenPipeline.from_pretrained(standardizer=standardize, adapter=path, base=cfg.base,
                                                       image_encoder=cfg.image_encoder, one_stage=not two_stage)
            serial.progress = False
            print(f"report: {name}{f' (training seed {k + 1} of {len(paths)})' if len(paths) > 1 else ''}: "
                  f"{protocol.characters} characters x {protocol.prompts} prompts x {protocol.seeds} seeds")
            resume = _characters_dir(folder, name, _fingerprint(path, _per_character_settings(row_settings)))
            resumed, started = _cached_characters(resume, protocol.characters), time.perf_counter()
            scores = evaluate_series(serial, judge, test, protocol, two_stage or oracle, face=face, oracle=oracle,
                                     resume=resume)
            sheets = scores.pop("sheets")
            if k == 0:
                save_image(_sheet_file(folder, name), sheet_rows(sheets))
            gap = loss_gap(serial, test, cfg.gap_characters, two_stage, cfg.protocol.seed, oracle=oracle)
            if gap:  # needs two held-out characters
                scores["per_character"] |= loss_gap_parts(gap)
                scores["loss_gap_losses"] = {k: v for k, v in gap.items() if k not in ("per_target", "gap_per_target")}
            personalize = serial.personalize
            scores["image_tokens"] = int(personalize.adapter.tokens(personalize.negative_hidden_states()).shape[1])
            runs.append(scores | {"fingerprint": key, "adapter": str(path),
                                  "pairing": info.get("pairing", "standardized"), "data": settings["data"],
                                  "cost": _cost(started, protocol.characters, resumed)} | _seed_in(info))
            # each model kept as soon as it is measured
            cache = _store_row(folder / "pairings.json", name, merge_runs(runs, PAIRING_METRICS))
        if runs:
            cache = _store_row(folder / "pairings.json", name, merge_runs(runs, PAIRING_METRICS))
        elif name in cache:
            cache = _store_row(folder / "pairings.json", name, None)
    draw_pairings_figure(cfg, test, cache)
    return cache


def _adapter_rows(cfg: ReportConfig) -> dict[str, list[str]]:
    """Table 2's rows and their models (default: the bundled unpaired, paired and two-stage adapters)."""
    from ..models.loading import bundled

    return grouped(cfg.adapters or tuple((name, str(bundled(b))) for name, b in PAIRINGS))


def _figure_rows(named, cache: dict) -> list[str]:
    """A figure's rows in the table's order: the rows `named` that are kept, then every other kept row
    (one scored by an earlier run), so a run that scores one row draws it beside the others."""
    return [name for name in dict.fromkeys([*named, *cache]) if name in cache]


def draw_pairings_figure(cfg: ReportConfig, test, cache: dict, names: list[str] | None = None) -> None:
    """Table 2's figure from the kept sheets (no model is read): `names` (default: every row whose
    first model is here) first, then the other kept rows (`_figure_rows`), each that has its sheet,
    so re-scoring one row redraws it with the others. The token study's rows have a figure of their own."""
    folder = cfg.scores_dir()
    if names is None:
        names = [name for name, paths in _adapter_rows(cfg).items() if Path(paths[0]).exists()]
    names = [name for name in _figure_rows(names, cache)
             if not TOKEN_ROW.match(name) and _sheet_file(folder, name).exists()]
    files = [_sheet_file(folder, name) for name in names]
    if files:
        height = test.images["image"].shape[1]
        save_image(folder / "pairings.png", pairings_figure([np.asarray(Image.open(f).convert("RGB")) for f in files],
                                                           height))
        _save_json(folder / "pairings_rows.json", {"rows": names})  # the figure's caption


def run_methods(cfg: ReportConfig, test, made: dict | None = None) -> dict:
    """Score each other method (`cfg.methods`) on the shipped two-stage models under the same protocol
    (cached by what made it: the models, the settings, the method and its options)."""
    from ..pipelines import Optimization, compose_method
    from ..pipelines.serial import SerialGenPipeline
    from . import Judge, evaluate_series

    folder = cfg.scores_dir()
    cache = _load_json(folder / "methods.json")
    adapter = grouped(cfg.adapters).get("SerialGen (two-stage)", [None])[0]  # the two-stage row's first model
    protocol = cfg.method_protocol
    settings = _method_settings(cfg, made or provenance(test), adapter, protocol)
    judge, face, serial = None, None, None
    for name, method, options in cfg.methods:
        key = _settings_key(settings | {"method": method, "options": options})
        kept = _kept_runs(cache.get(name))
        if kept and kept[0].get("fingerprint") == key and not cfg.force:
            continue
        if judge is None:
            from ..face import face_embedder

            judge, face = Judge.from_pretrained(cfg.judge), face_embedder(cfg.face_model)
            serial = SerialGenPipeline.from_pretrained(standardizer=cfg.standardizer, adapter=adapter, base=cfg.base,
                                                       image_encoder=cfg.image_encoder, one_stage=False)
            serial.progress = False
        built = {"optimization": Optimization(**options)} if method == "beyond-inserting" else dict(options)
        print(f"report: {name}: {protocol.characters} characters x {protocol.prompts} prompts x "
              f"{protocol.seeds} seeds")
        runner = BaseAlone(serial) if method == "base-alone" else compose_method(serial, method, **built)
        per_character = _per_character_settings(settings) | {"method": method, "options": options}
        resume = _characters_dir(folder, name, _settings_key(per_character))
        resumed, started = _cached_characters(resume, protocol.characters), time.perf_counter()
        scores = evaluate_series(runner, judge, test, protocol, True, face=face, resume=resume)
        save_image(_sheet_file(folder, name), sheet_rows(scores.pop("sheets")))
        cache = _store_row(folder / "methods.json", name,  # each method kept as soon as it is measured
                           merge_runs([scores | {"fingerprint": key, "method": method, "options": options,
                                                 "data": settings["data"],
                                                 "cost": _cost(started, protocol.characters, resumed)}],
                                               PAIRING_METRICS))
    return {name: cache[name] for name, _, _ in cfg.methods if name in cache}


def mark_outdated(cfg: ReportConfig, made: dict, stage1: dict, pairings: dict, methods: dict) -> None:
    """--kept-only: mark (`"outdated": True`) each kept row with a run whose model is here but whose
    fingerprint is not what this checkout would give it (other scoring code, model files, judge,
    base, standardizer or settings): such a row is shown as kept, marked, and its claims are not
    judged. A run whose model is not here cannot be checked and is shown as kept. A row's character
    count is the one it was scored on (the token study and the other methods may hold fewer)."""
    from ..pipelines.serial import TWO_STAGE_PAIRINGS, adapter_pairing

    def here(run: dict, key: str) -> str | None:
        path = run.get(key)
        return path if path and Path(path).exists() else None

    def protocol(run: dict) -> Protocol:
        return dataclasses.replace(cfg.protocol, characters=run.get("characters", cfg.protocol.characters))

    for row in [*stage1.values(), *pairings.values()]:  # kept before runs named their seeds
        for run in _kept_runs(row):
            if "training_seed" not in run and (path := here(run, "model") or here(run, "adapter")):
                run.update(_training_seed(path))
    settings = _stage1_settings(cfg, made)
    for row in stage1.values():
        row["outdated"] = any(run.get("fingerprint") != _fingerprint(path, settings)
                              for run in _kept_runs(row) if (path := here(run, "model")))
    common, standardizer = _pairing_settings(cfg, made)

    def pairing_key(run: dict, path: str) -> str:
        extra = standardizer if adapter_pairing(path) in TWO_STAGE_PAIRINGS else {}
        return _fingerprint(path, dataclasses.asdict(protocol(run)) | common | extra)

    for row in pairings.values():
        row["outdated"] = any(run.get("fingerprint") != pairing_key(run, path)
                              for run in _kept_runs(row) if (path := here(run, "adapter")))
    # the methods ran on the two-stage row's first model: the one named, else the one kept
    adapter = grouped(cfg.adapters).get("SerialGen (two-stage)", [None])[0] or \
        next(iter(_kept_runs(pairings.get("SerialGen (two-stage)"))), {}).get("adapter")
    for row in methods.values():
        run = _kept_runs(row)[0]
        row["outdated"] = run.get("fingerprint") != _settings_key(
            _method_settings(cfg, made, adapter, protocol(run)) | {"method": run.get("method"),
                                                                   "options": run.get("options", {})})


def _cost(started: float, characters: int | None = None, resumed: int = 0) -> dict:
    """What scoring one model took: wall seconds since `started`, and the threads and CPUs it had;
    for a row scored per character, how many `characters` it has and how many of them were `resumed`
    from an earlier run's cache (their time is not in these seconds)."""
    import torch

    return {"seconds": round(time.perf_counter() - started, 1), "threads": torch.get_num_threads(),
            "cpus": os.cpu_count()} | ({"characters": characters, "resumed": resumed} if characters else {})


def _cached_characters(folder: Path, characters: int) -> int:
    """How many of the first `characters` characters a row's per-character cache already holds."""
    return sum((folder / f"{c:04d}.npz").exists() for c in range(characters))


def cost_lines(*tables: dict, whole: tuple[dict, ...] = ()) -> list[str]:
    """The report's cost: each scored model's wall time as recorded when it was scored, a row's
    training seeds together. `tables` are scored character by character and can go on from an
    earlier run's per-character cache: such a model shows the last run's time and how many
    characters that run scored (or *, timed before that was counted), and the total is then a lower
    bound. `whole` tables (Table 3) are scored in one run."""
    rows: dict[str, list] = {}
    missing = 0
    for per, group in ((True, tables), (False, whole)):
        for table in group:
            for name, row in table.items():
                for run in row.get("runs", [row]):
                    if run.get("cost"):
                        rows.setdefault(name, []).append((run["cost"], per))
                    else:
                        missing += 1
    if not rows:
        return []
    timed = [t for runs in rows.values() for t in runs]
    total = sum(c["seconds"] for c, _ in timed) / 3600
    counts = [c["threads"] for c, _ in timed]
    usual = max(counts, key=counts.count)  # the line says it once; a time with another count names its own

    def n_threads(n: int) -> str:
        return f"{n} thread{'s' if n > 1 else ''}"

    def one(c: dict, per: bool) -> str:
        minutes = f"{c['seconds'] / 60:.0f}"
        if c["threads"] != usual:
            minutes += f" ({n_threads(c['threads'])})"
        if per and "resumed" not in c:
            return minutes + "*"
        if per and c["resumed"]:
            return minutes + f" ({c['characters'] - c['resumed']} of its {c['characters']} characters)"
        return minutes

    unknown = any(per and "resumed" not in c for c, per in timed)
    partial = unknown or any(per and c["resumed"] for c, per in timed)
    each = f", each on {n_threads(usual)}" + ("" if len(set(counts)) == 1 else " unless its time names another count")
    return ["", f"Cost: scoring took {'at least ' if partial else ''}{total:.1f} h of wall time for the models "
                f"timed{each} (" + "; ".join(f"{name} {' + '.join(one(*t) for t in runs)} min"
                                         for name, runs in rows.items()) + ")"
                + (f"; {missing} kept model{'s' if missing > 1 else ''} scored before times were recorded" if missing
                   else "") + ". A model's time is that of the run that finished its scores; characters it took "
                "from an earlier, interrupted run's cache are not in it"
                + (" (the times given with a count of characters" + (", and those marked *, timed before they were "
                                                                      "counted" if unknown else "") + ")"
                   if partial else "")
                + ". Times include the judge's grading, MediaPipe's segmentation and the loss gap, on "
                "this project's 2-core CPU machines, and depend on what else ran beside them."]


def _fewer_characters(rows: dict) -> str:
    """The sentence saying that some of the other methods' rows hold fewer characters than the
    SerialGen row (`ReportConfig.method_characters`), or "" when all hold as many."""
    counts = {name: row.get("characters") for name, row in rows.items() if row.get("characters")}
    if len(set(counts.values())) < 2:
        return ""
    most, fewest = max(counts.values()), min(counts.values())
    return (f" The other methods are scored on the first {fewest} of the {most} test characters (each costs 1-3x "
            f"a Table 2 row); a row's mean and interval are over its own characters, and each claim below "
            f"compares the rows on the characters both hold.")


def method_claims(pairings: dict, methods: dict, data: str | None = None) -> list[dict]:
    """Each other method's own claim, against its own comparison, judged by the same rules."""
    out = []
    s = pairings.get("SerialGen (two-stage)")
    c, lr = methods.get("consistent self-attention (StoryDiffusion)"), methods.get("Layout-and-Retouch")
    bi = methods.get("Beyond Inserting")
    plain = methods.get("token optimization (Beyond Inserting without its attention loss)")

    def claim(text, paper, comparisons):
        out.append(judged(text, paper, comparisons, data))

    if s and c:
        claim("Consistent self-attention makes a series more consistent (AP-CLIP-I) than the same model without it",
              "StoryDiffusion: higher character similarity across a story",
              [("AP-CLIP-I consistent - SerialGen", c, s, "ap_clip_i", +1)])
    if s and lr:
        claim("Step-blended layout gives more varied layouts than the personalized model alone, keeping the character",
              "Layout-and-Retouch: the vanilla model's layout diversity with the personalized identity",
              [("layout diversity L&R - SerialGen", lr, s, "layout_diversity", +1),
               ("appearance L&R - SerialGen", lr, s, "appearance", +1)])
    if bi and plain:
        claim("The attention loss raises identity accuracy over plain token optimization, keeping text control",
              "Beyond Inserting: better ID accuracy and semantic fidelity than prior token optimization",
              [("appearance BI - plain", bi, plain, "appearance", +1), ("CLIP-I BI - plain", bi, plain, "clip_i", +1),
               ("text control BI - plain", bi, plain, "text_control", +1)])
    return out


def _slug(name: str) -> str:
    """A row's name as a file name part: lower-case letters and digits joined by dashes."""
    return re.sub('[^a-z0-9]+', '-', name.lower()).strip('-')


def _settings_key(settings: dict) -> str:
    """Identity of numbers that depend on `settings` alone (not on one model's files)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _sheet_file(folder: Path, name: str) -> Path:
    return folder / f"sheet_{_slug(name)}.png"


def sheet_rows(sheets: list[tuple], characters: int = 3, images: int = 6) -> np.ndarray:
    """One adapter's sheet: for each of the first characters a row of reference, what the adapter
    saw (standardized image, or the reference itself), then the first prompts' images (seed 0)."""
    from ..sheet import grid

    rows = []
    for ref, std, ims, _ in sheets[:characters]:
        seen = np.asarray(std) if std is not None else ref
        rows.append([ref, seen] + [np.asarray(im) for im in ims[:images]])
    return grid(rows)


def token_points(pairings: dict) -> list[tuple[int, dict]]:
    """The token study's rows, (image tokens, row) by tokens: every "unpaired one-stage, N image
    tokens" row and the "unpaired one-stage" row (every token) where it recorded its count."""
    points = [(int(m.group(1)), row) for name, row in pairings.items() if (m := TOKEN_ROW.match(name))]
    every = pairings.get("unpaired one-stage")
    if points and every and "image_tokens" in every:
        points.append((int(every["image_tokens"]), every))
    return sorted(points, key=lambda p: p[0])


def _token_characters(pairings: dict) -> str:
    """", the fewer-token rows on the first N of its characters" where the token study's rows were
    scored on fewer characters than the every-token row (`ReportConfig.token_characters`)."""
    counts = sorted({row.get("characters") for name, row in pairings.items() if TOKEN_ROW.match(name)} - {None})
    every = (pairings.get("unpaired one-stage") or {}).get("characters")
    if not counts or every is None or counts == [every]:
        return ""
    return (f", the fewer-token rows on the first {'/'.join(map(str, counts))} of its {every} characters (each "
            "comparison with the every-token row is on those)")


def token_figure(points: list[tuple[int, dict]], width: int = 360, height: int = 240) -> np.ndarray:
    """The token study as the paper draws it (Fig. 13): CLIP-I and CLIP-T (means with 95% intervals)
    against the number of image tokens, one panel each, tokens evenly spaced."""
    from PIL import ImageDraw

    panels = []
    for metric, label in (("clip_i", "CLIP-I"), ("clip_t", "CLIP-T")):
        im = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(im)
        # an interval that could not be drawn (one character) shows as its mean alone
        cis = [{k: row[metric]["mean"] if row[metric].get(k) is None or not np.isfinite(row[metric][k])
                else row[metric][k] for k in ("mean", "lo", "hi")} for _, row in points]
        lo, hi = min(c["lo"] for c in cis), max(c["hi"] for c in cis)
        pad = max(0.5, 0.1 * (hi - lo))
        lo, hi = lo - pad, hi + pad
        left, right, top, bottom = 50, width - 20, 30, height - 40

        def y(v):
            return bottom - (v - lo) / (hi - lo) * (bottom - top)

        def x(k):
            return left + (k + 0.5) / len(points) * (right - left)

        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, 8), f"{label} vs image tokens", fill="black")
        for v in (lo + pad, hi - pad):
            draw.text((4, y(v) - 6), f"{v:.1f}", fill="black")
            draw.line([left - 4, y(v), left, y(v)], fill="black")
        previous = None
        for k, ((tokens, _), c) in enumerate(zip(points, cis, strict=True)):
            draw.line([x(k), y(c["lo"]), x(k), y(c["hi"])], fill=(120, 120, 200), width=2)
            draw.ellipse([x(k) - 4, y(c["mean"]) - 4, x(k) + 4, y(c["mean"]) + 4], fill=(30, 30, 160))
            if previous is not None:
                draw.line([previous, (x(k), y(c["mean"]))], fill=(30, 30, 160), width=1)
            previous = (x(k), y(c["mean"]))
            draw.text((x(k) - 8, bottom + 8), str(tokens), fill="black")
        draw.text(((left + right) / 2 - 30, height - 16), "image tokens", fill="black")
        panels.append(np.asarray(im))
    return np.concatenate(panels, 1)


def pairings_figure(per_method: list[np.ndarray], height: int) -> np.ndarray:
    """The adapters' sheets (`sheet_rows`, rows `height` pixels high) interleaved: for each character,
    one row per adapter, then a white band an eighth of a row high."""
    split = [np.split(sheet, sheet.shape[0] // height) for sheet in per_method]
    rows = []
    for c in range(min(len(rows_of) for rows_of in split)):
        rows += [rows_of[c] for rows_of in split] + [np.full_like(split[0][c][:max(height // 8, 1)], 255)]
    return np.concatenate(rows[:-1], 0)


def difference(a: dict, b: dict, metric: str) -> dict:
    """a - b over the characters both rows were scored on, with a t interval over the rows'
    training seeds and the (paired) characters (`seed_character_ci`). Every row scores the test
    split's first characters in order (`evaluate_series`), so a row scored on fewer (the other
    methods, `ReportConfig.method_characters`) is compared on those first ones.

    Rows trained with two or more of the same seeds (`training_seeds`) are compared seed by seed, on
    those seeds ("blocked": True), as they are on the characters both were scored on: a seed fixes
    the trainers' batches and noise, so it moves both rows alike, and the interval is the one-row
    interval of the (seeds x characters) table of a - b, whose seed part is the variance of the
    per-seed differences. Otherwise the rows' seeds count as independent."""
    x, y = seed_tables(a, metric), seed_tables(b, metric)
    if x is None or y is None:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    shared = min(x.shape[1], y.shape[1])
    x, y = x[:, :shared], y[:, :shared]
    sa, sb = training_seeds(a), training_seeds(b)
    both = sorted(set(sa) & set(sb)) if sa and sb and len(sa) == len(x) and len(sb) == len(y) else []
    if len(both) > 1:
        return seed_character_ci(x[[sa.index(s) for s in both]] - y[[sb.index(s) for s in both]]) | {"blocked": True}
    return seed_character_ci(x, y)


MIN_CHARACTERS = 5  # fewer make an interval over characters meaningless

# Equivalence margins, stated before the runs they judge: a difference whose interval lies inside
# +-d is "no effect within +-d". CLIP scores are x100 cosines; the loss gap is in percentage points;
# accuracies are shares of attributes; PSNR in dB.
MARGINS = {"clip_t": 2.0, "clip_i": 2.0, "ap_clip_i": 2.0, "loss_gap": 0.5, "appearance": 0.03,
           "text_control": 0.03, "layout_diversity": 0.03, "psnr": 0.2, "ssim": 0.005, "figure_psnr": 0.2,
           "figure_ssim": 0.005}


def verdict(diffs: list[dict], signs: list[int], margins: list[float] | None = None) -> str:
    """'supported' when every difference has its expected sign with the interval clear of 0,
    'contradicted' when one is clear of 0 the other way, 'no effect within +-d' when every interval
    lies inside its equivalence margin (`MARGINS`), 'not resolved' otherwise. A supported or
    contradicted claim whose every interval also lies inside its margin is said to be negligible:
    clear of 0, but smaller than the margin stated in advance."""
    if any(d["n"] == 0 for d in diffs):
        return "not measured"
    if any(d["n"] < MIN_CHARACTERS for d in diffs):
        return f"too few characters (under {MIN_CHARACTERS})"
    within = bool(margins) and all(-m < d["lo"] and d["hi"] < m for d, m in zip(diffs, margins or [], strict=True))
    margin = ", ".join(f"+-{m:g}" for m in dict.fromkeys(margins or []))
    if any((d["hi"] < 0 if s > 0 else d["lo"] > 0) for d, s in zip(diffs, signs, strict=True)):
        found = "contradicted"
    elif all((d["lo"] > 0 if s > 0 else d["hi"] < 0) for d, s in zip(diffs, signs, strict=True)):
        found = "supported"
    else:
        return f"no effect within {margin}" if within else "not resolved"
    return f"{found}, but negligible (within {margin})" if within else found


def _stale(row: dict, data: str | None) -> bool:
    """Were some of the row's scores measured on other samples than `data`?"""
    return data is not None and any(run.get("data") != data for run in row.get("runs", [row]))


STALE_NOTE = ("† measured on other characters than this report's test split (an earlier split), kept because the "
              "model is not here to re-score it (`scripts/train_mini.sh` trains it); its claims are not judged.")


OUTDATED_NOTE = ("‡ kept as measured by other scoring code, models or settings than this checkout's (--kept-only "
                 "scores nothing; `serialgen report` without it scores the row again); its claims are not judged.")


def _row_name(name: str, row: dict, data: str | None = None) -> str:
    """A row's name, with its number of training seeds, and a mark: † when some of its scores were
    measured on other samples than this report's (kept because its model is not here to re-score),
    ‡ when they were made by other code, models or settings than this checkout's (`mark_outdated`)."""
    seeds = row.get("seeds", 1)
    return (f"{name} ({seeds} training seeds)" if seeds > 1 else name) + _mark(row, data)


def _mark(row: dict, data: str | None) -> str:
    return " †" if _stale(row, data) else " ‡" if row.get("outdated") else ""


def _notes(rows, data: str | None) -> list[str]:
    """The footnotes of a table's marked rows."""
    rows = list(rows)
    return [note for note, marked in ((STALE_NOTE, any(_stale(r, data) for r in rows)),
                                      (OUTDATED_NOTE, any(r.get("outdated") for r in rows))) if marked]


def _fmt(ci: dict | None, digits: int = 2) -> str:
    if not ci or ci.get("n", 0) == 0 or not np.isfinite(ci.get("mean", float("nan"))):
        return "–"
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"


def _fmt_diff(d: dict, digits: int = 2) -> str:
    if d["n"] == 0:
        return "–"
    if not np.isfinite(d["lo"]):
        return f"{d['mean']:+.{digits}f} (no interval from {d['n']} character{'s' if d['n'] != 1 else ''})"
    return f"{d['mean']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"


def judged(text: str, paper: str, comparisons: list[tuple], data: str | None = None) -> dict:
    """One claim: comparisons (label, row a, row b, metric, expected sign of a - b), their paired
    differences and the verdict; not judged when a row was measured on other samples than `data`."""
    if any(_stale(a, data) or _stale(b, data) for _, a, b, _, _ in comparisons):
        return {"claim": text, "paper": paper, "ours": "–",
                "verdict": "not judged: a row was measured on other characters (†)"}
    if any(a.get("outdated") or b.get("outdated") for _, a, b, _, _ in comparisons):
        return {"claim": text, "paper": paper, "ours": "–",
                "verdict": "not judged: a row was scored by other code or models than this checkout's (‡)"}
    diffs = [(label, difference(a, b, m), sign, m) for label, a, b, m, sign in comparisons]
    found = verdict([d for _, d, _, _ in diffs], [sg for _, _, sg, _ in diffs], [MARGINS[m] for _, _, _, m in diffs])
    decided = found.startswith(("supported", "contradicted", "no effect"))  # an interval decided it
    if decided and any(row.get("seeds", 1) < 2 for _, a, b, _, _ in comparisons for row in (a, b)):
        found += "; a row has one training seed: its interval leaves out the seeds' variance"
    return {"claim": text, "paper": paper,
            "ours": "; ".join(f"{label} {_fmt_diff(d, 4 if m == 'ssim' else 2)}" for label, d, _, m in diffs),
            "verdict": found}


def claims(stage1: dict, pairings: dict, data: str | None = None) -> list[dict]:
    """Each claim of the paper: the comparisons that test it, their paired differences, a verdict.
    A comparison with a row measured on other samples than `data` is not judged."""
    out = []
    u, p, s = (pairings.get(k) for k in ("unpaired one-stage", "paired one-stage", "SerialGen (two-stage)"))

    def claim(text, paper, comparisons):
        out.append(judged(text, paper, comparisons, data))

    if u and p and s:
        claim("Unpaired one-stage training copies the reference: higher CLIP-I, lower CLIP-T than paired",
              "CLIP-I 89.62, CLIP-T 16.08 (vs 21.99/21.76)",
              [("CLIP-I unpaired - paired", u, p, "clip_i", +1), ("CLIP-T unpaired - paired", u, p, "clip_t", -1)])
        claim("Paired data restores text control: CLIP-T above unpaired for both paired models",
              "21.99 and 21.76 vs 16.08",
              [("CLIP-T paired - unpaired", p, u, "clip_t", +1), ("CLIP-T two-stage - unpaired", s, u, "clip_t", +1)])
        claim("Standardization raises appearance consistency over paired one-stage (CLIP-I)", "+5.49 CLIP-I",
              [("CLIP-I two-stage - paired", s, p, "clip_i", +1)])
        claim("Standardization raises series consistency over paired one-stage (AP-CLIP-I)", "83.17 vs 77.74",
              [("AP-CLIP-I two-stage - paired", s, p, "ap_clip_i", +1)])
        if all("loss_gap" in x["per_character"] for x in (s, p)):
            claim("Standardized references teach the adapter more of the character than paired ones (loss gap)",
                  "(not measured in the paper)", [("loss gap two-stage - paired", s, p, "loss_gap", +1)])
        claim("Standardization keeps the clothes and hair (judge's appearance accuracy) over paired one-stage",
              "(not measured in the paper)", [("appearance two-stage - paired", s, p, "appearance", +1)])
        claim("Two-stage keeps text control of paired one-stage (judge's text-control accuracy)",
              "(CLIP-T 21.99 vs 21.76)", [("text control two-stage - paired", s, p, "text_control", +1)])
    drawn = pairings.get(PAPER_PAIRED)
    if s and drawn:  # the paper's own paired baseline, where it was trained and scored
        claim("Standardization raises appearance consistency over the paper's paired one-stage (CLIP-I; its "
              "references drawn by the two-stage model)", "+5.49 CLIP-I",
              [("CLIP-I two-stage - paired (drawn)", s, drawn, "clip_i", +1)])
        claim("Standardization raises series consistency over the paper's paired one-stage (AP-CLIP-I)",
              "83.17 vs 77.74", [("AP-CLIP-I two-stage - paired (drawn)", s, drawn, "ap_clip_i", +1)])
        claim("Standardization keeps the clothes and hair over the paper's paired one-stage (judge's appearance)",
              "(not measured in the paper)", [("appearance two-stage - paired (drawn)", s, drawn, "appearance", +1)])
    oracle = pairings.get(ORACLE)
    if s and oracle:  # the same recipe with a perfect Stage I: what the standardizer leaves on the table
        claim("The gain is Stage I's to give: with true standard references (a perfect Stage I) the two-stage "
              "recipe keeps more of the character (oracle - two-stage)",
              "(not measured in the paper: its premise, that the standard image carries the character)",
              [("appearance oracle - two-stage", oracle, s, "appearance", +1),
               ("AP-CLIP-I oracle - two-stage", oracle, s, "ap_clip_i", +1)])
    if p and oracle:
        claim("With a perfect Stage I, standardization keeps more of the character than paired one-stage "
              "(oracle - paired)", "+5.49 CLIP-I, AP-CLIP-I 83.17 vs 77.74 (with its own Stage I)",
              [("appearance oracle - paired", oracle, p, "appearance", +1),
               ("AP-CLIP-I oracle - paired", oracle, p, "ap_clip_i", +1)])
    others = [o for o in ("no FBDM", "no RPIM", "neither") if o in stage1]
    if "full" in stage1 and others:  # against whichever ablations were scored
        comps = [(f"{m.upper()} full - {other}", stage1["full"], stage1[other], m, +1)
                 for other in others for m in ("psnr", "ssim")]
        claim("FBDM and RPIM raise the standardizer's PSNR and SSIM (full model best)",
              "full model best on both (Table 3)", comps)
    return out


def write_markdown(cfg: ReportConfig, stage1: dict, pairings: dict, command: str, data: str | None = None,
                   methods: dict | None = None) -> str:
    """data: the digest of the samples this report read (`data_digest`); rows measured on others are marked."""
    folder = cfg.scores_dir()
    rel = os.path.relpath(folder, Path(cfg.out).parent)
    pr = cfg.protocol
    tokens = token_points(pairings)
    scored, pairings = pairings, {k: v for k, v in pairings.items() if not TOKEN_ROW.match(k)}  # Table 2's rows
    lines = [
        "# SerialGen's claims, reproduced on the character world",
        "",
        f"Generated by `{command}` on {datetime.date.today().isoformat()}. Scores, figures and the",
        f"discussion live in `{rel}/`; rerunning the command reuses scores whose models and settings have",
        "not changed.",
        "",
        "All models are the mini ones trained on CPU on the procedural character world (see README,",
        "Training the mini models). The test split grades them: characters of the same world that no",
        "model trained on and no choice of recipe, phase, checkpoint or sampler read (held-out ids, 4",
        "mod 5, in the second half of the world's ids; `serialgen/data/splits.py`); a separate judge (a",
        "CLIP with attribute probes, trained on a world of another seed) does the grading, never the",
        "models being graded. Intervals are 95% t intervals over the rows' training seeds and the",
        "characters (`seed_character_ci` in `serialgen/evaluation/stats.py`; with one model per row, over",
        "characters only, so between-seed variance is not in them); a claim's differences are paired",
        "(the models are scored on the same characters), and two rows trained with the same seeds are",
        "compared seed by seed, on the seeds both have (a seed fixes the trainers' batches and noise, so",
        "it moves both rows alike: the interval's seed part is the spread of the per-seed differences,",
        "`difference`). Verdicts: supported (contradicted) when every interval excludes zero in (one",
        "against) the paper's direction; no effect within +-d when every interval lies inside the margin",
        "d stated in advance (`MARGINS`: 2 CLIP points, 0.5 loss-gap points, 0.03 accuracy, 0.2 dB, 0.005",
        "SSIM); not resolved otherwise. A supported or contradicted claim whose intervals also lie inside",
        "their margins is marked negligible, and a verdict from a row of one training seed says so: its",
        "interval leaves out the seeds' variance.",
        "",
        "## The claims",
        "",
        "| claim | paper | ours (difference, 95% interval) | verdict |",
        "|---|---|---|---|",
    ]
    found = claims(stage1, pairings, data)
    lines += [f"| {c['claim']} | {c['paper']} | {c['ours']} | **{c['verdict']}** |" for c in found]
    if not found:
        lines.append("| (no scores yet) | | | |")
    if pairings:
        any_row = next(iter(pairings.values()))
        lines += [
            "",
            "## Table 2: one-stage vs two-stage personalization",
            "",
            f"{any_row['characters']} test characters x {pr.prompts} prompts (action, background, viewpoint and "
            f"expression prompts in turn) x {pr.seeds} seeds = {any_row['images']} images per model; DDIM "
            f"{pr.steps} steps, guidance {pr.guidance}. CLIP scores are x100 cosine similarities of the judge's CLIP; "
            "CLIP-I compares background-removed images (the world's mask for the reference, MediaPipe's person "
            "segmentation for the generated image); AP-CLIP-I is the mean pairwise CLIP-I among one reference's "
            "images; face similarity is dlib's descriptor cosine where both faces are found.",
            "",
            "",
            "The loss gap is the graded model's own denoising loss, not the judge's: on "
            f"{cfg.gap_characters} test characters, another image of the character (its fourth) is noised at "
            "fixed timesteps and denoised under a caption that names only the scene, once with image tokens from "
            "the character's reference (standardized for the two-stage model) and once from another character's; "
            "the gap is how much lower (%) the loss is with the right reference. 0 means the adapter ignores who "
            "the character is. Its parts are below the attribute table.",
            "",
            "| model | CLIP-T | CLIP-I | AP-CLIP-I | face sim. (found) | text control | appearance | loss gap % |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, sc in pairings.items():
            lines.append(f"| {_row_name(name, sc, data)} | {_fmt(sc['clip_t'])} | {_fmt(sc['clip_i'])} | "
                         f"{_fmt(sc['ap_clip_i'])} | {_fmt(sc['face_sim'], 3)} ({sc['face_found']:.0%}) | "
                         f"{_fmt(sc['text_control']['mean'], 3)} | "
                         f"{_fmt(sc['appearance']['mean'], 3)} | {_fmt(sc.get('loss_gap'))} |")
        for name, paper in PAPER_TABLE2.items():
            lines.append(f"| paper: {name} | {paper.get('clip_t', '–')} | {paper.get('clip_i', '–')} | "
                         f"{paper.get('ap_clip_i', '–')} | {paper.get('face_sim', '–')} | – | – | – |")
        for note in _notes(pairings.values(), data):
            lines += ["", note]
        attrs = TEXT_CONTROL + APPEARANCE
        chance = any_row["chance"]
        lines += ["", "Attribute accuracies (the judge's probes; chance in the last row):", "",
                  "| model | " + " | ".join(attrs) + " |", "|---" * (len(attrs) + 1) + "|"]
        for name, sc in pairings.items():
            table = attribute_accuracies(sc)
            lines.append(f"| {name} | " + " | ".join(f"{table[a]:.2f}" if a in table else "–" for a in attrs) + " |")
        lines.append("| chance | " + " | ".join(f"{chance[a]:.2f}" for a in attrs) + " |")
        if any("loss_parts" in sc for sc in pairings.values()):
            lines += ["", "The loss gap's parts, each against the same loss with no image at all (the unconditional "
                          "image tokens; % lower, negative = higher): the character's own reference, another "
                          "character's, and no image but a caption that names the look (what the words alone give):",
                      "", "| model | loss gap (own vs other) | own vs none | other vs none | look caption vs none |",
                      "|---|---|---|---|---|"]
            for name, sc in pairings.items():
                parts = sc.get("loss_parts", {})
                lines.append(f"| {_row_name(name, sc, data)} | {_fmt(sc.get('loss_gap'))} | "
                             f"{_fmt(parts.get('own_vs_none'))} | {_fmt(parts.get('other_vs_none'))} | "
                             f"{_fmt(parts.get('look_vs_none'))} |")
        s = pairings.get("SerialGen (two-stage)")
        if s and "stage1_psnr" in s:
            lines += ["", f"Stage I on these references (standardized vs the world's true standard render): PSNR "
                          f"{_fmt(s['stage1_psnr'])} dB, SSIM {_fmt(s['stage1_ssim'], 3)}."]
        if (folder / "pairings.png").exists():
            lines += ["", f"![pairings]({rel}/pairings.png)", "",
                      "Per character, one row per model ("
                      + ", ".join(_load_json(folder / "pairings_rows.json").get("rows") or list(pairings))
                      + "): the reference, what the adapter saw (the reference itself, its standardized image or "
                      "its true standard render), then the first six prompts "
                      "(seed 0): " + "; ".join(f"({k + 1}) {p}" for k, p in enumerate(any_row["prompts"][:6])) + "."]
    if stage1:
        lines += ["", "## Table 3: the standardizer with and without FBDM and RPIM", "",
                  "Equal training budget for every model (the ablation config); one test reference per character.", "",
                  ("Whole-frame scores are mostly the white canvas's: the white canvas row is their floor. The "
                   "figure columns score the box around the true figure; appearance is the share of the "
                   "reference's clothing and hair attributes the judge reads back from the standardized image. "
                   "The colour silhouette is the trivial bound with a figure: no model, the reference's own part "
                   "colours painted on the standard pose's template body."), "",
                  "| model | PSNR (dB) | SSIM | figure PSNR | figure SSIM | appearance | characters |",
                  "|---|---|---|---|---|---|---|"]
        for name, sc in stage1.items():  # the look over every training seed (a run's "appearance" is its own)
            look = (sc.get("appearance_ci") or sc.get("appearance") or {}).get("mean")
            lines.append(f"| {_row_name(name, sc, data)} | {_fmt(sc['psnr_ci'])} | {_fmt(sc['ssim_ci'], 4)} | "
                         f"{_fmt(sc.get('figure_psnr_ci'))} | {_fmt(sc.get('figure_ssim_ci'), 4)} | "
                         f"{'–' if look is None else f'{look:.2f}'} | {sc['count']} |")
        # the bounds (no model: the same for every row) from a row measured on this report's characters
        fresh = [sc for sc in stage1.values() if not _stale(sc, data)] or list(stage1.values())
        bounds = next((sc for sc in fresh if "baselines" in sc), fresh[0])
        if "blank" in bounds:
            white = bounds.get("baselines", {}).get("white", {})
            lines.append(f"| white canvas | {bounds['blank']['psnr']:.2f} | {bounds['blank']['ssim']:.4f} | "
                         f"{_fmt(white.get('figure_psnr_ci'))} | {_fmt(white.get('figure_ssim_ci'), 4)} | | |")
        if silhouette := bounds.get("baselines", {}).get("silhouette"):
            look = (bounds.get("silhouette_appearance") or {}).get("mean")
            lines.append(f"| colour silhouette | – | {_fmt(silhouette['ssim_ci'], 4)} | "
                         f"{_fmt(silhouette['figure_psnr_ci'])} | {_fmt(silhouette['figure_ssim_ci'], 4)} | "
                         f"{'–' if look is None else f'{look:.2f}'} | |")
        if (truth := bounds.get("appearance_truth", {}).get("mean")) is not None:
            lines.append(f"| true standard render | | | | | {truth:.2f} | |")
        lines.append("| paper | higher with both modules (values not in the paper's text) | | | | | |")
        for note in _notes(stage1.values(), data):
            lines += ["", note]
        if (folder / "stage1_ablation.png").exists():
            drawn = _load_json(folder / "stage1_ablation_rows.json").get("rows") or list(stage1)
            lines += ["", f"![ablation]({rel}/stage1_ablation.png)", "",
                      "Rows: test references; " + "; ".join(drawn) + "; the true standard render."]
    if methods:
        rows = ({"SerialGen (two-stage)": pairings["SerialGen (two-stage)"]} if "SerialGen (two-stage)" in pairings
                else {}) | methods
        lines += ["", "## Other methods", "",
                  "The seed papers' other systems and the most-used training-free anchor, as serialgen methods "
                  "(`serialgen generate --method`), on the shipped models and this protocol: the same test "
                  "characters, prompts and seeds. Layout diversity: for each prompt, 1 - IoU of the person masks "
                  "of two seeds' images, averaged (0: every seed draws the same layout). Seconds per character: "
                  f"all {pr.seeds} seeds of the {pr.prompts} prompts, Stage I and per-character optimization "
                  "included, with the threads the Cost line below records, beside whatever else ran."
                  + _fewer_characters(rows), "",
                  "| method | CLIP-T | CLIP-I | AP-CLIP-I | text control | appearance | layout diversity "
                  "| s/character |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, sc in rows.items():
            lines.append(f"| {_row_name(name, sc, data)} | {_fmt(sc['clip_t'])} | {_fmt(sc['clip_i'])} | "
                         f"{_fmt(sc['ap_clip_i'])} | {_fmt(sc['text_control']['mean'], 3)} | "
                         f"{_fmt(sc['appearance']['mean'], 3)} | {_fmt(sc.get('layout_diversity'), 3)} | "
                         f"{_fmt(sc.get('seconds_per_character'), 0)} |")
        for note in _notes(rows.values(), data):
            lines += ["", note]
        found = method_claims(pairings, methods, data)
        if found:
            lines += ["", "| claim | paper | ours (difference, 95% interval) | verdict |", "|---|---|---|---|"]
            lines += [f"| {c['claim']} | {c['paper']} | {c['ours']} | **{c['verdict']}** |" for c in found]
    if len(tokens) > 1:
        save_image(folder / "tokens.png", token_figure(tokens))
        lines += ["", "## Token study: unpaired training with weaker and stronger encoders", "",
                  "The paper's supplementary §10: unpaired one-stage adapters that read fewer image tokens (the mini "
                  "CLIP's CLS token plus its 8x8 patch tokens average-pooled to a smaller grid, `token_grid` in "
                  "`configs/mini/stage2_tokens_g*.toml`; the paper varies IP-Adapter's number of tokens), same "
                  f"budget and protocol as Table 2{_token_characters(scored)}. Paper: {PAPER_TOKENS}.", "",
                  "| image tokens | CLIP-T | CLIP-I | AP-CLIP-I | text control | appearance | loss gap % |",
                  "|---|---|---|---|---|---|---|"]
        for n, sc in tokens:
            lines.append(f"| {n}{_mark(sc, data)} | {_fmt(sc['clip_t'])} | {_fmt(sc['clip_i'])} | "
                         f"{_fmt(sc['ap_clip_i'])} | "
                         f"{_fmt(sc['text_control']['mean'], 3)} | {_fmt(sc['appearance']['mean'], 3)} | "
                         f"{_fmt(sc.get('loss_gap'))} |")
        for note in _notes((sc for _, sc in tokens), data):
            lines += ["", note]
        (few, first), (every, last) = tokens[0], tokens[-1]
        found = [judged(f"More image tokens copy the reference: CLIP-I up, CLIP-T down ({few} -> {every} tokens)",
                        "83.94 -> 92.07 CLIP-I, 19.03 -> 16.88 CLIP-T",
                        [(f"CLIP-I {every} - {few} tokens", last, first, "clip_i", +1),
                         (f"CLIP-T {every} - {few} tokens", last, first, "clip_t", -1)], data)]
        lines += ["", "| claim | paper | ours (difference, 95% interval) | verdict |", "|---|---|---|---|"]
        lines += [f"| {c['claim']} | {c['paper']} | {c['ours']} | **{c['verdict']}** |" for c in found]
        lines += ["", f"![tokens]({rel}/tokens.png)"]
    lines += cost_lines(scored, methods or {}, whole=(stage1,))
    lines += ["", "## What the runs support, and what they do not", ""]
    discussion = folder / "discussion.md"
    if discussion.exists():
        lines.append(discussion.read_text().strip())
    else:
        lines.append(f"(Write the discussion in `{rel}/discussion.md` after reading the tables; it is included here.)")
    return "\n".join(lines) + "\n"


def make_report(cfg: ReportConfig, command: str = "serialgen report") -> Path:
    from ..data.memory import WorldArrays
    from ..data.splits import reading_test_split

    folder = cfg.scores_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with reading_test_split():  # the report grades on the test split, which nothing else reads
        test = WorldArrays.load(cfg.data, "test", keys=("image", "foreground"), per_character=("standard_image",),
                                limit=max(cfg.stage1_samples, cfg.protocol.characters, cfg.method_protocol.characters,
                                          cfg.gap_characters) * 16)
    made = provenance(test)  # the code, data and MediaPipe digests, once for every row
    if cfg.kept_only:  # the tables from what is kept; rows never scored are absent
        stage1 = _load_json(folder / "stage1_ablation.json")
        pairings = _load_json(folder / "pairings.json")
        kept = _load_json(folder / "methods.json")
        methods = {name: kept[name] for name, _, _ in cfg.methods if name in kept}
        mark_outdated(cfg, made, stage1, pairings, methods)
        if cfg.stage1:  # the figures from the kept images
            draw_stage1_figure(cfg, test, stage1)
        if cfg.pairings:  # the rows named (none named: every kept one) that have their sheets kept
            named = list(grouped(cfg.adapters)) if cfg.adapters else list(pairings)
            draw_pairings_figure(cfg, test, pairings, named)  # (it draws the rows that have their sheets)
    else:
        stage1 = run_stage1(cfg, test, made) if cfg.stage1 else _load_json(folder / "stage1_ablation.json")
        pairings = run_pairings(cfg, test, made) if cfg.pairings else _load_json(folder / "pairings.json")
        methods = run_methods(cfg, test, made) if cfg.methods else {}
    text = write_markdown(cfg, stage1, pairings, command, made["data"], methods)
    out = Path(cfg.out)
    write_text(out, text)
    return out
