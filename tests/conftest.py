from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from convcalc.cli.app import app

GOLDEN = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite tests/golden/* from the output"
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """Compare text with tests/golden/NAME; `pytest --update-golden` rewrites the file."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if request.config.getoption("--update-golden"):
            path.parent.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
        assert path.exists(), f"no golden file {path}: run pytest --update-golden"
        assert text == path.read_text(encoding="utf-8")

    return check


class Cli:
    """Runs convcalc through Typer's runner; stdout and stderr kept apart."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None):
        return self.runner.invoke(app, list(args), input=input, env=env)

    def json(self, *args: str) -> dict[str, Any]:
        result = self(*args, "--format", "json")
        assert result.exit_code == 0, result.stderr
        assert result.stderr == ""
        return json.loads(result.stdout)


@pytest.fixture(scope="session")
def cli() -> Cli:
    return Cli()


@pytest.fixture(scope="session", autouse=True)
def _peaks_cache(tmp_path_factory: pytest.TempPathFactory):
    """--time implies the roofline, whose peaks are calibrated once and cached in the user's
    cache directory: the suite keeps its cache out of the user's home (XDG_CACHE_HOME), seeded
    with stand-in peaks (100 GFLOP/s, 20 GB/s, marked so) so that no test spends 3 s
    calibrating or prints the calibration line; tests of calibration use their own dirs."""
    import os

    cache = tmp_path_factory.mktemp("xdg-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    from convcalc.core.roofline import Peaks
    from convcalc.measure import calibrate

    def stand_in(device: str, dtype: str, *, budget_s: float = 3.0) -> Peaks:
        return Peaks(1e11, 2e10, device, dtype, 1, True, "stand-in peaks of the test suite")

    real = calibrate.measure_peaks
    calibrate.measure_peaks = stand_in  # type: ignore[assignment]
    try:
        for dtype in ("float32", "float16", "bfloat16"):
            calibrate.cached_peaks("cpu", dtype)
    finally:
        calibrate.measure_peaks = real  # type: ignore[assignment]
    yield cache
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous
