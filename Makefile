# `make demo` and `make test` each do the whole set-up first (scripts/setup.sh, idempotent).
.PHONY: setup demo test test-all bench sheet

setup:
	bash scripts/setup.sh

# The main job on the embedded default: the bundled reference standardized, then drawn in the
# bundled prompts' four scenes, with a contact sheet (runs/demo/sheet.png).
demo: setup
	.venv/bin/serialgen demo --out runs/demo

test: setup
	.venv/bin/python -m pytest -q

test-all: setup
	.venv/bin/python -m pytest -q -m "slow or not slow"

# Speed targets, each printing its numbers (run with nothing else busy on the machine).
bench: setup
	.venv/bin/python benchmarks/synth_speed.py
	.venv/bin/python benchmarks/standardize_speed.py
	.venv/bin/python benchmarks/series_speed.py
	.venv/bin/python benchmarks/demo_speed.py
