"""Issue 15: options that lie, errors that name the wrong thing, exits that mean what they say.

Each item's regression test; the ones the CLI redesign had already fixed are tested too (marked
"already fixed"). Items 12-14 run the real console entry (``python -m convcalc``) in a
subprocess: a pipe closed by ``head -1``, ``> /dev/full``, ``>&-``, and SIGINT.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from convcalc import library
from convcalc.core.grammar import parse_inline
from convcalc.core.query import parse_expectation
from convcalc.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent
FILE = str(ROOT / "tests" / "data" / "alexnet_head.yaml")
FAST = ("--formula-only",)


def _run(shell: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``convcalc ...`` through the console entry (``python -m convcalc``) in a real shell."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CONVCALC_DEBUG", None)
    command = shell.replace("convcalc ", f"{shlex.quote(sys.executable)} -m convcalc ", 1)
    return subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, env=env, timeout=timeout
    )


# --- 4: --size, --batch, --dims applied or refused, never ignored (already fixed) --------------


def test_stack_arch_applies_size_and_batch(cli) -> None:
    result = cli(
        "stack", "--arch", "resnet18", "--size", "32", "--batch", "4", *FAST, "--get", "input_shape"
    )
    assert (result.exit_code, result.stdout) == (0, "[4, 3, 32, 32]\n")


def test_stack_file_applies_size_and_batch(cli) -> None:
    # the file says input [1, 3, 224, 224]; the options override its batch and size
    result = cli("stack", FILE, "--size", "32", "--batch", "2", *FAST, "--get", "input_shape")
    assert (result.exit_code, result.stdout) == (0, "[2, 3, 32, 32]\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dims", "3"), "error: --dims 3: the network's input 1x3x224x224 has 2 spatial"),
        (("--batch", "0"), "error: --batch 0 must be a positive integer"),
        (("--size", "0"), "error: --size 0 must be positive"),
    ],
)
def test_stack_file_refuses_what_it_cannot_apply(cli, args, message) -> None:
    # --batch 0 used to be blamed on the file ("alexnet_head.yaml: input batch 0")
    result = cli("stack", FILE, *args, *FAST)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(message)


def test_model_refuses_batch_and_a_zero_input(cli) -> None:
    target = str(ROOT / "tests" / "data" / "mynet.py") + ":Net"
    assert cli("model", target, "--batch", "0").exit_code == 2
    zero = cli("model", target, "--input", "0,3,8,8")
    assert zero.exit_code == 2
    assert zero.stderr == "error: --input 0,3,8,8 must be positive integers (N, C, ...)\n"


# --- 5: accepted and ignored --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [  # already fixed: --slope without leakyrelu, nan/inf, --device without --time
        (("--slope", "0.2"), "error: --slope applies only with --act leakyrelu\n"),
        (("--act", "leakyrelu", "--slope", "nan"), "error: --slope nan must be a finite number\n"),
        (("--act", "leakyrelu", "--slope", "inf"), "error: --slope inf must be a finite number\n"),
        (
            ("--device", "cuda"),
            "error: --device cuda is where --time runs and the roofline's peaks are: it applies "
            "only with --time, --roofline or the peaks (--peak-gflops, --peak-gbps)\n",
        ),
    ],
)
def test_options_that_would_be_ignored_are_refused(cli, args, message) -> None:
    result = cli("dw", "--in", "8", "--out", "8", "--size", "8", *args, *FAST)
    assert (result.exit_code, result.stderr) == (2, message)


def test_every_get_is_printed(cli) -> None:  # already fixed: the first --get was dropped
    # dw 64 -> 256, k3, bias: depthwise 64·9 + 64 = 640, pointwise 64·256 + 256 = 16,640
    result = cli(
        "dw",
        "--in",
        "64",
        "--out",
        "256",
        *FAST,
        "--get",
        "layers.0.params.formula",
        "--get",
        "total.params",
    )
    assert (result.exit_code, result.stdout) == (0, "640\n17280\n")


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("conv k3 k5", "'k5' sets kernel again (after 'k3')"),
        ("conv k3 kernel=5", "'kernel=5' sets kernel again (after 'k3')"),
        ("conv nobias bias", "'bias' sets bias again (after 'nobias')"),
        ("conv out8 out16", "'out16' sets out again (after 'out8')"),
    ],
)
def test_inline_grammar_refuses_a_key_given_twice(text, word) -> None:
    with pytest.raises(SpecError, match=re.escape(f"layer 1 (conv): {word}")):
        parse_inline(text)


def test_inline_grammar_short_keys_any_case() -> None:
    # K3 used to raise KeyError (the regex ignores case, the table did not): exit 3
    assert parse_inline("conv K3 S2 OUT8") == [{"op": "conv", "kernel": 3, "stride": 2, "out": 8}]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_expect_refuses_a_value_that_is_not_finite(cli, value) -> None:
    # used to be a check failure (exit 1: "total.params <= nan, got 17280"), not invalid input
    result = cli("dw", "--in", "64", "--out", "256", *FAST, "--expect", f"total.params<={value}")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: --expect value {value!r} must be a finite number (or true, false, a shape)\n"
    )


# --- 6: thousands separators in --expect --------------------------------------------------------


def test_expect_accepts_the_number_as_the_table_prints_it(cli) -> None:
    # 640 + 16,640 = 17,280 (see test_every_get_is_printed)
    met = cli(
        "dw",
        "--in",
        "64",
        "--out",
        "256",
        *FAST,
        "--expect",
        "total.params=17,280",
        "--get",
        "total.params",
    )
    assert (met.exit_code, met.stdout, met.stderr) == (0, "17280\n", "")
    unmet = cli(
        "dw",
        "--in",
        "64",
        "--out",
        "256",
        *FAST,
        "--expect",
        "total.params=17,281",
        "--get",
        "total.params",
    )
    assert unmet.exit_code == 1
    assert unmet.stderr == "expectation failed: total.params = 17281, got 17280\n"


def test_expect_values_exactly() -> None:
    assert parse_expectation("total.macs<=1,000,000,000").expected == 10**9
    assert parse_expectation("total.macs<=1e9").expected == 10**9
    # above 2**53 a float would round: 2**60 + 1 stays itself
    assert parse_expectation(f"total.macs={2**60 + 1}").expected == 2**60 + 1


def test_expect_a_shape_written_with_commas_is_a_shape(cli) -> None:
    # dw keeps the size (k3, padding 1): 1x256x224x224; 1,256,224,224 is not 1,256,224,224 ones
    met = cli(
        "dw",
        "--in",
        "64",
        "--out",
        "256",
        *FAST,
        "--expect",
        "total.output_shape=1,256,224,224",
        "--get",
        "total.params",
    )
    assert met.exit_code == 0, met.stderr


# --- 9: each draw KIND takes the options of KIND (already fixed) --------------------------------


@pytest.mark.parametrize("kind", ["conv", "dw", "dilated", "transpose", "tconv"])
def test_draw_kinds_take_in_and_out_and_format(cli, kind) -> None:
    result = cli("draw", kind, "--in", "1", "--out", "1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert (
        json.loads(result.stdout)["command"] == f"draw {'transpose' if kind == 'tconv' else kind}"
    )


def test_draw_format_is_table_or_json(cli) -> None:
    result = cli("draw", "conv", "--format", "yaml")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --format 'yaml' must be one of table, json\n",
    )


# --- 11: errors that name the right thing -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-p", "99999999999"), "error: --padding 99999999999 is too large (at most 2**31 - 1)\n"),
        (("-p", "1x2x3"), "error: --padding 1x2x3 has 3 values; --dims 2 takes 1 or 2\n"),
        (
            ("--size", "1e3"),
            "error: --size '1e3' must be an integer (like 1000, not 1e3 or 2.5), or one integer "
            "per dimension (like 3x5)\n",
        ),
        (
            ("-p", "1.5"),
            "error: --padding '1.5' must be an integer (like 1000, not 1e3 or 2.5), or one "
            "integer per dimension (like 3x5)\n",
        ),
        (
            ("--device", "cuda:abc", "--time"),
            "error: --device 'cuda:abc' must be cpu, cuda, cuda:N or mps\n",
        ),
    ],
)
def test_errors_name_what_is_wrong(cli, args, message) -> None:
    result = cli("conv", "--in", "8", "--out", "8", "--size", "8", *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)


def test_inline_padding_too_large(cli) -> None:
    result = cli("stack", "conv p99999999999 out8", *FAST)
    assert result.stderr == (
        "error: layer 1 (conv1): padding 99999999999 is too large (at most 2**31 - 1)\n"
    )


def test_batch_names_its_dtype_key(cli) -> None:
    sweep = '{"in": 3, "out": 8, "size": 8, "dtype": "float99"}\n'
    result = cli("batch", "-", input=sweep)
    record = json.loads(result.stdout.splitlines()[0])
    # used to name --dtype, an option this spec never used
    assert record["error"] == "dtype 'float99' must be one of float32, float16, bfloat16"


def test_batch_inline_stack_keeps_its_dtype(cli) -> None:
    # the spec's dtype used to be dropped for a "layers" spec: float16 halves every byte
    sweep = '{"in": 3, "layers": "conv k3 out8", "size": 8, "dtype": "float16"}\n'
    result = cli("batch", "-", input=sweep)
    assert json.loads(result.stdout)["dtype"] == "float16"


def test_too_big_for_this_machine_is_not_torchs_fault(cli, monkeypatch) -> None:
    from convcalc import engine

    # conv 8 -> 8, k3, on 1x8x64x64: float32 tensors of input 32,768 + output 8·62·62 = 30,752
    # + params 584 elements, 4 B each = 256,416 B; a machine of 100 kB cannot hold them
    monkeypatch.setattr(engine.plan, "physical_memory_bytes", lambda: 100_000)
    result = cli("conv", "--in", "8", "--out", "8", "--size", "64", "--measure-on", "cpu")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(
        "error: --measure-on cpu: a real run needs about 250.41 KiB of tensors, more than this "
        "machine's 97.66 KiB of memory: it does not fit here; --measure-on auto or meta"
    )
    # auto chooses for itself; only an explicit cpu is refused
    assert (
        cli("conv", "--in", "8", "--out", "8", "--size", "64", "--measure-on", "meta").exit_code
        == 0
    )


def test_an_allocation_failure_is_said_not_to_fit() -> None:
    from convcalc.measure.run import out_of_memory

    assert out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert out_of_memory(MemoryError())
    assert not out_of_memory(RuntimeError("Given groups=1, weight of size [8, 3, 3, 3]"))


def test_binary_stdin_is_not_utf8(cli) -> None:  # already fixed
    result = cli("stack", "-", input=b"\xff\xfe\x00bin")  # type: ignore[arg-type]
    assert (result.exit_code, result.stderr) == (2, "error: <stdin>: not UTF-8 text (byte 0)\n")


# --- 12-14: closed pipes, full disks, closed stdout, Ctrl-C (real processes) ------------------


def test_a_reader_that_goes_away_is_exit_0() -> None:
    # click turned EPIPE into exit 1, which convcalc then reported as its own bug (exit 3)
    result = _run(
        "convcalc stack --arch resnet50 --format jsonl --formula-only | head -1 >/dev/null; "
        'echo "${PIPESTATUS[0]}"'
    )
    assert result.stdout == "0\n"
    assert result.stderr == ""


def test_a_full_disk_is_one_line_exit_1() -> None:
    result = _run("convcalc dw --in 64 --out 256 --formula-only --json > /dev/full")
    assert result.returncode == 1
    assert result.stderr == "error: cannot write the output: No space left on device\n"


def test_a_closed_stdout_is_one_line_exit_2() -> None:
    # used to be a 40-line traceback from Rich (sys.stdout is None)
    result = _run("convcalc dw --in 64 --out 256 --formula-only >&-")
    assert result.returncode == 2
    assert result.stderr == "error: cannot write the output: standard output is closed\n"


def test_a_closed_stderr_changes_nothing() -> None:
    result = _run("convcalc dw --in 64 --out 256 --formula-only --get total.params 2>&-")
    assert (result.returncode, result.stdout) == (0, "17280\n")


def test_ctrl_c_says_interrupted_and_keeps_finished_rows(tmp_path) -> None:
    sweep = tmp_path / "sweep.jsonl"
    sweep.write_text('{"in": 16, "out": 16, "size": 32}\n' * 20000)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "convcalc", "batch", str(sweep)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()  # running: the first row is out
        process.send_signal(signal.SIGINT)
        # read on through the same buffered reader: communicate() reads the pipe's descriptor
        # and would skip what readline() has already buffered past the first row (a row seen
        # cut at its start: the test's doing, not convcalc's)
        rest = process.stdout.read()
        err = process.stderr.read()
        process.wait(timeout=180)
    assert process.returncode == 130
    assert err.decode().endswith("interrupted\n")  # Typer used to swallow the line
    lines = (first + rest).decode().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        # Ctrl-C can land while a row is being written: the cut row is the one --resume redoes
        lines = lines[:-1]
    rows = [json.loads(line) for line in lines]
    assert rows[0]["line"] == 1
    assert [row["line"] for row in rows] == list(range(1, len(rows) + 1))


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_ctrl_c_on_parallel_batch_leaves_no_worker_behind(tmp_path) -> None:
    # the parent leaves by os._exit at once; its spawned workers used to sleep on forever,
    # holding the caller's pipes open (found by a new user: $(convcalc batch ...) hung)
    import time

    sweep = tmp_path / "sweep.jsonl"
    sweep.write_text(
        "".join(f'{{"in": 16, "out": 16, "size": {8 + n % 50}}}\n' for n in range(20000))
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "convcalc", "batch", str(sweep), "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        assert process.stdout is not None
        process.stdout.readline()  # the workers are running
        workers = _children(process.pid)
        assert workers  # two spawned workers (and multiprocessing's resource tracker)
        process.send_signal(signal.SIGINT)
        # the parent's exit, not the pipes' end: workers left behind would hold them open
        process.wait(timeout=180)
    assert process.returncode == 130
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.1)
    alive = [pid for pid in workers if Path(f"/proc/{pid}/stat").exists()]
    assert not alive, f"workers still running after the parent left: {alive}"


# --- 16: agree is false whenever any pair differs, totals included ------------------------------


def test_a_total_that_differs_alone_is_a_disagreement() -> None:
    from convcalc.cli.emit import emit
    from convcalc.cli.exits import CheckFailed
    from convcalc.cli.options import OutputOptions
    from convcalc.core.report import Pair

    report = library.conv(3, 4, size=8)
    assert report.agree is True
    # every layer agrees; only the total's parameters differ (measured 113, formula 112:
    # 4·3·3·3 + 4 = 112)
    total = replace(report.total, params=Pair(113, report.total.params.formula))
    broken = replace(report, total=total)
    assert report.total.params.formula == 112
    assert broken.agree is False
    assert broken.disagreements == ["total: params"]
    assert broken.to_dict()["agree"] is False
    with pytest.raises(CheckFailed, match="total: params"):
        emit(broken, OutputOptions(get=("agree",), strict=True))


# --- 18: a model in half precision, or with an integer output, never exit 3 --------------------

HALF_MODELS = """
import torch
from torch import nn


