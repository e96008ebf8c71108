"""Writing the character world to WebDataset tar shards (`serialgen synth`).

A dataset is planned as a list of shards, each a fixed run of (character, pose) samples of
one split; a shard's bytes depend only on the dataset spec and its index, so the result is
identical whatever the number of workers or machines. Shards are written to a temporary
name and renamed, so a killed run leaves only whole shards and a rerun skips them.

Fanning out over a cluster: run the same command on N machines (or N array-job tasks) with
``--num-shards N --shard-index I`` (I = 0..N-1, e.g. ``$SLURM_ARRAY_TASK_ID``) and the same
shared ``--out``; task I writes every N-th shard. At paper scale (2,924 characters x 3,817
poses = 11.2M pairs, 512x768) that is ~87k shards of 128 pairs.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..world.generator import CharacterWorld, split_of

FORMAT_VERSION = 1
FOLDERS = ("train", "test")  # shard folders: test/ holds every held-out character (validation and test splits)
IMAGE_KEYS = {  # sample key -> tar member extension
    "image": "image.png", "foreground": "foreground.png", "mask": "mask.png", "pose_map": "pose.png",
    "standard_image": "standard.png", "standard_mask": "standard_mask.png", "standard_pose_map": "standard_pose.png",
}


@dataclass(frozen=True)
class SynthSpec:
    """Everything that decides a dataset's content."""

    characters: int
    poses_per_character: int
    width: int = 256
    height: int = 384
    seed: int = 0
    samples_per_shard: int = 128

    def validate(self) -> None:
        if self.characters < 1:
            raise ValueError("--characters must be at least 1")
        if self.poses_per_character < 1:
            raise ValueError("--poses-per-character must be at least 1")
        if self.samples_per_shard < 1:
            raise ValueError("--samples-per-shard must be at least 1")
        validate_size(self.width, self.height)


def validate_size(width: int, height: int) -> None:
    if width % 8 or height % 8:
        raise ValueError(f"--size {width}x{height}: width and height must be multiples of 8 (the VAE downsamples by 8), e.g. 256x384")
    if width * 3 != height * 2:
        raise ValueError(f"--size {width}x{height} is not 2:3 (width:height); use e.g. 128x192, 256x384 or 512x768")
    if not 64 <= width <= 2048:
        raise ValueError(f"--size {width}x{height}: width must be between 64 and 2048")


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r} is not WIDTHxHEIGHT, e.g. 256x384") from None
    validate_size(w, h)
    return w, h


@dataclass(frozen=True)
class ShardPlan:
    split: str
    index: int  # within the split
    samples: tuple[tuple[int, int], ...]  # (character id, pose index)

    def path(self, root: Path) -> Path:
        return Path(root) / self.split / f"{self.split}-{self.index:06d}.tar"


