"""Output a person reads (issue 15): tables keep every number whole at 80 columns, a stream that
cannot encode the symbols gets ASCII, Markdown cells hold any text, and --time states its runs
and spread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from convcalc.cli.app import app
from convcalc.output.charset import ascii_text
from convcalc.output.formats import md_code, md_escape

ROOT = Path(__file__).parent.parent


# --- 2. a stream that cannot encode ×, ✓, → -------------------------------------------------


@pytest.fixture(scope="module")
def ascii_cli() -> CliRunner:
    """The runner's stdout and stderr encode ASCII only (as PYTHONIOENCODING=ascii does)."""
    return CliRunner(charset="ascii")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["conv", "--in", "4", "--out", "8", "--size", "16"], "1x8x14x14"),
        (["conv", "--in", "4", "--out", "8", "--size", "16", "--format", "markdown"], "1x8x14x14"),
        (["solve", "--size", "224", "--target", "112", "-k", "3", "-s", "2"], "224 -> 112"),
        (
            [
                "solve",
                "--size",
                "224",
                "--target",
                "112",
                "-k",
                "3",
                "-s",
                "2",
                "--format",
                "markdown",
            ],
            "| ok |",
        ),
    ],
)
def test_ascii_stdout_gets_ascii_symbols_not_a_crash(
    ascii_cli: CliRunner, args: list[str], expected: str
) -> None:
    # before the fix: exit 3, "UnicodeEncodeError: 'ascii' codec can't encode character '\xd7'"
    result = ascii_cli.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert expected in result.stdout
    assert "\\u" not in result.stdout  # every symbol printed has a stand-in


def test_ascii_table_says_ok_where_it_would_say_a_check_mark(ascii_cli: CliRunner) -> None:
    result = ascii_cli.invoke(app, ["conv", "--in", "4", "--out", "8", "--size", "16"])
    assert result.exit_code == 0
    assert "ok every measured figure agrees with its formula" in result.stdout
    # floor(...) for ⌊...⌋ and * for ·: each: ⌊(16 + 2·0 − 1·(3−1) − 1)/1⌋ + 1 = 14
    assert "floor((16 + 2*0 - 1*(3-1) - 1)/1) + 1 = 14" in result.stdout


def test_ascii_through_a_real_process() -> None:
    """PYTHONIOENCODING=ascii, as the issue ran it (the runner above only imitates it)."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "convcalc",
            "solve",
            "--size",
            "9",
            "--target",
            "5",
            "-k",
            "3",
            "-s",
            "2",
        ],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert b"9 -> 5" in done.stdout  # 9 → 5 before the fallback: exit 3
    assert max(done.stdout) < 128


def test_ascii_text_keeps_unknown_characters_visible() -> None:
    assert ascii_text("1×8 ✓ → ≠ —") == "1x8 ok -> != -"
    assert ascii_text("α") == "\\u03b1"  # never dropped silently


def test_a_utf8_stream_is_untouched(cli) -> None:
    result = cli("solve", "--size", "224", "--target", "112", "-k", "3", "-s", "2")
    assert "224 → 112" in result.stdout


# --- 3. Markdown cells hold any text ---------------------------------------------------------


def _cells(markdown: str) -> list[list[str]]:
    """The body rows of the first table, as a GFM reader sees them."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    rows: list[list[str]] = []
    row: list[str] | None = None
    inside = False
    for token in tokens:
        if token.type == "tbody_open":
            inside = True
        elif token.type == "tbody_close":
            break
        elif inside and token.type == "tr_open":
            row = []
        elif inside and token.type == "tr_close" and row is not None:
            rows.append(row)
        elif inside and token.type == "inline" and row is not None:
            text = "".join(
                "\n" if child.type == "html_inline" and child.content == "<br>" else child.content
                for child in token.children or []
            )
            row.append(text)
    return rows


def test_markdown_cells_hold_pipes_newlines_backslashes_and_backticks(cli, tmp_path: Path) -> None:
    stack = tmp_path / "names.yaml"
    stack.write_text(
        "input: [1, 3, 8, 8]\n"
        "layers:\n"
        '  - {op: conv, out: 4, kernel: 3, name: "a|b"}\n'
        '  - {op: relu, name: "x\\ny"}\n'
        '  - {op: conv, out: 4, kernel: 1, name: "c\\\\|d`e"}\n'
        "  - {op: relu, name: plain}\n",
        encoding="utf-8",
    )
    result = cli("stack", str(stack), "--format", "markdown")
    assert result.exit_code == 0, result.stderr
    rows = _cells(result.stdout)
    # before the fix the first row had 10 cells ('a', 'b', ...) and "x\ny" ended its row
    assert [len(row) for row in rows] == [9] * 5
    assert [row[0] for row in rows] == ["a|b", "x\ny", "c\\|d`e", "plain", "total"]
    assert rows[0][1:3] == ["conv", "1×4×6×6"]


def test_md_escape_and_code() -> None:
    assert md_escape("a|b") == "a\\|b"
    assert md_escape("x\r\ny\nz") == "x<br>y<br>z"
    assert md_escape("<b>") == "\\<b>"
    assert md_code("conv1") == "`conv1`"
    assert md_code("a|b") == "a\\|b"
