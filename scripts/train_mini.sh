#!/usr/bin/env bash
# The whole mini chain from scratch, resumable: rerun the same command after an interruption
# and every step continues where it stopped (synth skips finished shards, trainers --resume).
# Wall times on a 2-core CPU machine are recorded in each model's training.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SG=.venv/bin/serialgen
resume() { [ -d "$1/checkpoint" ] && echo --resume || true; }

$SG synth --out data/world128 --characters 2000 --poses-per-character 16 --size 128x192 --seed 0 --workers 2
$SG synth --out data/judge128 --characters 500 --poses-per-character 16 --size 128x192 --seed 1 --workers 2

[ -f runs/vae/model/training.json ] || $SG train vae --data data/world128 --out runs/vae --config configs/mini/vae.toml $(resume runs/vae)
.venv/bin/python scripts/ship_weights.py vae runs/vae/model
[ -f runs/clip/model/training.json ] || $SG train clip --data data/world128 --out runs/clip --config configs/mini/clip.toml $(resume runs/clip)
.venv/bin/python scripts/ship_weights.py clip runs/clip/model
[ -f runs/judge/model/probes.json ] || $SG train judge --data data/judge128 --out runs/judge --config configs/mini/judge.toml $(resume runs/judge)
.venv/bin/python scripts/ship_weights.py judge runs/judge/model
[ -f runs/t2i/model/training.json ] || $SG train t2i --data data/world128 --out runs/t2i --config configs/mini/t2i.toml $(resume runs/t2i)
.venv/bin/python scripts/ship_weights.py t2i runs/t2i/model
