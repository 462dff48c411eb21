"""Every Python block of the README and the docs runs as written.

Each page's ```python blocks run in order, in one namespace, in a fresh process started in an empty
directory, on the bundled CIFAR-10 sample (offline). A block may be preceded by one directive
comment (CONTRIBUTING.md describes them):

    <!-- docs-test: epochs=1 -->                          every `epochs=<n>` becomes `epochs=1`
    <!-- docs-test: replace "rounds=100" => "rounds=5" -->  a literal substitution (\\" for a quote)
    <!-- docs-test: skip: <reason> -->                     not run; the reason is required

Directives combine with commas: `<!-- docs-test: epochs=1, replace "a" => "b" -->`.
"""

import ast
import glob
import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.testing_utils import ROOT

FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
DIRECTIVE = re.compile(r"<!--\s*docs-test:(.*)-->")  # one line, right above the block
REPLACE = re.compile(r'replace\s+"((?:[^"\\]|\\.)*)"\s*=>\s*"((?:[^"\\]|\\.)*)"')


def _pages():
    docs = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    return [os.path.join(ROOT, "README.md"), *docs]


def _directive(text):
    """{"epochs": int | None, "replace": [(old, new)], "skip": reason | None} of one comment."""
    spec = {"epochs": None, "replace": [], "skip": None}
    if text is None:
        return spec
    unquote = lambda s: s.replace('\\"', '"')
    spec["replace"] = [(unquote(a), unquote(b)) for a, b in REPLACE.findall(text)]
    for item in (i.strip() for i in REPLACE.sub("", text).split(",")):
        if not item:
            continue
        if item.startswith("skip"):
            spec["skip"] = item[len("skip") :].lstrip(":").strip()
            assert spec["skip"], "a skipped block must say why: <!-- docs-test: skip: <reason> -->"
        elif m := re.fullmatch(r"epochs=(\d+)", item):
            spec["epochs"] = int(m[1])
        else:
            raise ValueError(f"unknown docs-test directive {item!r}")
    return spec


def blocks(path):
    """[(line, source as run, spec)] of every ```python block of the page at `path`."""
    text = open(path, encoding="utf-8").read()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip().rpartition("\n")[2]
        found = DIRECTIVE.fullmatch(before.strip())
        spec = _directive(found[1] if found else None)
        source = m[1]
        for old, new in spec["replace"]:
            assert old in source, f"{path}: docs-test replaces {old!r}, which the block lacks"
            source = source.replace(old, new)
        if spec["epochs"] is not None:
            source = re.sub(r"\bepochs=\d+", f"epochs={spec['epochs']}", source)
        out.append((text.count("\n", 0, m.start(1)) + 1, source, spec))
    return out


RUNNER = """
import os, sys
namespace = {"__name__": "__main__"}
for line, source in BLOCKS:
    print(f"--- {PAGE}:{line}", flush=True)
    exec(compile(source, f"{PAGE}:{line}", "exec"), namespace)
print("--- all blocks ran", flush=True)
"""


def _pages_with_code():
    return [os.path.relpath(p, ROOT) for p in _pages() if blocks(p)]


def test_every_block_parses_and_every_skip_says_why():
    statements = 0
    for page in _pages():
        for line, source, spec in blocks(page):
            tree = ast.parse(source, f"{page}:{line}")  # a syntax error fails here, fast
            if spec["skip"] is None:
                statements += len(tree.body)
    assert statements > 20, statements  # the README's quickstarts alone hold more


@pytest.mark.slow  # a TensorFlow process per page, with a few short trainings
@pytest.mark.parametrize("page", _pages_with_code())
def test_the_python_blocks_of_a_page_run_as_written(page, tmp_path):
    runnable = [
        (line, src) for line, src, spec in blocks(os.path.join(ROOT, page)) if not spec["skip"]
    ]
    script = tmp_path / "run_blocks.py"
    script.write_text(f"PAGE = {page!r}\nBLOCKS = {runnable!r}\n" + textwrap.dedent(RUNNER))
    work = tmp_path / "cwd"  # an empty directory: whatever the blocks write lands here
    work.mkdir()
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": ROOT,  # the checkout's package, also when it is not installed
    }
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    ran = [line for line in result.stdout.splitlines() if line.startswith("--- ")]
    assert result.returncode == 0 and ran[-1:] == ["--- all blocks ran"], (
        f"the block at {ran[-1][4:] if ran else page} failed:\n" + result.stderr[-4000:]
    )


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
