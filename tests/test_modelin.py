"""`convcalc model`'s input handling (the modelin pass): a repeated --input, --kwargs values the
constructor cannot take, the JSON keys on meta, each command's --format choices, and where a
user's forward failed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from convcalc import analyze_module
from convcalc.errors import SpecError

TWO = """
import torch
from torch import nn


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x, y):
        return self.a(x) + self.b(y)


class Net(nn.Module):
    def __init__(self, width=1, name="net"):
        super().__init__()
        self.c = nn.Conv2d(3, 8 * width, 3)
        self.tag = name

    def forward(self, x):
        return self.c(x)


class Bad(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.c(x)
        return helper(y)


def helper(y):
    raise ValueError("boom in forward")
"""


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "twomodels.py"
    path.write_text(TWO, encoding="utf-8")
    return path


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(y)


def test_a_repeated_input_is_never_dropped(cli, models: Path) -> None:
    # before: the last --input won, and the model failed on it ("missing 1 required
    # positional argument") as though the first had never been given; then it was refused
    # (exit 2); now each --input is one argument of forward, in order (tests/test_modelinputs)
    data = cli.json("model", f"{models}:Two", "--input", "1,3,8,8", "--input", "1,1,8,8")
    assert [i["shape"] for i in data["inputs"]] == [[1, 3, 8, 8], [1, 1, 8, 8]]


def test_one_input_still_runs(cli, models: Path) -> None:
    # conv 3->8, 3x3, no padding, on 1x3x8x8: output 1x8x6x6; params 8*3*9 + 8 = 224
    data = cli.json("model", f"{models}:Net", "--input", "1,3,8,8")
    assert data["input_shape"] == [1, 3, 8, 8]
    assert data["total"]["params"] == 224


def test_several_inputs_in_the_api_are_one_short_line() -> None:
    # before: the message was the repr of both tensors, values and all (dozens of lines)
    with pytest.raises(SpecError) as raised:
        analyze_module(Two(), input=(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4)))  # type: ignore[arg-type]
    message = str(raised.value)
    assert "\n" not in message and "0." not in message
    assert message == (
        "input (a Tensor of shape (1, 3, 4, 4), a Tensor of shape (1, 1, 4, 4)) gives 2 "
        "inputs: input= is the shape of one input tensor, like (1, 3, 224, 224); a forward of "
        "several takes inputs=[shape, ...]"
    )
    with pytest.raises(SpecError, match=r"^input \(\(1, 3, 4, 4\), \(1, 1, 4, 4\)\) gives 2"):
        analyze_module(Two(), input=((1, 3, 4, 4), (1, 1, 4, 4)))  # type: ignore[arg-type]
    with pytest.raises(
        SpecError,
        match=r"^input \(1, -3, 4\) must be positive integers \(N, C, \.\.\.\): one shape$",
    ):
        analyze_module(Two(), input=(1, -3, 4))


def test_kwargs_text_for_a_number_names_the_key(cli, models: Path, monkeypatch) -> None:
    monkeypatch.chdir(models.parent)  # where it raised: shown relative to the working directory
    # before: "error: ...Net() failed: TypeError: not all arguments converted during string
    # formatting" (width='abc' * 8 reached Conv2d as out_channels), naming no --kwargs key.
    # Net's width has no annotation: the text is passed through (a default does not forbid a
    # string), and the failure leads with the key, the text and what the default suggests
    result = cli("model", f"{models}:Net", "--input", "1,3,8,8", "--kwargs", "width=abc")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --kwargs width=abc (text; width's default is 1, an integer): {models}:Net() "
        "failed: TypeError: not all arguments converted during string formatting (at "
        "twomodels.py:19 in __init__)\n"
    )
    # line 19 of TWO: Net's "self.c = nn.Conv2d(3, 8 * width, 3)", where 'abc' * 8 reached torch
    assert TWO.splitlines()[19 - 1] == "        self.c = nn.Conv2d(3, 8 * width, 3)"
    # an annotated parameter (Conv2d's out_channels: int) is refused before the class runs
    result = cli(
        "model",
        "torch.nn:Conv2d",
        "--input",
        "1,3,8,8",
        "--kwargs",
        "in_channels=3,out_channels=abc,kernel_size=3",
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --kwargs out_channels=abc: torch.nn:Conv2d's out_channels takes an integer, "
        "not the text 'abc'\n"
    )


def test_kwargs_text_passes_where_a_string_is_taken(cli, models: Path) -> None:
    # Conv2d's padding is int | str: padding=same is passed through as the string "same";
    # 3->4, 3x3 'same' on 1x3x8x8: 1x4x8x8, params 4*3*9 + 4 = 112
    data = cli.json(
        "model",
        "torch.nn:Conv2d",
        "--input",
        "1,3,8,8",
        "--kwargs",
        "in_channels=3,out_channels=4,kernel_size=3,padding=same",
    )
    assert data["total"]["params"] == 112
    assert data["total"]["output_shape"] == [1, 4, 8, 8]
    # Net's name has a string default: text is what it takes
    assert cli.json("model", f"{models}:Net", "--input", "1,3,8,8", "--kwargs", "name=x")


def test_kwargs_unknown_key_is_named(cli, models: Path) -> None:
    # before: "Net.__init__() got an unexpected keyword argument 'depth'" from the call
    result = cli("model", f"{models}:Net", "--input", "1,3,8,8", "--kwargs", "depth=2")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --kwargs depth=2: {models}:Net takes no argument 'depth' (it takes: width, name)\n"
    )


#: dicts keyed by the data (operator or module names, each step's seconds), not the schema
DATA_KEYED = ("uncounted_ops.", "by_module", "outputs", "seconds", "count_warnings")


def _paths(data: object, prefix: str = "") -> set[str]:
    """Every key's dotted path (lists: their first item, as ``[]``)."""
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}{key}"
            found.add(path)
            if not any(part in path for part in DATA_KEYED):
                found |= _paths(value, f"{path}.")
    elif isinstance(data, list) and data:
        found |= _paths(data[0], f"{prefix}[].")
    return found


