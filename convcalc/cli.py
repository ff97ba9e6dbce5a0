"""The Typer app: parse options into specs, call the library, render, map errors to exit codes.

Start-up matters (convcalc runs in shell loops): this module imports neither torch nor Rich at
module level; ``--help`` and ``--version`` never load them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from ._version import __version__
from .errors import ConvcalcError
from .status import ExitStatus


def fail(message: str, status: ExitStatus = ExitStatus.INVALID_INPUT) -> NoReturn:
    """One line on stderr, nothing on stdout, and the exit status."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(int(status))


class ConvcalcGroup(TyperGroup):
    """Usage errors as one line on stderr (exit 2), Ctrl-C as 130, a closed pipe quietly."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(
                args=args,
                prog_name=prog_name or "convcalc",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except typer.TyperException as error:  # click's usage errors derive from it
            if type(error).__name__ == "NoArgsIsHelpError":  # bare `convcalc`: show the help
                sys.stdout.write(error.format_message())
                sys.exit(int(ExitStatus.OK))
            sys.stderr.write(f"error: {error.format_message()}\n")
            sys.exit(int(ExitStatus.INVALID_INPUT))
        except (typer.Abort, KeyboardInterrupt):
            sys.stderr.write("interrupted\n")
            sys.exit(int(ExitStatus.INTERRUPTED))
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (`| head`): nothing more to say
            sys.exit(int(ExitStatus.OK))
        sys.exit(result if isinstance(result, int) else int(ExitStatus.OK))


app = typer.Typer(
    cls=ConvcalcGroup,
    name="convcalc",
    help=(
        "Convolution cost calculator: builds the real PyTorch layer, measures it, and sets "
        "every figure beside its formula."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"convcalc {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Convolution cost calculator: every figure measured from the real PyTorch layer and set
    beside its closed-form formula.

    Exit statuses: 0 all good; 1 a check failed; 2 invalid input; 130 interrupted.
    """


@contextmanager
def user_errors() -> Iterator[None]:
    """Library errors become one line on stderr and exit status 2; no traceback."""
    try:
        yield
    except ConvcalcError as error:
        fail(str(error))


# --- shared options ----------------------------------------------------------------------------

FORMATS = ("table", "json")

In = Annotated[int, typer.Option("--in", help="Input channels.", show_default=False)]
Out = Annotated[int, typer.Option("--out", help="Output channels.", show_default=False)]
Kernel = Annotated[
    str, typer.Option("-k", "--kernel", help="Kernel size: 3, or one per dimension (3x5).")
]
Stride = Annotated[str, typer.Option("-s", "--stride", help="Stride: 2, or 2x1.")]
PaddingOpt = Annotated[
    str, typer.Option("-p", "--padding", help="Padding: 1, 1x2, 'same' or 'valid'.")
]
Dilation = Annotated[str, typer.Option("-d", "--dilation", help="Dilation: 2, or 2x1.")]
Groups = Annotated[int, typer.Option("-g", "--groups", help="Groups (--groups = --in: depthwise).")]
Bias = Annotated[bool, typer.Option("--bias/--no-bias", help="Learnable bias, as in torch.")]
Transpose = Annotated[
    bool, typer.Option("--transpose", help="A transposed convolution (nn.ConvTransposeNd).")
]
OutputPadding = Annotated[
    str, typer.Option("--output-padding", help="Extra output size of a transposed conv: 1, 1x0.")
]
PaddingMode = Annotated[
    str, typer.Option("--padding-mode", help="zeros, reflect, replicate or circular.")
]
Dims = Annotated[int, typer.Option("--dims", help="Spatial dimensions: 1, 2 or 3.")]
Size = Annotated[str, typer.Option("--size", help="Spatial input size: 224, or 56x80.")]
Batch = Annotated[int, typer.Option("--batch", help="Batch size.")]
Dtype = Annotated[
    str, typer.Option("--dtype", help="float32, float16 or bfloat16 (memory figures).")
]
Format = Annotated[str, typer.Option("--format", "-f", help="Output: table or json.")]
Json = Annotated[bool, typer.Option("--json", help="Short for --format json.")]
MeasureOn = Annotated[
    str,
    typer.Option(
        "--measure-on",
        help="auto: a real CPU run when it fits here, else torch's meta device; or cpu, meta.",
    ),
]
NoColor = Annotated[bool, typer.Option("--no-color", help="No colour (also: NO_COLOR).")]


def _pick_format(fmt: str, as_json: bool) -> str:
    chosen = "json" if as_json else fmt.lower()
    if chosen not in FORMATS:
        fail(f"--format {fmt!r} must be one of {', '.join(FORMATS)}")
    return chosen


@app.command()
def conv(
    in_channels: In,
    out_channels: Out,
    kernel: Kernel = "3",
    stride: Stride = "1",
    padding: PaddingOpt = "0",
    dilation: Dilation = "1",
    groups: Groups = 1,
    bias: Bias = True,
    transpose: Transpose = False,
    output_padding: OutputPadding = "0",
    padding_mode: PaddingMode = "zeros",
    dims: Dims = 2,
    size: Size = "224",
    batch: Batch = 1,
    dtype: Dtype = "float32",
    fmt: Format = "table",
    as_json: Json = False,
    measure_on: MeasureOn = "auto",
    no_color: NoColor = False,
) -> None:
    """Measure one conv layer with real torch and set every figure beside its formula.

    Examples:

      convcalc conv --in 3 --out 16 -k 5 --size 28

      convcalc conv --in 16 --out 8 -k 4 -s 2 -p 1 --transpose --size 32

      convcalc conv --in 64 --out 64 -k 3 -p same -d 2 -g 64 --size 56x80 --batch 8 --json
    """
    chosen = _pick_format(fmt, as_json)
    with user_errors():
        from .analyze import analyze
        from .spec import build_conv, build_input

        spec = build_conv(
            dims=dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            transpose=transpose,
            output_padding=output_padding,
            padding_mode=padding_mode,
        )
        input_spec = build_input(
            dims=dims, channels=in_channels, size=size, batch=batch, dtype=dtype
        )
        report = analyze(spec, input_spec, measure_on=measure_on)
    from .render import render

    render(report, chosen, no_color=no_color)


def main() -> None:
    """Console-script entry point (also ``python -m convcalc``).

    Once torch is loaded, interpreter teardown costs more than most reports take (about 0.6 s
    here: bench/startup.py shows `python -c "import torch"` at 1.4 s with ``os._exit`` and 2.2 s
    without). convcalc holds no files or resources that need it, so after flushing its output
    it leaves at once. Tests drive ``app`` through Typer's runner and never reach this.
    """
    try:
        app()
    except SystemExit as leaving:
        status = (
            leaving.code if isinstance(leaving.code, int) else (0 if leaving.code is None else 1)
        )
        if "torch" not in sys.modules:
            raise
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            pass
        os._exit(status)
