"""Output and help defects a new user hit: the meta device's 'measured by' line, the ASCII
fallback's table widths, --help's option groups, the roofline's marks, the --fit line, and
--input beside --batch/--size for stack files and --arch."""

from __future__ import annotations

import json


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