def _missing(path: str, data: object) -> bool:
    """Whether ``path`` is absent from ``data`` (a null on the way counts as present: the
    figure is there, not measured)."""
    node = data
    for part in path.split("."):
        if node is None:
            return False
        if part == "[]":
            node = node[0] if isinstance(node, list) and node else None
            continue
        if not isinstance(node, dict) or part not in node:
            return True
        node = node[part]
    return False


class Small(nn.Module):
    """conv -> dropout -> linear: rows, an unrowed module saving for backward, a flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.drop(torch.relu(self.conv(x))), 1))


def test_meta_json_has_every_key_of_the_cpu_json() -> None:
    # before: meta dropped peak_inference and saved_for_backward (rows and total), the
    # training step, optimizer, receptive_field_of and the memory sources
    cpu = analyze_module(Small(), (1, 3, 8, 8)).to_dict()
    meta = analyze_module(Small(), (1, 3, 8, 8), measure_on="meta").to_dict()
    missing = sorted(path for path in _paths(cpu) if _missing(path, meta))
    assert missing == []
    assert meta["total"]["memory_bytes"]["peak_inference"] is None
    assert meta["total"]["formula"]["memory_bytes"]["training_step"] is None
    assert meta["layers"][0]["memory_bytes"]["saved_for_backward"] is None
    assert meta["sources"]["memory_peak_inference"].startswith("not measured: --measure-on meta")
    # and the CPU run's values are numbers (the comparison is not of nulls to nulls)
    assert isinstance(cpu["total"]["memory_bytes"]["peak_inference"], int)


#: each command's --format choices, as README's "Output formats and scripting" lists them
FORMATS = {
    **{
        command: "table|json|jsonl|csv|markdown"
        for command in (
            "conv",
            "dw",
            "pw",
            "group",
            "dilated",
            "transpose",
            "tconv",
            "gdconv",
            "compare",
            "stack",
            "model",
            "solve",
        )
    },
    "batch": "jsonl|csv|json",
    **{
        f"draw {command}": "table|json"
        for command in ("conv", "dw", "dilated", "transpose", "tconv", "stack", "roofline")
    },
}


def test_each_command_lists_its_own_formats(cli) -> None:
    # before: README said every command takes table|json|jsonl|csv|markdown; batch refuses
    # table and markdown, draw refuses jsonl, csv and markdown
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert "Every command takes `--format" not in readme
    assert "`batch` writes\n`jsonl|csv|json`" in readme
    assert "each `draw` command\n`table|json`" in readme
    import re

    for command, formats in FORMATS.items():
        result = cli(*command.split(), "--help", env={"COLUMNS": "200"})
        assert result.exit_code == 0, command
        shown = re.search(r"--format <([^>]+)>", result.stdout)
        assert shown is not None and shown.group(1) == formats, command
    for command, refused in (("batch", "table"), ("draw conv", "csv")):
        result = cli(*command.split(), "--format", refused, input="")
        assert result.exit_code == 2, command
        assert result.stderr.startswith(f"error: --format '{refused}' must be one of "), command


def test_a_failing_forward_names_the_users_line(cli, models: Path, monkeypatch) -> None:
    # before: "error: the model failed on input 1x3x8x8: ValueError: boom in forward", with no
    # file or line, and CONVCALC_DEBUG=1 printed the same line only. The last frame outside
    # torch and convcalc is helper() in the model's file: TWO's line 37 (the file starts with
    # an empty line; "raise ValueError" is the last line)
    monkeypatch.chdir(models.parent)
    line = TWO.splitlines().index('    raise ValueError("boom in forward")') + 1
    assert line == 37
    expected = (
        "error: the model failed on input 1x3x8x8: ValueError: boom in forward "
        f"(at twomodels.py:{line} in helper)\n"
    )
    result = cli("model", "twomodels.py:Bad", "--input", "1,3,8,8", env={"CONVCALC_DEBUG": ""})
    assert result.exit_code == 2
    assert result.stderr == expected
    debug = cli("model", "twomodels.py:Bad", "--input", "1,3,8,8", env={"CONVCALC_DEBUG": "1"})
    assert debug.exit_code == 2
    assert debug.stderr.startswith("Traceback (most recent call last):\n")
    assert f'twomodels.py", line {line}, in helper\n' in debug.stderr
    assert debug.stderr.endswith("ValueError: boom in forward\n" + expected)
    # an error torch raises on the model's behalf: the model's line that called torch
    # (Net's forward, "return self.c(x)": line 23)
    wrong = cli("model", "twomodels.py:Net", "--input", "1,4,8,8", env={"CONVCALC_DEBUG": ""})
    assert wrong.exit_code == 2
    assert wrong.stderr.endswith(" (at twomodels.py:23 in forward)\n")
    assert TWO.splitlines()[23 - 1] == "        return self.c(x)"


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad input")


def test_the_api_keeps_where_beside_the_message() -> None:
    # the message stays as it was (tests/test_model.py pins it); where it raised is
    # SpecError.where, the error itself its __cause__ (the CLI's line ends with where)
    with pytest.raises(SpecError) as raised:
        analyze_module(Raises(), (1, 3))
    assert raised.value.message == "the model failed on input 1x3: ValueError: bad input"
    import inspect

    line = inspect.getsourcelines(Raises.forward)[1] + 1  # its "raise ValueError" line
    assert raised.value.where.endswith(f"test_modelin.py:{line} in forward)")
    assert isinstance(raised.value.__cause__, ValueError)
