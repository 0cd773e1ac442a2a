# The two entry points the README documents.  Everything they need is
# installed by scripts/bootstrap (idempotent), so both work on a fresh clone.
.PHONY: demo test bench setup

setup:
	./scripts/bootstrap

demo: setup
	.venv/bin/kestrel run --profile profiles/demo.toml

test: setup
	.venv/bin/python -m pytest tests plugins

bench: setup
	.venv/bin/python benchmarks/run.py
