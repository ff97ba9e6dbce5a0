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
from rich.cells import cell_len
from typer.testing import CliRunner

from convcalc.cli.app import app
from convcalc.measure.timing import MIN_BLOCKS
from convcalc.output.charset import ascii_text
from convcalc.output.formats import md_code, md_escape
from convcalc.output.render import fold_columns

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


# --- 1. every number whole at 80 columns ------------------------------------------------------


def _numbers(report: dict, layers: bool = True) -> list[str]:
    """Every layer's (with ``layers``) and the total's params, MACs and FLOPs, as the table
    groups them."""
    shown = []
    for entry in [*(report["layers"] if layers else []), report["total"]]:
        for key in ("params", "macs", "flops"):
            value = entry[key]
            value = value["measured"] if isinstance(value, dict) else value
            shown.append(f"{value:,}")
    return shown


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("dw_64_256", ["dw", "--in", "64", "--out", "256"]),
        ("compare_16_32_s32", ["compare", "--in", "16", "--out", "32", "--size", "32"]),
        ("stack_inline", ["stack", "conv k7 s2 p3 out64; maxpool k3 s2 p1; dw k3; pw out128"]),
    ],
)
@pytest.mark.parametrize("columns", [80, 120])
def test_tables_fit_the_width_with_every_number_whole(
    cli, golden, name: str, args: list[str], columns: int
) -> None:
    # before the fix: `COLUMNS=80 convcalc dw --in 64 --out 256` showed MACs as '2…', shapes as
    # '1×6…', no params column, and cut the caption mid-word ('flop_coun')
    result = cli(*args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= columns
    assert "…" not in result.stdout  # nothing cut
    report = cli.json(*args)
    versions = report.get("versions", [report])
    words = set(result.stdout.replace("(", " ").replace(")", " ").split())
    for version in versions:
        for number in _numbers(version, layers="versions" not in report):
            assert number in words, number
        for layer in version["layers"] if "versions" not in report else []:
            assert "×".join(map(str, layer["output_shape"]["measured"])) in words
    caption = "FLOPs: torch.utils.flop_counter's count (two per multiply-add)"
    assert " ".join(result.stdout.split()).count(caption) >= 1  # wrapped at spaces, whole
    golden(f"{name}_{columns}.txt", result.stdout)


def test_piped_output_without_columns_keeps_one_line_per_row(cli) -> None:
    """No COLUMNS: piped output is not wrapped at all (the golden files of before keep)."""
    result = cli("dw", "--in", "64", "--out", "256")
    assert "depthwise  Conv2d(64, 64, k=3, p=1, g=64)    1×64×224×224" in result.stdout


def test_fold_columns_by_hand() -> None:
    # (need, natural, wraps, header): a key column needing 9 (natural 30), two numbers of 10,
    # a 'ratio' of 6 that stays with the second, and the check mark
    columns = [
        (9, 30, True, "layer"),
        (10, 10, False, "MACs"),
        (10, 10, False, "FLOPs"),
        (6, 6, False, "ratio"),
        (1, 1, False, ""),
    ]
    # width 40, gap 3: key = max(9, 40 // 4) = 10; MACs costs 10 + 3: 23; the unit (FLOPs,
    # ratio, mark) costs 13 + 9 + 4 = 26: 23 + 26 = 49 > 40, so a new block: 10 + 26 = 36
    blocks = fold_columns(columns, 40, 3)
    assert [block for block, _ in blocks] == [[0, 1], [0, 2, 3, 4]]
    # block 1: spare 40 - 20 - 3 = 17 goes to the key column (up to its natural 30): 27
    # block 2: 10 + 10 + 6 + 1 + 3·3 = 36, spare 4: key 14
    assert [widths for _, widths in blocks] == [[27, 10], [14, 10, 6, 1]]


# --- 21. --time states its runs and spread ----------------------------------------------------


def test_time_states_runs_and_iqr_per_layer(cli) -> None:
    # before: one median from blocked_autorange, however few blocks; no spread in the JSON
    report = cli.json("conv", "--in", "2", "--out", "2", "-k", "1", "--size", "4", "--time")
    (layer,) = report["layers"]
    assert layer["timed_runs"] >= MIN_BLOCKS  # at least MIN_BLOCKS blocks of >= 1 run each
    assert layer["latency_iqr_ms"] >= 0
    assert report["timing"]["min_blocks"] == MIN_BLOCKS
    assert report["timing"]["machine"]
    text = cli("conv", "--in", "2", "--out", "2", "-k", "1", "--size", "4", "--time").stdout
    assert ", IQR " in text and "an example, not a property of the layer" in " ".join(text.split())


def test_a_long_memory_sum_is_shortened_in_tables_only() -> None:
    from convcalc.output.render import shortened_sum

    # 13 terms (more than 12): the first 8, how many are left out (3), the last 2, the total
    text = " + ".join(str(n) for n in range(1, 14)) + " = 91 B"
    assert shortened_sum(text) == (
        "1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + ... (3 more terms) ... + 12 + 13 = 91 B"
    )
    # 12 terms, and texts without a sum, stay whole
    twelve = " + ".join(str(n) for n in range(1, 13)) + " = 78 B"
    assert shortened_sum(twelve) == twelve
    assert shortened_sum("2·output = 3,097,600 B") == "2·output = 3,097,600 B"
    # a sum whose terms are named first counts its numbers only: the training step's total
    # (7 names, 7 numbers) was cut to "69,120 + 0 + ... (3 more terms) ..."
    named = "a + b + c + d + e + f + g = 1 + 2 + 3 + 4 + 5 + 6 + 7 = 28 B"
    assert shortened_sum(named) == named
    long = "x + y = " + " + ".join(str(n) for n in range(1, 14)) + " = 91 B"
    assert shortened_sum(long) == "x + y = " + shortened_sum(text)
