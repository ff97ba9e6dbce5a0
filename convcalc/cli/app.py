"""The Typer app: the command table, exit statuses, and the console-script entry point.

Start-up matters (convcalc runs in shell loops): this module imports neither torch nor Rich, and
only the command that runs is imported and built (ConvcalcGroup.get_command): ``--help`` and
``--version`` build none.
"""

import errno
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

# Start-up: importing Typer and click makes ~12,000 tracked objects that live as long as the
# process and no garbage; the collector's passes during the import walked them again and again
# (~3M instructions, ~1% of a formula-only run: docs/benchmarks.md). Off for these imports only.
_collecting = gc.isenabled()
gc.disable()
try:
    import typer
    import typer.main
    from typer.core import TyperGroup

    from convcalc import _dataclass, _runtime
    from convcalc._version import __version__
    from convcalc.cli.exits import ExitStatus, Interrupted, OutputClosed, exit_status, message_of
finally:
    if _collecting:
        # what these imports made lives as long as the process: it joins the oldest generation
        # as a whole (gc.freeze then gc.unfreeze: lists spliced, nothing walked), so the first
        # young collection after this does not walk its ~16,000 objects (~5.6M instructions,
        # ~2% of a formula-only run). Not when something else froze objects: unfreeze would
        # hand back theirs too
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        gc.enable()

#: every command: the module of its family, and its one-line help (``convcalc --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "conv": (
        "layers",
        "One conv layer measured with real torch, every figure beside its formula.",
    ),
    "dw": ("layers", "Depthwise separable: a depthwise conv (groups = in) then a pointwise 1x1."),
    "pw": ("layers", "Pointwise: a 1x1 convolution that mixes channels only."),
    "group": ("layers", "Grouped convolution, with its ratio to the standard conv."),
    "dilated": ("layers", "Dilated (atrous) convolution, beside the same kernel undilated."),
    "transpose": ("layers", "Transposed convolution; by default k4 s2 p1: a 2x upsampling."),
    "tconv": ("layers", "Alias of transpose."),
    "gdconv": ("layers", "Global depthwise convolution (GDConv, MobileFaceNet)."),
    "compare": ("layers", "Standard, grouped and depthwise-separable versions side by side."),
    "stack": ("networks", "A stack of layers or a whole network, with its cumulative fields."),
    "model": ("networks", "Your own model (an nn.Module), run for real and counted."),
    "batch": ("sweep", "Sweep many specs in one process: one result per spec, streamed."),
    "solve": ("solving", "Solve for the padding (stride, dilation) that gives a target size."),
    "draw": ("drawing", "Pictures: taps, holes, strides, and a stack's receptive field."),
}


