"""Typed training configs: the loop fields every trainer shares (`LoopConfig`), named presets
(`paper`, `mini`) per trainer, TOML files that only override a preset, and explicit values where
strings used to carry meaning (`Schedule`, `Precision`, `Source` or a folder path).

    cfg = load_config(Stage1TrainConfig, PRESETS, "mini", "configs/mini/stage1_phase4.toml", fbdm=False)

A value is checked against its field's type when it is read, and the error names the file and
the key. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path


class Schedule(enum.StrEnum):
    """Learning-rate schedule after warm-up."""
    COSINE = "cosine"  # decays to 0 at `steps`
    CONSTANT = "constant"  # a run can be extended by raising `steps` and resuming


class Precision(enum.StrEnum):
    """accelerate's mixed precision: autocast dtype."""
    NO = "no"
    BF16 = "bf16"
    FP16 = "fp16"


class Source(enum.StrEnum):
    """Weights to start from, besides a folder path."""
    BUNDLED = "bundled"  # the mini weights shipped inside the package
    SCRATCH = "scratch"  # random initialisation from the config's architecture


class Pairing(enum.StrEnum):
    """The reference each training image gets (the paper's Table 2 rows, and an upper bound)."""
    STANDARDIZED = "standardized"  # SerialGen: its Stage I standardization
    PAIRED = "paired"  # one-stage: another image of the same character
    UNPAIRED = "unpaired"  # one-stage, IP-Adapter's recipe: itself, cropped and flipped
    STANDARD = "standard"  # the world's true standard render (a perfect Stage I)
    # one-stage as the paper builds it (§4.3.1): an image the two-stage model drew of the character
    GENERATED = "generated"


PAIRINGS = tuple(p.value for p in Pairing)


Weights = typing.Union[Source, Path, None]  # noqa: UP007  (a folder, a Source, or none)


def folder(weights: Source | Path | None) -> Path | None:
    """The folder to load, for the loaders whose None means the bundled mini weights."""
    if weights is Source.SCRATCH:
        raise ValueError("'scratch' names no weights to load")
    return None if weights in (None, Source.BUNDLED) else Path(weights)


def describe(weights: Source | Path | None) -> str:
    """How a model's record names the weights it was trained with ("bundled mini" or the folder)."""
    return "bundled mini" if weights in (None, Source.BUNDLED) else str(weights)


@dataclass(frozen=True)
class LoopConfig:
    """What every trainer's loop reads (train/loop.py)."""

    steps: int = 1000
    batch_size: int = 32  # per process (accelerate): the global batch is this times the processes
    lr: float = 1e-4
    schedule: Schedule = Schedule.COSINE
    warmup: int = 100
    mixed_precision: Precision = Precision.NO
    checkpoint_every: int = 250
    sample_every: int = 1000
    limit: int = 0  # use only the first N training samples (0 = all)
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every", "sample_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup", "limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")


# fields a resumed run may change: how long it runs and how often it saves and samples
RESUMABLE_CHANGES = frozenset({"steps", "checkpoint_every", "sample_every"})


def _coerce(name: str, kind, value, where: str):
    """value (as TOML gives it) -> the field's type, or a ValueError naming where it came from."""
    origin = typing.get_origin(kind)
    options = typing.get_args(kind) if origin in (typing.Union, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if isinstance(option, type) and issubclass(option, enum.Enum):
            if isinstance(value, str) and value in {m.value for m in option}:
                return option(value)
        elif option is Path and isinstance(value, (str, Path)):
            return Path(value)
        elif option is bool and isinstance(value, bool):
            return value
        elif option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        elif option is str and isinstance(value, str):
            return value
        elif typing.get_origin(option) is tuple or option is tuple:
            if isinstance(value, (list, tuple)):
                return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    allowed = ", ".join(repr(m.value) for o in options if isinstance(o, type) and issubclass(o, enum.Enum) for m in o)
    hint = f" (one of {allowed}{', or a folder path' if Path in options else ''})" if allowed else ""
    raise ValueError(f"{where}: {name} = {value!r} is not a valid {getattr(kind, '__name__', kind)}{hint}")


def load_config(cls, presets: dict, preset: str | None = None, path: str | Path | None = None, **overrides):
    """A `cls` config: the named preset (presets[preset]; None = "mini"), then the TOML file at
    `path`, then `overrides` (None values ignored), each value checked against its field's type."""
    preset = preset or "mini"
    if preset not in presets:
        raise ValueError(f"Unknown preset {preset!r} for {cls.__name__}; presets are {', '.join(presets)}")
    base = presets[preset]
    if base is None:
        raise ValueError("The paper trains no such model (it uses published weights): use --preset mini, or give "
                         "its published weights where a model is loaded")
    values, where = {}, "override"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--config {path} does not exist")
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"--config {path} is not valid TOML: {error}") from None
        where = str(path)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown config keys {', '.join(unknown)} for {cls.__name__}; known: "
                         f"{', '.join(sorted(names))}")
    typed = {k: _coerce(k, hints[k], v, where) for k, v in values.items()}
    typed |= {k: _coerce(k, hints[k], v, "option") for k, v in overrides.items() if v is not None}
    try:
        return dataclasses.replace(base, **typed)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def config_dict(cfg) -> dict:
    """The config as JSON values (enums by value, paths as strings), as checkpoints and records store it."""
    def plain(v):
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def check_resume(stored: dict | None, cfg) -> None:
    """Refuse to resume a run under another config than the one it was started with (only the
    number of steps and the checkpoint and sample cadence may change). An option the stored
    config lacks (added to the trainer after the run started) passes at its default value, which
    is what the run had."""
    if not stored:
        return
    now, defaults = config_dict(cfg), config_dict(type(cfg)())

    def differs(k):
        return now.get(k) != (defaults.get(k) if k not in stored else stored[k])

    changed = sorted(k for k in set(stored) | set(now) if k not in RESUMABLE_CHANGES and differs(k))
    if changed:
        details = ", ".join(f"{k}: {stored.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValueError(f"The checkpoint was made with another config ({details}); resume with the same config "
                         "(only steps, checkpoint_every and sample_every may change) or start a new --out")
