"""What the command-line entry point tells the rooms about the process they run in.

Library code runs inside someone else's program and changes nothing process-wide; convcalc's
own command is a short-lived process of its own, where a few such changes are safe and pay.
"""

from __future__ import annotations

import gc

#: set by convcalc.cli.app.main: this process is convcalc's command, which exits once its output
#: is written (library callers leave it False)
command_line = False


def torch_loaded() -> None:
    """torch has just been imported (convcalc.measure does it first). Under the command line,
    everything alive now (torch's ~200,000 modules, functions and tables, which live as long as
    the process) moves out of the garbage collector's sight (``gc.freeze``): each later
    collection would walk them again; a ResNet-50 stack spent about 0.1 s there
    (docs/benchmarks.md). What is garbage at this moment stays (import leaves none to speak of)."""
    if command_line:
        gc.freeze()