class CastsItself(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3).half()

    def forward(self, x):
        return self.conv(x.half())


class Half(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3).half()

    def forward(self, x):
        return self.conv(x)


class IntegerOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.conv(x).argmax(dim=1)
"""


@pytest.mark.parametrize("name", ["CastsItself", "Half", "IntegerOutput"])
def test_models_in_their_own_dtypes(cli, tmp_path, name) -> None:
    path = tmp_path / "halfnets.py"
    path.write_text(HALF_MODELS)
    result = cli("model", f"{path}:{name}", "--input", "1,3,8,8", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    # conv 3 -> 8, k3: 8·3·3·3 + 8 = 224 parameters; 1·8·6·6·27 = 7,776 MACs
    assert (data["total"]["params"], data["total"]["macs"]) == (224, 7776)
    # its memory is measured (in its own dtypes where --dtype's cast breaks it), not given up
    assert data["total"]["memory_bytes"]["peak_inference"] is not None
    if name == "CastsItself":
        assert "in the model's own dtypes (float16)" in data["sources"]["memory_peak_inference"]


# --- 22: model --help's examples work with torch alone -----------------------------------------


def test_model_help_examples_run(cli) -> None:
    text = cli("model", "--help").stdout
    assert "torchvision" not in text.split("Examples")[1].split("\n", 2)[2]  # only as a mention
    lines = re.sub(r"\\\n\s*", "", text).splitlines()
    examples = [line.split()[1:] for line in lines if line.strip().startswith("convcalc model")]
    runnable = [args for args in examples if args[1].startswith("torch.")]
    assert len(runnable) == 2
    for args in runnable:
        result = cli(*args, "--get", "total.params")
        assert result.exit_code == 0, (args, result.stderr)