def plan_shards(spec: SynthSpec) -> list[ShardPlan]:
    """All shards of a dataset, train then test, in a fixed order."""
    plans = []
    for split in FOLDERS:
        ids = [c for c in range(spec.characters) if split_of(c) == split]
        samples = [(c, p) for c in ids for p in range(spec.poses_per_character)]
        for k in range(0, len(samples), spec.samples_per_shard):
            plans.append(ShardPlan(split, k // spec.samples_per_shard, tuple(samples[k:k + spec.samples_per_shard])))
    return plans


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_sample(sample: dict, standard_png: dict[str, bytes]) -> dict:
    """A rendered sample -> WebDataset record {__key__, ext: bytes}. The character's standard
    images arrive already encoded, once per character."""
    meta = dict(sample["meta"])
    meta["keypoints"] = np.round(sample["keypoints"], 3).tolist()
    meta["face_box"] = np.round(sample["face_box"], 3).tolist()
    meta["standard_keypoints"] = np.round(sample["standard_keypoints"], 3).tolist()
    meta["standard_face_box"] = np.round(sample["standard_face_box"], 3).tolist()
    record = {"__key__": meta["key"], "json": json.dumps(meta, sort_keys=True).encode()}
    for key, ext in IMAGE_KEYS.items():
        record[ext] = standard_png[key] if key.startswith("standard_") else _png(sample[key])
    return record


def write_shard(world: CharacterWorld, plan: ShardPlan, root: Path, progress=None) -> int:
    """Render and write one shard atomically. -> number of samples written."""
    import webdataset as wds

    path = plan.path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    standard_png: dict[str, bytes] = {}
    current = None
    try:
        with open(tmp, "wb") as f:
            # fixed mtime, owner and mode: identical arguments give byte-identical shards
            writer = wds.TarWriter(f, user="serialgen", group="serialgen", mtime=0, encoder=False)
            for character_id, pose_index in plan.samples:
                sample = world.sample(character_id, pose_index)
                if character_id != current:
                    current = character_id
                    standard_png = {k: _png(sample[k]) for k in IMAGE_KEYS if k.startswith("standard_")}
                writer.write(encode_sample(sample, standard_png))
                if progress is not None:
                    progress(1)
            writer.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(plan.samples)


# ----- worker processes: one GL context each
_WORLD: CharacterWorld | None = None


def _init_worker(width: int, height: int, seed: int) -> None:
    global _WORLD
    _WORLD = CharacterWorld(width, height, seed)


def _write_in_worker(args: tuple[ShardPlan, str]) -> int:
    plan, root = args
    return write_shard(_WORLD, plan, Path(root))


def _manifest(spec: SynthSpec) -> dict:
    return {"format_version": FORMAT_VERSION, **asdict(spec)}


def check_manifest(root: Path, spec: SynthSpec) -> None:
    """Record the spec in root/manifest.json, or refuse if root holds a different dataset."""
    path = Path(root) / "manifest.json"
    want = _manifest(spec)
    if path.exists():
        have = json.loads(path.read_text())
        if have != want:
            diff = ", ".join(f"{k}={have.get(k)!r} (asked {v!r})" for k, v in want.items() if have.get(k) != v)
            raise ValueError(f"{root} holds a dataset made with other arguments ({diff}); use a new --out or the same arguments")
        return
    tmp = path.with_name(f"manifest.json.{socket.gethostname()}-{os.getpid()}.tmp")
    tmp.write_text(json.dumps(want, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete temporary shard files left by killed runs on this host (their process is gone).
    Temporaries of live processes, or of other hosts sharing the directory, are left alone."""
    removed = []
    host = socket.gethostname()
    for tmp in Path(root).glob("*/*.tmp"):
        owner = tmp.name.split(".tar.", 1)[-1][: -len(".tmp")]  # "<host>-<pid>", as write_shard names it
        tmp_host, _, pid = owner.rpartition("-")
        if tmp_host != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        except PermissionError:
            pass  # alive, another user's
    return removed


def synthesize(spec: SynthSpec, root: Path, workers: int = 1, num_shards: int = 1, shard_index: int = 0,
               show_progress: bool = True) -> dict:
    """Write the shards of `spec` under root/{train,test} that belong to part `shard_index`
    of `num_shards`, skipping shards already complete. -> counts."""
    from tqdm import tqdm

    spec.validate()
    if num_shards < 1:
        raise ValueError("--num-shards must be at least 1")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} is out of range for --num-shards {num_shards}; use 0..{num_shards - 1}")
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    root = Path(root)
    check_manifest(root, spec)
    remove_stale_temporaries(root)
    plans = [p for k, p in enumerate(plan_shards(spec)) if k % num_shards == shard_index]
    todo = [p for p in plans if not p.path(root).exists()]
    counts = {"shards": len(plans), "skipped": len(plans) - len(todo), "written": 0, "samples": 0}
    total = sum(len(p.samples) for p in todo)
    with tqdm(total=total, unit="pair", desc="synth", disable=not show_progress, dynamic_ncols=True) as bar:
        if workers == 1 or len(todo) <= 1:
            world = CharacterWorld(spec.width, spec.height, spec.seed) if todo else None
            for plan in todo:
                counts["samples"] += write_shard(world, plan, root, progress=bar.update)
                counts["written"] += 1
        else:
            # spawn, not fork: each worker opens its own GL context
            with mp.get_context("spawn").Pool(workers, _init_worker, (spec.width, spec.height, spec.seed)) as pool:
                for n in pool.imap_unordered(_write_in_worker, [(p, str(root)) for p in todo]):
                    counts["samples"] += n
                    counts["written"] += 1
                    bar.update(n)
    return counts


# ----- Ray: one shard per task, on an existing cluster or a local one
def _ray_write_shard(spec: SynthSpec, plan: ShardPlan, root: str) -> int:
    """A Ray task: render and write one shard (the worker keeps its world, one GL context, for the
    tasks it runs next)."""
    global _WORLD
    if _WORLD is None or (_WORLD.width, _WORLD.height, _WORLD.seed) != (spec.width, spec.height, spec.seed):
        _WORLD = CharacterWorld(spec.width, spec.height, spec.seed)
    return write_shard(_WORLD, plan, Path(root))


def reachable(address: str, timeout: float = 3.0) -> None:
    """Refuse, in seconds, a Ray address (HOST:PORT or ray://HOST:PORT) nothing answers at; "auto"
    (the cluster this machine belongs to) is Ray's to find."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray {address}: give the cluster's address as HOST:PORT (e.g. 10.0.0.5:6379), "
                         "ray://HOST:10001, auto (the cluster of this machine), or no address for a local Ray")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ValueError(f"--ray {address}: no Ray cluster answers there ({error.strerror or error})") from None


def synthesize_ray(spec: SynthSpec, root: Path, address: str | None = None, num_cpus: int | None = None,
                   show_progress: bool = True) -> dict:
    """Write every shard of `spec` under root as Ray tasks, one shard each, on the cluster at
    `address` (HOST:PORT or ray://HOST:PORT; `root` must then be a folder every node sees) or on a
    local Ray instance with `num_cpus` CPUs. Shards already complete are skipped, so a rerun
    resumes; a shard's bytes depend only on the spec and its index, so the result is the local
    run's, byte for byte. -> counts."""
    try:
        import ray
    except ImportError:
        raise ImportError("serialgen synth --ray needs Ray: pip install 'serialgen[cluster]'") from None
    from tqdm import tqdm

    spec.validate()
    if address:
        reachable(address)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    check_manifest(root, spec)
    remove_stale_temporaries(root)
    plans = plan_shards(spec)
    todo = [p for p in plans if not p.path(root).exists()]
    counts = {"shards": len(plans), "skipped": len(plans) - len(todo), "written": 0, "samples": 0}
    if not todo:
        return counts
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or None, num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=1)(_ray_write_shard)
        pending = [task.remote(spec, plan, str(root)) for plan in todo]
        with tqdm(total=sum(len(p.samples) for p in todo), unit="pair", desc="synth (ray)", disable=not show_progress,
                  dynamic_ncols=True) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                n = ray.get(done[0])
                counts["samples"] += n
                counts["written"] += 1
                bar.update(n)
    finally:
        if started:
            ray.shutdown()
    return counts
