"""Output and help defects a new user hit: the meta device's 'measured by' line, the ASCII
fallback's table widths, --help's option groups, the roofline's marks, the --fit line, and
--input beside --batch/--size for stack files and --arch."""

from __future__ import annotations


def test_meta_saved_line_does_not_call_the_meta_forward_real(cli) -> None:
    data = cli.json(
        "conv", "--in", "4", "--out", "8", "-k", "3", "--size", "8", "--measure-on", "meta"
    )
    line = data["sources"]["memory_saved_for_backward"]
    assert "on the forward on torch's meta device (shapes only, nothing computed)" in line
    assert "real forward" not in line and "nothing ran" not in line
    # a real CPU run still says it ran for real
    data = cli.json(
        "conv", "--in", "4", "--out", "8", "-k", "3", "--size", "8", "--measure-on", "cpu"
    )
    assert "on the real forward" in data["sources"]["memory_saved_for_backward"]


def test_stack_arch_and_file_refuse_input_with_batch_or_size(cli, tmp_path) -> None:
    import pytest

    from convcalc import library
    from convcalc.errors import SpecError

    # before: --arch resnet18 --input 2,3,64,64 --batch 4 silently ran on [4, 3, 64, 64]
    result = cli("stack", "--arch", "resnet18", "--input", "2,3,64,64", "--batch", "4")
    assert result.exit_code == 2
    assert "--batch does not go with --input" in result.stderr
    path = tmp_path / "net.yaml"
    path.write_text("input: [1, 3, 32, 32]\nlayers:\n  - {op: conv, out: 8, kernel: 3}\n")
    result = cli("stack", str(path), "--input", "1,3,16,16", "--size", "8")
    assert result.exit_code == 2
    assert "--size does not go with --input" in result.stderr
    with pytest.raises(SpecError, match="--batch does not go with --input"):
        library.stack(arch="resnet18", input=(2, 3, 64, 64), batch=4)
    # each alone still works: --input replaces the file's input, --size changes its size
    data = cli.json("stack", str(path), "--input", "2,3,16,16", "--formula-only")
    assert data["input_shape"] == [2, 3, 16, 16]
    data = cli.json("stack", str(path), "--size", "8", "--formula-only")
    assert data["input_shape"] == [1, 3, 8, 8]


def test_ascii_fallback_keeps_every_table_row_one_width() -> None:
    from typer.testing import CliRunner

    from convcalc.cli.app import app

    # before: the output-shape row's ⌊…⌋ became floor(…) after Rich had padded the cells, so
    # that row was 223 characters against 217 for the others (and ✓ -> ok one wider)
    result = CliRunner(charset="ascii").invoke(
        app, ["conv", "--in", "64", "--out", "256", "-k", "3", "-p", "1"]
    )
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert text.isascii() and "floor(" in text and "\\u" not in text
    rows = [line for line in text.splitlines() if "|" in line or set(line) <= set("-+ ")]
    rows = [line for line in rows if line.strip()]
    assert len(rows) > 20
    assert len({len(line) for line in rows}) == 1, sorted({len(line) for line in rows})


def _commands() -> list[list[str]]:
    """Every command and subcommand, as the app's (lazy) group lists them."""
    import typer.main
    from typer._click.core import Context  # typer 0.28 carries its own click

    from convcalc.cli.app import app

    group = typer.main.get_command(app)
    ctx = Context(group)
    found = []
    for name in group.list_commands(ctx):  # type: ignore[attr-defined]
        command = group.get_command(ctx, name)  # type: ignore[attr-defined]
        if hasattr(command, "list_commands"):
            sub_ctx = Context(command, parent=ctx)
            found.extend([name, sub] for sub in command.list_commands(sub_ctx))
        else:
            found.append([name])
    return found


def test_every_command_is_listed_for_the_help_test() -> None:
    names = [" ".join(c) for c in _commands()]
    assert {"solve", "draw roofline", "draw conv", "model", "stack", "conv"} <= set(names)


