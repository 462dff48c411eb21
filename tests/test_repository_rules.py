"""Structural rules of the repository, checked on the source: no import circles, imports at module
level (optional extras excepted), small library files, explicit package APIs."""

import ast
import importlib
import os
import pkgutil
import re
import sys
import types
import warnings

import pytest

import tf_tradyx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Optional extras may be imported where they are used, so that the package works without them.
OPTIONAL = ("matplotlib", "tensorboard", "tensorflow_datasets")
# Cohesion, not a line count, sets module boundaries; past this many lines a module gets a warning
# asking whether it still does one job.
SOFT_MAX_LIBRARY_LINES = 600


def _python_files(*folders):
    for folder in folders:
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in sorted(files):
                if f.endswith(".py"):
                    yield os.path.join(dirpath, f)


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imported_modules(node):
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return []


def test_no_import_inside_a_function_except_optional_extras():
    offenders = []
    for path in _python_files("tf_tradyx", "tests", "benchmarks", "experiments", "examples"):
        tree = ast.parse(open(path).read(), path)
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                names = _imported_modules(node)
                if names and names[0].split(".")[0] not in OPTIONAL:
                    offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {names[0]}")
    assert not offenders, offenders


def _graph(folders, known):
    graph = {}
    for path in _python_files(*folders):
        name = _module_name(path)
        tree = ast.parse(open(path).read(), path)
        deps = set()
        for node in tree.body:  # module level only: what runs at import time
            for mod in _imported_modules(node):
                if mod in known and mod != name:
                    deps.add(mod)
        graph[name] = deps
    return graph


def _cycle(graph):
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in graph.get(node, ()):
            if state.get(dep) == "open":
                return stack[stack.index(dep) :] + [dep] if dep in stack else [node, dep]
            if dep not in state:
                found = visit(dep, stack + [dep])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_no_import_circle_in_the_library_experiments_or_test_helpers():
    folders = [
        f
        for f in ("tf_tradyx", "tests", "benchmarks", "experiments")
        if os.path.isdir(os.path.join(ROOT, f))
    ]
    known = {_module_name(p) for p in _python_files(*folders)}
    # A package's __init__ importing its own submodules is not a circle; edges into a package
    # __init__ from its own submodules would be.
    graph = _graph(folders, known)
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


def test_long_library_files_are_flagged_not_failed():
    long = {
        os.path.relpath(p, ROOT): n
        for p in _python_files("tf_tradyx")
        if (n := sum(1 for _ in open(p))) > SOFT_MAX_LIBRARY_LINES
    }
    if long:
        warnings.warn(
            f"library files over {SOFT_MAX_LIBRARY_LINES} lines (does each still do one job?): "
            f"{long}",
            stacklevel=1,
        )


def _packages():
    for info in pkgutil.walk_packages(tf_tradyx.__path__, "tf_tradyx."):
        if info.ispkg:
            yield info.name
    yield "tf_tradyx"


@pytest.mark.parametrize("package", sorted(_packages()))
def test_every_package_lists_its_api_and_no_function_hides_a_submodule(package):
    module = importlib.import_module(package)
    assert isinstance(getattr(module, "__all__", None), list), f"{package} has no __all__"
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ names {name!r}, which it lacks"
    public = {n for n in vars(module) if not n.startswith("_")}
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    exported_modules = {n for n in public if isinstance(getattr(module, n), types.ModuleType)}
    assert exported_modules <= set(module.__all__) | submodules
    for name in submodules & public:
        value = getattr(module, name)
        assert isinstance(value, types.ModuleType), (
            f"{package}.{name} is a {type(value).__name__}, hiding the submodule of that name"
        )


def test_every_cited_section_of_the_methods_page_exists():
    with open(os.path.join(ROOT, "docs", "METHODS.md")) as f:
        sections = set(re.findall(r"^### (\d+\.\d+) ", f.read(), flags=re.M))
    cited = {}
    for path in [*_python_files("tf_tradyx"), os.path.join(ROOT, "README.md")]:
        for number in re.findall(r"docs/METHODS\.md (\d+\.\d+)", open(path).read()):
            cited.setdefault(number, os.path.relpath(path, ROOT))
    assert cited, "nothing cites docs/METHODS.md"
    missing = {n: p for n, p in cited.items() if n not in sections}
    assert not missing, f"cited sections missing from docs/METHODS.md: {missing}"


