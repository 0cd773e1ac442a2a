# The two entry points the README documents.  Everything they need is
# installed by scripts/bootstrap (idempotent), so both work on a fresh clone.
.PHONY: run demo test bench setup fuzz

setup:
	./scripts/bootstrap

# Live detection with the bundled default profile and rule pack (eBPF, else
# the portable source, else a replay of the demo capture); Ctrl-C stops it.
run: setup
	.venv/bin/kestrel run

demo: setup
	.venv/bin/kestrel run --profile profiles/demo.toml

# PYTEST_ARGS: extra pytest options (CI passes --must-run; an environment
# variable such as PYTEST_ADDOPTS would leak into the pytest runs tests start).
test: setup
	.venv/bin/python -m pytest tests plugins $(PYTEST_ARGS)

bench: setup
	.venv/bin/python benchmarks/run.py

# The long fuzz campaign (docs/reliability.md): FUZZ_MINUTES in all (default
# 30), shared by the entry points; a table per entry point at the end.
fuzz: setup
	.venv/bin/python tests/fuzz/campaign.py --minutes $(or $(FUZZ_MINUTES),30) $(FUZZ_ARGS)