def _sections(cli, command: list[str]) -> dict[str, list[str]]:
    result = cli(*command, "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    sections: dict[str, list[str]] = {}
    current = None
    for line in result.stdout.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
            sections[current] = []
        elif current is not None and line.startswith("  -"):
            sections[current].append(line.split()[0].rstrip(","))
    return sections


import pytest  # noqa: E402


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_no_option_sits_under_other(cli, command) -> None:
    sections = _sections(cli, command)
    assert "Other options" not in sections, sections.get("Other options")
    assert sections.get("Help") == ["-h"]


def test_help_texts_named_in_the_issue(cli) -> None:
    solve = _sections(cli, ["solve"])
    assert {"--size", "--dims"} <= set(solve["Input options"])
    assert {"-s", "-p", "-d", "--output-padding", "-k"} <= set(solve["Layer options"])
    assert {"--target", "--vary", "--inverse-of", "--limit"} <= set(solve["Search options"])
    roofline = _sections(cli, ["draw", "roofline"])
    # draw roofline always draws the roofline: no --roofline to give
    assert "--roofline" not in roofline["Roofline options"]
    assert {"--svg", "--html", "-f", "--json", "--no-color"} <= set(roofline["Output options"])
    result = cli("draw", "roofline", "--roofline", "--arch", "resnet18")
    assert result.exit_code == 2
    from tests.test_help_texts import option_help

    assert "whose peaks the roofline uses" in option_help(cli, ["stack"], "--device")
    assert "one real training step's memory" in option_help(cli, ["conv"], "--train")
    model_help = cli("model", "--help", env={"COLUMNS": "200"}).stdout
    assert "--time   # each module timed alone" in model_help


PEAKS = ("--peak-gflops", "100", "--peak-gbps", "20")


def test_roofline_marks_go_to_drawn_layers_and_a_shared_cell_says_so(cli) -> None:
    # the README's example: maxpool1 has no FLOPs (intensity 0: not drawn, no mark). dw1 and
    # dw2's depthwise convs have one intensity to two places: FLOPs 2·9·C·H'W', bytes
    # 4·(C·HW + C·H'W' + 9C) with HW ≈ H'W' (108² vs 110², 52² vs 54²): ≈ 18/8 = 2.25 FLOP/B,
    # memory-bound at 20 GB/s · 2.25 ≈ 45 GFLOP/s; both land on one cell, drawn as "+"
    stack = "conv k3 out32; dw k3; pw out64; maxpool k2; dw k3; pw out128"
    shown = cli("draw", "roofline", stack, "--input", "1,3,112,112", *PEAKS, env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.stderr
    rows = {
        line.split()[1]: line.split()[0]
        for line in shown.stdout.splitlines()
        if len(line.split()) > 2 and line.split()[1][:2] in ("co", "dw", "pw", "ma")
    }
    assert rows == {
        "conv1": "1",
        "dw1.depthwise": "2",
        "dw1.pointwise": "3",
        "pw1": "4",
        "maxpool1": "—",
        "dw2.depthwise": "5",
        "dw2.pointwise": "6",
        "pw2": "7",
    }
    plot = "".join(line.split("|", 1)[1] for line in shown.stdout.splitlines() if " |" in line)
    # every mark on the plot is a drawn layer's, or "+"; 2 and 5 share a cell, so neither shows
    assert {"1", "3", "4", "6", "7", "+"} <= set(plot)
    assert "2" not in plot and "5" not in plot
    assert "drawn under mark +: its cell also holds dw2.depthwise" in shown.stdout
    assert "drawn under mark +: its cell also holds dw1.depthwise" in shown.stdout
    assert "+: a cell several layers land on" in shown.stdout


def test_roofline_undrawn_layers_take_no_mark(cli) -> None:
    # 40 conv+bn+relu triples: bn and relu have no FLOPs (80 undrawn rows); the 40 convs take
    # marks 1-9, A-Z, a-e in order and "*" is never used (it was, from layer 62 on, before)
    stack = "; ".join(["conv k3 p1 out8; batchnorm; relu"] * 40)
    shown = cli("draw", "roofline", stack, "--input", "1,8,8,8", *PEAKS, env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.stderr
    legend = [
        line.split() for line in shown.stdout.splitlines() if "not drawn" in line or "bound" in line
    ]
    conv_marks = [row[0] for row in legend if row[1].startswith("conv")]
    assert "".join(conv_marks) == "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcde"
    undrawn = [row[0] for row in legend if row[1].startswith(("batchnorm", "relu"))]
    assert undrawn == ["—"] * 80
    assert "shares this mark" not in shown.stdout
