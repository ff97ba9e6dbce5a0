"""What `--help` says of an option is true: the values it takes, and no option the command
does not have. Read through Typer's runner, as a user reads it."""

from __future__ import annotations

import re

import pytest

from convcalc.choices import check_device_name
from convcalc.sources.presets import ACT_CHOICES


def option_help(cli, command: list[str], option: str) -> str:
    """The help entry of ``option`` (its line, and the description lines wrapped under it),
    its runs of spaces made one."""
    result = cli(*command, "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    for number, line in enumerate(lines):
        if re.match(rf"\s*(-\w, )?{re.escape(option)}\b", line):
            entry = [line]
            indent = len(line) - len(line.lstrip())
            for rest in lines[number + 1 :]:
                if not rest.strip() or len(rest) - len(rest.lstrip()) <= indent:
                    break
                entry.append(rest)
            return " ".join(" ".join(entry).split())
    raise AssertionError(f"{option} is not in {' '.join(command)} --help")


@pytest.mark.parametrize("command", [["dw"], ["pw"]])
def test_act_help_lists_every_activation(cli, command) -> None:
    entry = option_help(cli, command, "--act")
    # the metavar is the closed set the library accepts (ACT_CHOICES), in its order
    assert entry.startswith("--act " + "|".join(ACT_CHOICES) + " ")


@pytest.mark.parametrize(
    "command", [["conv"], ["dw"], ["stack"], ["model"], ["batch"], ["draw", "roofline"]]
)
def test_device_help_names_the_devices(cli, command) -> None:
    entry = option_help(cli, command, "--device")
    assert entry.startswith("--device cpu|cuda|cuda:N|mps ")
    # each name the metavar shows is one check_device_name takes (N: a device number)
    for name in "cpu|cuda|cuda:N|mps".replace("N", "0").split("|"):
        assert check_device_name(name) == name


@pytest.mark.parametrize("command", ["dw", "dilated"])
def test_draw_at_help_names_no_missing_option(cli, command) -> None:
    result = cli("draw", command, "--help")
    assert "--transpose" not in result.stdout  # neither command has it
    assert option_help(cli, ["draw", command], "--at") == (
        "--at Y,X The output position drawn [default: the first]."
    )


def test_draw_transpose_at_is_the_input_position(cli) -> None:
    assert option_help(cli, ["draw", "transpose"], "--at") == (
        "--at Y,X The input position drawn [default: the first]."
    )
    assert option_help(cli, ["draw", "conv"], "--at").startswith(
        "--at Y,X The output position drawn (for --transpose: the input position)"
    )


def test_draw_dilated_padding_has_a_description(cli) -> None:
    entry = option_help(cli, ["draw", "dilated"], "--padding")
    assert entry.startswith("-p, --padding N[xN...]|same|valid Padding: 1, 1x2, 'same' or 'valid'")
    assert "[default: keeps the size" in entry
