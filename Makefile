# `make demo` and `make test` each do the whole set-up first (scripts/setup.sh, idempotent).
.PHONY: setup demo test test-all bench sheet

setup:
	bash scripts/setup.sh

# The main job on the embedded default: render a small character world and its contact sheet.
demo: setup
	.venv/bin/serialgen synth --out runs/world --characters 10 --poses-per-character 4 --workers 2
	.venv/bin/serialgen sheet runs/world --out runs/world/sheet.png --characters 6 --poses 3

test: setup
	.venv/bin/python -m pytest -q

test-all: setup
	.venv/bin/python -m pytest -q -m "slow or not slow"

bench: setup
	.venv/bin/python benchmarks/synth_speed.py