def _dotted(node):
    """`a.b.C` for a Name / Attribute chain, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _test_case_classes(tree):
    """Names of the classes in `tree` that subclass a unittest-style TestCase (unittest, absltest,
    absl's parameterized, tf.test), directly, through an import alias, or through another class of
    the same module."""
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            aliases.update(a.asname or a.name for a in node.names if a.name.endswith("TestCase"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for base in node.bases:
            name = _dotted(base) or ""
            if name.split(".")[-1].endswith("TestCase") or name in aliases or name in found:
                found.append(node.name)
                break
    return found


def test_no_test_module_defines_a_unittest_test_case():
    """One test style: plain pytest functions (parametrize, fixtures, tmp_path), no TestCase
    classes (issue 31)."""
    offenders = {}
    for path in _python_files("tests"):
        rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
        classes = _test_case_classes(ast.parse(open(path).read(), path))
        if classes:
            offenders[rel] = classes
    assert not offenders, f"unittest-style TestCase classes (write pytest functions): {offenders}"


def test_the_test_case_rule_sees_every_spelling():
    source = """
import unittest
from unittest import TestCase as Base
from absl.testing import absltest, parameterized
import tensorflow as tf

class A(unittest.TestCase): pass
class B(parameterized.TestCase): pass
class C(tf.test.TestCase): pass
class D(absltest.TestCase): pass
class E(Base): pass
class F(A): pass
class Helper: pass
class Callback(keras.callbacks.Callback): pass
"""
    assert _test_case_classes(ast.parse(source)) == ["A", "B", "C", "D", "E", "F"]


# Library modules tested together with others, or run end to end, in a test module not named by
# the rule below; each must exist. Every other module has its own tests/<pkg>/test_<mod>.py.
TESTED_ELSEWHERE = {
    # The two training-dynamics baselines share one numpy reference network (finite differences).
    "tf_tradyx/pruning/ntk_sap.py": "tests/pruning/test_ntk_sap_prospr.py",
    "tf_tradyx/pruning/prospr.py": "tests/pruning/test_ntk_sap_prospr.py",
    # The console programs run as a user runs them, through examples/*.py and the installed
    # scripts (their shared parts, cli/_program.py, have tests/cli/test_program.py).
    "tf_tradyx/cli/prune_at_init.py": "tests/integration/test_examples.py",
    "tf_tradyx/cli/finetune_under_budget.py": "tests/integration/test_examples.py",
    "tf_tradyx/cli/prune_then_finetune.py": "tests/integration/test_examples.py",
    # `python -m tf_tradyx` runs beside the installed console scripts.
    "tf_tradyx/__main__.py": "tests/integration/test_examples.py",
    # The version is what the built sdist and wheel are named and stamped with.
    "tf_tradyx/_version.py": "tests/integration/test_packaging.py",
}


def _test_module_of(module):
    """tf_tradyx/<pkg>/<mod>.py -> tests/<pkg>/test_<mod>.py, underscores around <mod> dropped
    (tf_tradyx/_graph/steps.py -> tests/_graph/test_steps.py, tf_tradyx/_batches.py ->
    tests/test_batches.py, tf_tradyx/__main__.py -> tests/test_main.py)."""
    folder, name = os.path.split(os.path.relpath(module, "tf_tradyx"))
    return os.path.join("tests", folder, f"test_{name[:-3].strip('_')}.py").replace(os.sep, "/")


def test_every_library_module_has_a_test_module():
    """Package __init__ files excepted (their API is checked above); a module's tests are found
    where its name says, or where TESTED_ELSEWHERE says (issue 31)."""
    modules = sorted(
        os.path.relpath(p, ROOT).replace(os.sep, "/")
        for p in _python_files("tf_tradyx")
        if os.path.basename(p) != "__init__.py"
    )
    assert "tf_tradyx/_batches.py" in modules
    expected = {m: TESTED_ELSEWHERE.get(m, _test_module_of(m)) for m in modules}
    missing = {m: t for m, t in expected.items() if not os.path.isfile(os.path.join(ROOT, t))}
    assert not missing, f"library modules without their test module (write it): {missing}"
    stale = sorted(set(TESTED_ELSEWHERE) - set(modules))
    assert not stale, f"TESTED_ELSEWHERE names modules that no longer exist: {stale}"
    redundant = {m: t for m, t in TESTED_ELSEWHERE.items() if t == _test_module_of(m)}
    assert not redundant, f"TESTED_ELSEWHERE entries the naming rule already gives: {redundant}"


def test_the_test_module_naming_rule():
    assert _test_module_of("tf_tradyx/_graph/steps.py") == "tests/_graph/test_steps.py"
    assert _test_module_of("tf_tradyx/_batches.py") == "tests/test_batches.py"
    assert _test_module_of("tf_tradyx/cli/_program.py") == "tests/cli/test_program.py"
    assert _test_module_of("tf_tradyx/pruning/px.py") == "tests/pruning/test_px.py"
    assert _test_module_of("tf_tradyx/__main__.py") == "tests/test_main.py"


def test_the_library_prints_through_keras_print_msg():
    """Messages go through Keras' `io_utils.print_msg` (`_keras_compat.print_msg`), which honours
    `keras.config.disable_interactive_logging()`; a bare `print` would not."""
    offenders = []
    for path in _python_files("tf_tradyx"):
        tree = ast.parse(open(path).read(), path)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not offenders, offenders


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))


def test_no_developer_machine_path_in_the_package_or_its_docs():
    """`../shared` exists only on the project's own machines; users must never be sent there."""
    paths = [*_python_files("tf_tradyx"), os.path.join(ROOT, "README.md")]
    paths += [os.path.join(ROOT, "docs", f) for f in ("METHODS.md", "index.md")]
    offenders = [os.path.relpath(p, ROOT) for p in paths if "../shared" in open(p).read()]
    assert not offenders, offenders