class ConvcalcGroup(TyperGroup):
    """Builds only the command that runs; usage errors as one line on stderr (exit 2), Ctrl-C
    as 130, a closed pipe quietly (cli/exits.py has the whole table)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        family = importlib.import_module(f"convcalc.cli.{COMMANDS[cmd_name][0]}")
        if cmd_name == "draw":
            return typer.main.get_group(family.app)
        for info in family.app.registered_commands:
            name = info.name or typer.main.get_command_name(info.callback.__name__)
            if name == cmd_name:
                return typer.main.get_command_from_info(
                    info, pretty_exceptions_short=True, rich_markup_mode=None
                )
        return None

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, text) for name, (_, text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; Ctrl-C and a closed pipe leave as convcalc's own exceptions, which
        Typer and click let through (they would make them a silent 130 and an exit 1)."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None
        except OSError as error:
            if error.errno == errno.EPIPE:
                raise OutputClosed() from None
            raise

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if sys.stderr is None:  # 2>&-: nowhere to say anything; say nothing
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (for the life of the process)
        if sys.stdout is None:  # >&-: no output can be written; fail before any work
            sys.stderr.write("error: cannot write the output: standard output is closed\n")
            sys.exit(int(ExitStatus.INVALID_INPUT))
        _ascii_where_needed()
        try:
            result = super().main(
                args=args,
                prog_name=prog_name or "convcalc",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except typer.Exit as leaving:
            sys.exit(leaving.exit_code)
        except SystemExit:
            if type(sys.stdout).__name__ == "PacifyFlushWrapper":
                # click caught the closed pipe (EPIPE), wrapped stdout and exits 1: the table
                # says a reader going away (`| head -1`) is 0, quietly
                _quiet_stdout()
                sys.exit(int(ExitStatus.OK))
            raise
        except BaseException as error:  # every way out: one line, the status of the table
            if os.environ.get("CONVCALC_DEBUG") and exit_status(error) == ExitStatus.INTERNAL_ERROR:
                raise
            if os.environ.get("CONVCALC_DEBUG"):
                _user_traceback(error)
            if type(error).__name__ == "NoArgsIsHelpError":  # bare `convcalc`: the help
                sys.stdout.write(error.format_message())  # type: ignore[attr-defined]
                sys.exit(int(ExitStatus.OK))
            status = exit_status(error)
            line = message_of(error)
            if status == ExitStatus.OK:
                _quiet_stdout()
            elif line:
                try:
                    sys.stderr.write(line + "\n")
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
            sys.exit(int(status))
        sys.exit(result if isinstance(result, int) else int(ExitStatus.OK))


def _user_traceback(error: BaseException) -> None:
    """CONVCALC_DEBUG=1: the traceback of what a user's code raised (a model's forward, its
    import or constructor: the error the one line is made of, its ``__cause__``) before it."""
    cause = error.__cause__
    if cause is None or _is_convcalc_error(cause):
        return
    import contextlib
    import traceback

    with contextlib.suppress(OSError, ValueError):
        traceback.print_exception(cause, file=sys.stderr, chain=False)


def _is_convcalc_error(error: BaseException) -> bool:
    from convcalc.errors import ConvcalcError

    return isinstance(error, ConvcalcError)


def _ascii_where_needed() -> None:
    """A stdout or stderr that cannot encode ×, ✓ or → gets their ASCII stand-ins (x, ok, ->)
    instead of a UnicodeEncodeError (convcalc/output/charset.py)."""
    from convcalc.output.charset import ascii_fallback

    ascii_fallback(sys.stdout)
    ascii_fallback(sys.stderr)


def _quiet_stdout() -> None:
    """The reader went away (``| head``): point stdout at /dev/null so that the interpreter's
    final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


app = typer.Typer(
    cls=ConvcalcGroup,
    name="convcalc",
    help=(
        "Convolution cost calculator: builds the real PyTorch layer, measures it, and sets "
        "every figure beside its formula.\n\n\b\nExit statuses:\n"
        "  0    all good\n"
        "  1    an --expect failed, --strict found a disagreement, solve found no setting, or "
        "the output could not be written\n"
        "  2    invalid input (one line on stderr)\n"
        "  3    convcalc itself failed (a bug)\n"
        "  130  interrupted (Ctrl-C; batch keeps the rows it finished)"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain help, formatted by click: Typer's Rich help loads rich.markdown and friends, which
    # more than doubles the time `convcalc --help` takes (docs/benchmarks.md)
    rich_markup_mode=None,
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
    beside its closed-form formula."""


def main() -> None:
    """Console-script entry point (also ``python -m convcalc``).

    Once torch is loaded, interpreter teardown costs more than most reports take (about 0.6 s
    here: bench/speed.py shows `python -c "import torch"` about that much slower than with
    ``os._exit``). convcalc holds no files or resources that need it, so after flushing its
    output it leaves at once, with or without torch: a formula-only run skips the teardown of
    its own modules and Rich's too (~4% of its instructions: docs/benchmarks.md). Tests drive
    ``app`` through Typer's runner and never reach this.

    What is loaded by now (the interpreter's, Typer's and click's objects, for the life of the
    process) is moved out of the garbage collector's sight (``gc.freeze``): its collections
    while the command imports and runs no longer walk them again and again (a short command
    spent about 4% of its instructions there: docs/benchmarks.md).
    """
    gc.freeze()
    _runtime.command_line = True  # torch's objects frozen once imported (convcalc/_runtime.py)
    try:
        app()
    except SystemExit as leaving:
        status = (
            leaving.code if isinstance(leaving.code, int) else (0 if leaving.code is None else 1)
        )
        _flush_quietly()
        _dataclass.save()  # the classes' generated code, for the next run (convcalc/_dataclass.py)
        os._exit(status)


def _flush_quietly() -> None:
    """Flush what is left; a reader that went away, or a full disk, at this point must not
    change the exit status (nor print Python's 'Exception ignored' at teardown)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout:
                _quiet_stdout()
