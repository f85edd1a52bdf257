# Two commands do all set-up on a fresh machine:
#   make train  - create .venv if missing, install ropex, train the offline default
#   make test   - the same set-up, then the fast test suite
# ropex is installed with its dev and tpu extras (libtpu lets TPU fit checks compile on this
# CPU host; on CPU it is not used otherwise). make demo: the tiny NoPE / RoPE / p-RoPE ablation.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The offline default runs on the CPU; naming it also stops libtpu (installed by the tpu extra)
# from probing for a TPU on machines that have none. Override: make train CPU_ONLY=
CPU_ONLY ?= JAX_PLATFORMS=cpu

.PHONY: test test-slow demo docs train bench clean-venv hf-fixtures test-hf

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,tpu]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The offline default: a tiny model on the synthetic tasks (a few minutes on 2 CPU cores).
train: $(STAMP)
	$(CPU_ONLY) $(PY) -m ropex.train --config configs/tiny.py --workdir /tmp/ropex-tiny

# The mini ablation (configs/demo.py): tiny RoPE and p-RoPE runs at a small θ on content
# retrieval, 3 seeds each, evaluated past the training length; tables with 95% intervals.
# Its tables also go to docs/generated/demo_results.md, the committed copy docs/demo.md shows.
demo: $(STAMP)
	$(CPU_ONLY) $(PY) -m ropex.demo --workdir /tmp/ropex-demo --markdown docs/generated/demo_results.md

# The documentation (Sphinx + MyST), warnings as errors; the test suite builds it too.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# Speed and MFU of the real train step on this machine beside the plain Flax reference, where
# the step's time goes (profile by op category), and the scaling curves (cost against sequence
# length per attention implementation, and model size) - figures, never asserted in tests.
# Writes what the performance page shows: docs/figures/{bench,scaling}.json, scaling.png and
# the tables docs/generated/bench_results.md (about 8 min on 2 CPU cores).
bench: $(STAMP)
	$(CPU_ONLY) $(PY) -m ropex.bench --steps 3 --warmup 1 --profile --scaling --out docs/figures --markdown docs/generated/bench_results.md

# Opt-in: torch + transformers (the hf extra) for the reference fixtures; never needed by make test.
HF_STAMP := $(VENV)/.installed-hf
$(HF_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,tpu,hf]'
	touch $(HF_STAMP)

# Regenerate tests/fixtures/hf (tiny random checkpoints, transformers' logits) and their official
# Gemma Flax layout twins tests/fixtures/flax.
hf-fixtures: $(HF_STAMP)
	$(PY) scripts/make_hf_fixtures.py tests/fixtures/hf
	$(CPU_ONLY) $(PY) scripts/make_flax_fixtures.py tests/fixtures/hf tests/fixtures/flax

# ropex's imports against live transformers logits (marker hf; not part of make test).
test-hf: $(HF_STAMP)
	$(CPU_ONLY) $(PY) -m pytest -q -m hf tests/hf_live

clean-venv:
	rm -rf $(VENV)
