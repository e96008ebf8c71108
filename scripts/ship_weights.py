"""Copy a trained run's model folder into the package as fp16 safetensors (the bundled weights).

    python scripts/ship_weights.py vae runs/vae/model
    python scripts/ship_weights.py clip runs/clip/model
    python scripts/ship_weights.py t2i runs/t2i/model
    python scripts/ship_weights.py judge runs/judge/model
    python scripts/ship_weights.py stage1 runs/stage1/model
    python scripts/ship_weights.py stage2 runs/stage2/model            # the default adapter (standardized pairs)
    python scripts/ship_weights.py stage2-paired runs/stage2-paired/model  # one-stage baselines, for the study
    python scripts/ship_weights.py stage2-unpaired runs/stage2-unpaired/model
    python scripts/ship_weights.py --keep stage2-paired-seed1    # a study's model -> models/stage2-paired-seed1

`--keep RUN` stores runs/RUN/model the same way under models/RUN (tracked, not bundled into the
package): the trained replicas the reproduction report scores, kept so that a fresh clone can
re-score them and scripts/train_mini.sh does not train them again.

Tokenizers, configs, probes and training.json are copied as they are; the bundled folder's
README.md (what the weights are and can do, written for users) is kept when there is one,
since a run's own README only names its folder: edit it if the new weights behave otherwise. Where
there is none, the run's README comes along with its folder's name changed to the new one. Every
*.safetensors tensor in floating point is stored as fp16 (half the size; the mini models
run in fp32 after loading, so only storage precision changes), with the file's metadata (an
adapter's `token_grid`: without it a token-study adapter would load as an every-token one).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from serialgen.models.loading import bundled

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("vae", "clip", "t2i", "judge", "stage1", "stage2", "stage2-paired", "stage2-unpaired")


def ship(name: str, source: Path) -> Path:
    if name not in NAMES:
        raise SystemExit(f"name must be one of {', '.join(NAMES)}")
    return store(source, bundled(name))


def keep(run: str) -> Path:
    """runs/RUN/model -> models/RUN, fp16."""
    return store(ROOT / "runs" / run / "model", ROOT / "models" / run)


def _relative(path: Path) -> str:
    """`path` as the repository's commands name it: relative to its root when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def store(source: Path, target: Path) -> Path:
    """Replace `target` by `source` with its floating-point tensors in fp16, atomically."""
    if not (source / "training.json").exists():
        raise SystemExit(f"{source} has no training.json: give a finished run's model folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    for path in tmp.rglob("*.safetensors"):
        with safe_open(str(path), "pt") as f:  # its tensors and what it says about itself (an adapter's token_grid)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = (f.metadata() or {}) | {"format": "pt"}
        save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(path),
                  metadata=metadata)
    for pickle in [p for p in tmp.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]:
        raise SystemExit(f"refusing to ship pickle file {pickle}")
    if (target / "README.md").exists():
        shutil.copy2(target / "README.md", tmp / "README.md")
        print(f"kept {target / 'README.md'}: update it if these weights behave otherwise")
    elif (tmp / "README.md").exists():  # the run's README names the run's folder: name the one it moves to
        text = (tmp / "README.md").read_text()
        for name in {str(source), _relative(source)}:
            text = text.replace(f"'{name}'", f"'{_relative(target)}'")
        (tmp / "README.md").write_text(text)
    old = target.with_name(target.name + ".old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"stored {source} -> {target} ({size / 2**20:.1f} MiB)")
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    if sys.argv[1] == "--keep":
        keep(sys.argv[2])
    else:
        ship(sys.argv[1], Path(sys.argv[2]))
