# Two commands: `make demo` and `make test`. Both create or reuse .venv and install the package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Keep TensorFlow quiet and on the CPU; tests set their own seeds.
export TF_CPP_MIN_LOG_LEVEL ?= 2
export CUDA_VISIBLE_DEVICES ?=

.PHONY: demo demo-px test bench bench-px bench-px-long bench-tradi bench-all results install clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,plots,tensorboard]"
	touch $(STAMP)

# PX-prune the pretrained MobileNetV2-w0.35, then TraDy-fine-tune it under 27,946 units, offline.
demo: $(STAMP)
	$(BIN)/python examples/prune_then_finetune.py --dataset=cifar10_sample --epochs=8 \
		--out=out/demo

# PX vs random pruning of ResNet-20 at initialization, trained briefly.
demo-px: $(STAMP)
	$(BIN)/python examples/demo.py

# A few minutes: both experiment sweeps on the bundled sample with tiny settings (the harness works).
bench: $(STAMP)
	rm -rf benchmarks/results/smoke
	$(BIN)/python benchmarks/sweep.py px --smoke
	$(BIN)/python benchmarks/sweep.py tradi --smoke

# The full sweeps behind docs/RESULTS.md (hours; they resume where they stopped).
bench-px: $(STAMP)
	$(BIN)/python benchmarks/sweep.py px
bench-px-long: $(STAMP)
	$(BIN)/python benchmarks/sweep.py px --long
bench-tradi: $(STAMP)
	$(BIN)/python benchmarks/sweep.py tradi
bench-all: $(STAMP)
	$(BIN)/python benchmarks/sweep.py all
results: $(STAMP)
	$(BIN)/python benchmarks/sweep.py report

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q tests

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
