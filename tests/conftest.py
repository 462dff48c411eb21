"""Shared test setup: quiet TensorFlow, and the autouse fixtures of tests/testing_utils.py (a
private cache directory, fixed seeds) for every test under tests/."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported

from tests.testing_utils import _private_cache, _seed  # noqa: E402, F401  (fixtures, autouse)
