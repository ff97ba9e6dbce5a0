"""One command's machine instructions, counted by valgrind's callgrind (the same count on a busy
machine as on a quiet one, unlike any clock). Shared by the bench scripts that count."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path


def instructions(command: list[str], env: dict[str, str]) -> int:
    """The instructions ``command`` (an interpreter and its arguments) runs, all of its process."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        counted = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]
        subprocess.run(counted, env=env, check=True, capture_output=True)
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        if match is None:
            raise SystemExit("no instruction count in callgrind's output")
        return int(match.group(1))
