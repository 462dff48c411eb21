"""Keeps the Bazel BUILD file true: every package module and every test file has a target, and every
test helper is in the test_support library."""

import os
import re
import sys

import pytest

from tests.testing_utils import ROOT

TESTS = os.path.join(ROOT, "tests")


def _build_text():
    with open(os.path.join(ROOT, "BUILD")) as f:
        return f.read()


def _quoted(text):
    return set(re.findall(r'"([^"]+)"', text))


def _test_python_files():
    """Every .py file under tests/, as a path relative to the checkout."""
    for dirpath, dirnames, files in os.walk(TESTS):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.relpath(os.path.join(dirpath, f), ROOT).replace(os.sep, "/")


def _target_name(src):
    """tests/test_x.py -> test_x; tests/pruning/test_px.py -> pruning_test_px."""
    return src[len("tests/") : -len(".py")].replace("/", "_")


def test_every_module_is_in_a_py_library():
    text = _build_text()
    libraries = "".join(re.findall(r"py_library\((.*?)\n\)", text, flags=re.S))
    listed = _quoted(libraries)
    modules = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "tf_tradyx")):
        for f in files:
            if f.endswith(".py"):
                modules.append(os.path.relpath(os.path.join(dirpath, f), ROOT))
    assert modules
    missing = sorted(m for m in modules if m not in listed)
    assert not missing, f"modules missing from BUILD py_library srcs: {missing}"
    stale = sorted(
        s for s in listed if s.endswith(".py") and not os.path.exists(os.path.join(ROOT, s))
    )
    assert not stale, f"BUILD lists modules that do not exist: {stale}"


def test_every_test_file_has_a_py_test():
    text = _build_text()
    tests = sorted(f for f in _test_python_files() if os.path.basename(f).startswith("test_"))
    targets = re.findall(r'py_test\(\s*name = "([^"]+)",\s*srcs = \["(tests/[^"]+)"\]', text)
    assert sorted(src for _, src in targets) == tests
    for name, src in targets:
        assert name == _target_name(src)


def test_every_test_helper_is_in_test_support():
    text = _build_text()
    support = re.search(r'py_library\(\s*name = "test_support",(.*?)\n\)', text, flags=re.S)
    assert support, "BUILD has no test_support py_library"
    listed = {s for s in _quoted(support.group(1)) if s.endswith(".py")}
    helpers = {f for f in _test_python_files() if not os.path.basename(f).startswith("test_")}
    assert listed == helpers, (
        f"missing from test_support: {sorted(helpers - listed)}; "
        f"listed but absent: {sorted(listed - helpers)}"
    )


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
