# Two commands: `make demo` and `make check` (lint, format check, every test). Both create or
# reuse .venv and install the package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Keep TensorFlow quiet; tests set their own seeds. Only the test targets hide GPUs (tolerances
# and timings are this CPU's); demos and benchmarks use a GPU when there is one.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: bazel-available demo demo-px check lint format test test-fast docs bazel-test bench bench-px bench-px-long bench-tradi bench-tradi-long bench-px-pretrained bench-all results install clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,plots,tensorboard,tfds,docs]"
	touch $(STAMP)

# The demos need only the package and its dependencies (plus matplotlib for the density plot),
# not the test, docs and TFDS extras: a stamp of their own. A full install serves them too.
DEMO_STAMP := $(VENV)/.demo-stamp

$(DEMO_STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[plots]"
	touch $(DEMO_STAMP)

# PX-prune the pretrained MobileNetV2-w0.35, then TraDy-fine-tune it under 27,946 units, offline.
demo: $(DEMO_STAMP)
	$(BIN)/python examples/prune_then_finetune.py --dataset=cifar10_sample --epochs=8 \
		--out=out/demo

# PX vs random pruning of ResNet-20 at initialization, trained briefly.
demo-px: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py

# A few minutes: both experiment sweeps (experiments/) on the bundled sample with tiny settings
# (the harness works); results in experiments/results/smoke/, not committed.
bench: $(STAMP)
	rm -rf experiments/results/smoke
	$(BIN)/python experiments/sweep.py px --smoke
	$(BIN)/python experiments/sweep.py tradi --smoke

# The full sweeps behind docs/RESULTS.md (hours; they resume where they stopped). They write
# experiments/results/ and docs/RESULTS.md and commit nothing: commit the results yourself.
bench-px: $(STAMP)
	$(BIN)/python experiments/sweep.py px
bench-px-long: $(STAMP)
	$(BIN)/python experiments/sweep.py px --long
bench-tradi: $(STAMP)
	$(BIN)/python experiments/sweep.py tradi
# TraDy vs SU at 30 epochs on every training image (hours per run) and PX on the pretrained
# MobileNetV2-w0.35 (about 2 h); both resume where they stopped.
bench-tradi-long: $(STAMP)
	$(BIN)/python experiments/sweep.py tradi --long
bench-px-pretrained: $(STAMP)
	$(BIN)/python experiments/sweep.py px-pretrained
bench-all: $(STAMP)
	$(BIN)/python experiments/sweep.py all
# docs/RESULTS.md and its plots from the committed JSON alone.
results: $(STAMP)
	$(BIN)/python experiments/report.py

# What CI runs (.ci/run): ruff's lint and format check, then the whole test suite.
check: lint test

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rewrites the code in ruff's format and applies its safe fixes.
format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP)
	CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest -n 2 --dist loadfile -q tests

# The same without the tests marked slow (subprocesses, scripts, real networks): a few minutes.
test-fast: $(STAMP)
	CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow" tests

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis

# The documentation site (guides, methods, results, API reference from the docstrings) into
# build/site/, warnings and missing links as errors. Serve it: python -m http.server 8000 -d build/site
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bazel-available:
	@command -v bazel >/dev/null || { echo "make bazel-test needs Bazel, which is not installed." \
		"On Debian or Ubuntu: sudo apt-get install bazel-bootstrap (it runs offline with" \
		"third_party/); elsewhere see https://bazel.build/install." >&2; exit 1; }

# Bazel (Debian's bazel-bootstrap, offline): every py_test target except the slow tier and the
# tests of the checkout itself (tag "repository": Bazel's sandbox holds only declared files), each test
# file run as a script, with this project's venv as the Python (see WORKSPACE and third_party/).
bazel-test: bazel-available $(STAMP)
	bazel test --incompatible_use_python_toolchains=false --python_path=$(CURDIR)/$(BIN)/python \
		--local_test_jobs=2 --test_output=errors --test_tag_filters=-slow,-repository \
		--test_arg=-m --test_arg="not slow" \
		--test_env=TF_CPP_MIN_LOG_LEVEL=2 --test_env=CUDA_VISIBLE_DEVICES= //...
