"""The `Example:` sections of the public API's docstrings run as doctests.

Every name in `__all__` of `tf_tradyx.pruning`, `tf_tradyx.sparse_update`, `tf_tradyx.data` and
`tf_tradyx.models` (and their methods) is searched for `>>>` examples; each object's examples run
in one namespace that starts from `import keras, numpy as np, tf_tradyx as tx` and a fixed seed.
Outputs compare with ELLIPSIS and NORMALIZE_WHITESPACE.
"""

import doctest
import importlib
import inspect
import os
import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx

PACKAGES = ("tf_tradyx.pruning", "tf_tradyx.sparse_update", "tf_tradyx.data", "tf_tradyx.models")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _public_objects():
    """(qualified name, object) of every public name of the four packages, modules excluded."""
    for package in PACKAGES:
        module = importlib.import_module(package)
        yield package, module
        for name in module.__all__:
            value = getattr(module, name)
            if not inspect.ismodule(value):
                yield f"{package}.{name}", value


def _tests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    seen = set()
    for name, value in _public_objects():
        if not (inspect.isclass(value) or callable(value) or inspect.ismodule(value)):
            continue
        module = inspect.getmodule(value)
        for test in finder.find(value, name, module=module, globs={}):
            if inspect.ismodule(value) and test.name != name:
                continue  # a package's own docstring only; its names are found on their own
            key = (test.filename, test.lineno, test.docstring)
            if test.examples and key not in seen:
                seen.add(key)
                yield test


TESTS = sorted(_tests(), key=lambda t: t.name)


# Public names deliberately without an example of their own, with the reason. Modules (e.g.
# `tx.sparse_update.memory`) and plain constants (dicts, tuples, strings, numbers) are not checked.
WITHOUT_EXAMPLE = {}


def test_every_public_class_and_function_has_an_example():
    """Keras' docstring contract: every public class and function shows a runnable `>>>` example
    in its own docstring (an alias, e.g. `SU` for `SparseUpdateScheme`, shares its target's)."""
    finder = doctest.DocTestFinder(recurse=False)
    missing = []
    for name, value in _public_objects():
        if inspect.ismodule(value) or not (inspect.isclass(value) or callable(value)):
            continue
        if name in WITHOUT_EXAMPLE:
            continue
        tests = finder.find(value, name, module=inspect.getmodule(value), globs={})
        if not any(t.examples for t in tests):
            missing.append(name)
    assert not missing, f"public names without a runnable Example: {missing}"


def test_the_main_api_has_examples():
    names = {t.name for t in TESTS}
    for required in (
        "tf_tradyx.pruning.PXPruner",
        "tf_tradyx.pruning.prune_at_init",
        "tf_tradyx.sparse_update.wrap",
        "tf_tradyx.sparse_update.cost_table",
        "tf_tradyx.data.cifar10_sample",
        "tf_tradyx.models.load_pretrained",
    ):
        assert required in names, f"{required} has no runnable Example"


@pytest.mark.parametrize("test", TESTS, ids=[t.name for t in TESTS])
def test_docstring_example_runs(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    keras.utils.set_random_seed(0)
    test.globs = {"keras": keras, "np": np, "tx": tx, "os": os}
    report = []
    result = doctest.DocTestRunner(optionflags=FLAGS).run(test, out=report.append)
    assert not result.failed, f"{test.name} ({test.filename}:{test.lineno}):\n{''.join(report)}"


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
