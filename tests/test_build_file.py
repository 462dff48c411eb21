"""Keeps the Bazel BUILD file true: every package module and every test file has a target."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_text():
    with open(os.path.join(ROOT, "BUILD")) as f:
        return f.read()


def _quoted(text):
    return set(re.findall(r'"([^"]+)"', text))


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
    stale = sorted(s for s in listed if s.endswith(".py") and not os.path.exists(os.path.join(ROOT, s)))
    assert not stale, f"BUILD lists modules that do not exist: {stale}"


def test_every_test_file_has_a_py_test():
    text = _build_text()
    tests = sorted(f for f in os.listdir(os.path.join(ROOT, "tests"))
                   if f.startswith("test_") and f.endswith(".py"))
    targets = re.findall(r'py_test\(\s*name = "([^"]+)",\s*srcs = \["tests/([^"]+)"\]', text)
    assert sorted(src for _, src in targets) == tests
    for name, src in targets:
        assert name == src[:-3]
