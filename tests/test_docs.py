"""The README is part of the product: its set-up commands, options and examples must be true."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import typer.main

from convcalc.cli.app import app

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def bash_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"^```bash\n(.*?)^```", README, re.S | re.M)]


def test_first_two_bash_blocks_install_run_and_test() -> None:
    install, test = bash_blocks()[:2]
    assert "pip install -c constraints.txt" in install
    assert install.endswith("convcalc dw --in 64 --out 256")
    assert "pip install -c constraints.txt" in test and test.endswith("python -m pytest")
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    script = ROOT / ".ci" / "run"
    extracted = subprocess.run(
        ["python3", "-c", script.read_text().split("<<'PY'\n")[1].split("\nPY\n")[0]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == bash_blocks()[1]


def test_every_command_and_option_is_documented() -> None:
    group = typer.main.get_command(app)
    ctx = group.make_context("convcalc", [], resilient_parsing=True)
    commands = {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}
    for name, command in commands.items():
        assert f"convcalc {name}" in README, f"command {name} is not in the README"
        for param in command.params:
            for opt in [*param.opts, *getattr(param, "secondary_opts", [])]:
                if opt.startswith("--"):
                    assert f"`{opt}" in README, f"{name} {opt} is not in the README"


@pytest.mark.parametrize("status", ["0", "1", "2", "130"])
def test_exit_statuses_are_documented(status: str) -> None:
    assert f"| {status} |" in README


@pytest.mark.parametrize(
    "code", re.findall(r"^```python\n(.*?)^```", README, re.S | re.M), ids=lambda c: c[:40]
)
def test_readme_python_examples_run(code: str) -> None:
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    for name, value in namespace.items():
        if name.startswith("test_") and callable(value):
            value()  # the README's pytest example, run as pytest would


def test_readme_stack_file_example_builds() -> None:
    from convcalc.sources.stack import build_network, load_text

    (text,) = re.findall(r"^```yaml\n(input:.*?)^```", README, re.S | re.M)
    network = build_network(load_text(text, "README.yaml"), None, "float32", "README")
    assert [n.spec.op for n in network.nodes][:2] == ["conv", "maxpool"]


@pytest.mark.parametrize(
    ("command", "title"),
    [
        ("convcalc dw --in 64 --out 256", "convcalc dw  depthwise separable"),
        ("convcalc conv --in 64 --out 256 -k 3 -p 1", "convcalc conv  Conv2d(64, 256, k=3, p=1)"),
    ],
)
def test_the_headline_outputs_are_what_convcalc_prints(command: str, title: str) -> None:
    """README's two headline tables, "measured by" lines included, are the real output at
    COLUMNS=100: a change to what convcalc prints there must update the README."""
    import os
    import sys

    shown = re.search(r"^```text\n(" + re.escape(title) + r".*?)^```", README, re.S | re.M)
    assert shown is not None
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "convcalc", *command.split()[1:]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    printed = [line.rstrip() for line in out.strip("\n").split("\n")]
    assert printed == shown.group(1).strip("\n").split("\n")


# A source file the README or docs/ cite must exist: the README once named convcalc/formulas.py,
# convcalc/measure.py, convcalc/conventions.py and convcalc/formats.py long after they moved into
# core/, measure/ and output/. Paths are cited whole (`convcalc/core/formulas.py`, a folder
# `convcalc/measure/`) or from their room (`measure/build.py`, as docs/benchmarks.md does).
_ROOMS = "core|kinds|measure|engine|sources|output|cli"
_CITED = re.compile(rf"(?<![\w/])((?:convcalc/)?(?:{_ROOMS})/[\w/]*?\w+\.py|convcalc/\w+\.py)")
_CITED_DIR = re.compile(r"(?<![\w/])convcalc/((?:\w+/)+)(?![\w.])")
#: a file the text describes adding, not one it says is there
_EXAMPLES = {"kinds/upsample.py"}


def _cited_paths() -> list[tuple[str, str]]:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    cited = []
    for document in documents:
        text = document.read_text(encoding="utf-8")
        for path in _CITED.findall(text):
            if path not in _EXAMPLES:
                cited.append(
                    (document.name, path if path.startswith("convcalc/") else f"convcalc/{path}")
                )
        cited += [(document.name, f"convcalc/{d}") for d in _CITED_DIR.findall(text)]
    return sorted(set(cited))


def test_the_citations_are_found() -> None:
    cited = {path for _, path in _cited_paths()}
    # the ones this test was written for: it would pass vacuously if the pattern found none
    assert {"convcalc/core/formulas.py", "convcalc/output/formats.py"} <= cited
    assert "convcalc/measure/build.py" in cited  # docs/benchmarks.md cites `measure/build.py`


@pytest.mark.parametrize("document,path", _cited_paths())
def test_every_cited_source_path_exists(document: str, path: str) -> None:
    assert (ROOT / path).exists(), f"{document} cites {path}, which does not exist"
