"""Start-up (issue 11): the dataclass code cache (convcalc/_dataclass.py) changes nothing but the
compiling, and `convcalc conv --formula-only` loads only what it needs (a module-set assertion,
not a timing: docs/benchmarks.md has the timings)."""

from __future__ import annotations

import dataclasses
import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convcalc import _dataclass

ROOT = Path(__file__).resolve().parent.parent
LAYER = ["conv", "--in", "64", "--out", "256", "-k", "3", "-p", "1", "--formula-only"]

GENERATED = ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__")


def _body(decorator):  # the same class made by either decorator
    @decorator(frozen=True)
    class Point:
        x: int
        y: int = 2
        tags: tuple[str, ...] = dataclasses.field(default=())

    return Point


def test_same_class_as_the_standard_library() -> None:
    ours, theirs = _body(_dataclass.dataclass), _body(dataclasses.dataclass)
    # every generated method is the same code (code objects compare their bytecode, constants,
    # names and line table, not the file name)
    for name in GENERATED:
        method, standard = getattr(ours, name), getattr(theirs, name)
        if name == "__repr__":  # wrapped against recursion by dataclasses
            method, standard = method.__wrapped__, standard.__wrapped__
        assert method.__code__ == standard.__code__, name
    assert [f.name for f in dataclasses.fields(ours)] == ["x", "y", "tags"]
    point = ours(1)
    assert repr(point) == repr(theirs(1)) == "_body.<locals>.Point(x=1, y=2, tags=())"
    assert point == ours(1, 2) and point != ours(1, 3) and hash(point) == hash(ours(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 5  # type: ignore[misc]
    assert dataclasses.replace(point, y=7) == ours(1, 7)
    assert "exec" not in vars(dataclasses)  # the stand-in exec lives only while a class is made


def _run(code: str, cache: Path) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


MAKE = (
    "from convcalc import _dataclass\n"
    "import convcalc.core.report\n"
    "print(len(_dataclass._compiled))\n"
    "_dataclass.save()\n"
)


def test_the_second_process_compiles_nothing(tmp_path: Path) -> None:
    first = int(_run(MAKE, tmp_path))
    assert first > 0  # nothing cached yet: the report's classes compiled
    assert Path(_dataclass.cache_file()).name in {p.name for p in (tmp_path / "convcalc").iterdir()}
    assert int(_run(MAKE, tmp_path)) == 0  # all of them taken from the file


#: Rich imported the way output/render.py imports it: its standard dataclasses (Column, Row,
#: ConsoleOptions...) under _dataclass.kept()
RICH = (
    "from convcalc import _dataclass\n"
    "with _dataclass.kept():\n"
    "    import rich.table, rich.console\n"
    "import dataclasses\n"
    "assert 'exec' not in vars(dataclasses)\n"
    "print(len(_dataclass._compiled))\n"
    "_dataclass.save()\n"
)


def test_a_librarys_dataclasses_imported_under_kept_are_cached_too(tmp_path: Path) -> None:
    assert int(_run(RICH, tmp_path)) > 0  # Rich's classes' code compiled, and written
    assert int(_run(RICH, tmp_path)) == 0  # then taken from the file


def test_a_foreign_or_broken_file_is_ignored(tmp_path: Path) -> None:
    _run(MAKE, tmp_path)
    (path,) = (tmp_path / "convcalc").iterdir()
    path.write_bytes(b"not a table at all")
    assert int(_run(MAKE, tmp_path)) > 0  # compiled again, as without a cache
    path.write_bytes(_dataclass.FORMAT + b"\x00\x00\r\n" + b"truncated")  # another Python's
    assert int(_run(MAKE, tmp_path)) > 0
    # another convcalc version's table (its classes' texts, stale after an upgrade): not read
    _run(MAKE, tmp_path)
    data = path.read_bytes()
    header = _dataclass._header()
    assert data.startswith(header) and header.endswith(b"\n")
    older = header[: -len(b"\n")].rsplit(b"0", 1)[0] + b"older\n"
    path.write_bytes(older + data[len(header) :])
    assert int(_run(MAKE, tmp_path)) > 0


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_the_file_is_the_users_alone_and_a_writable_one_is_not_trusted(tmp_path: Path) -> None:
    _run(MAKE, tmp_path)
    (path,) = (tmp_path / "convcalc").iterdir()
    assert path.stat().st_mode & 0o777 == 0o600
    assert int(_run(MAKE, tmp_path)) == 0  # trusted: all taken from it
    path.chmod(0o620)  # others may write it: its code is not loaded
    assert int(_run(MAKE, tmp_path)) > 0


def test_the_variable_turns_the_table_off(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        _dataclass.OFF_VARIABLE: "1",
    }
    for _ in range(2):  # nothing written, so the second run compiles everything again
        done = subprocess.run(
            [sys.executable, "-c", MAKE], env=env, capture_output=True, text=True, check=True
        )
        assert int(done.stdout) > 0
    assert not (tmp_path / "convcalc").exists()


def test_the_cli_writes_the_cache_and_the_library_does_not(tmp_path: Path) -> None:
    _run("import convcalc.engine", tmp_path)
    assert not (tmp_path / "convcalc").exists()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "convcalc", *LAYER, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["total"]["params"] == 147712  # 64*256*9 + 256
    assert (tmp_path / "convcalc").exists()


#: what `convcalc conv ... --formula-only` must not load: torch and its kin (never, by formula),
#: the sources (yaml), and convcalc's modules of other paths, made lazy for start-up: the query
#: (--get/--expect), the roofline (--roofline/--time), the inline grammar (stacks), csv
#: (--format csv), the engine's jobs of other commands (engine/__init__.py imports each name on
#: first use: a user's model, the presets of compare/group/dilated), the other kinds (each loaded
#: on use: kinds/__init__.py), the result types of model and compare (core/report.py re-exports
#: them). (difflib is not listed:
#: Typer's click loads it for every command.)
NOT_LOADED = (
    "torch",
    "fvcore",
    "sympy",
    "yaml",
    "csv",
    "convcalc.measure",
    "convcalc.sources",
    "convcalc.core.query",
    "convcalc.core.roofline",
    "convcalc.core.grammar",
    "convcalc.core.solve",
    "convcalc.core.picture",
    "convcalc.engine.model",
    "convcalc.engine.presets",
    "convcalc.kinds.pool",
    "convcalc.kinds.adaptive_pool",
    "convcalc.kinds.linear",
    "convcalc.kinds.norm",
    "convcalc.kinds.activation",
    "convcalc.kinds.shape",
    "convcalc.core.model_report",
    "convcalc.core.comparison",
)

#: main leaves by os._exit (no interpreter teardown): the module list is written on the way out,
#: taken before json is imported to write it
LOADED = (
    "import os, sys\n"
    "from convcalc.cli.app import main\n"
    "sys.argv = ['convcalc', *sys.argv[1:]]\n"
    "leave = os._exit\n"
    "def _exit(status):\n"
    "    names = sorted(sys.modules)\n"
    "    import json\n"
    "    sys.stderr.write('\\nMODULES ' + json.dumps(names))\n"
    "    sys.stderr.flush()\n"
    "    leave(status)\n"
    "os._exit = _exit\n"
    "main()\n"
)


@pytest.mark.parametrize("output", [["--json"], []], ids=["json", "table"])
def test_formula_only_loads_only_its_path(tmp_path: Path, output: list[str]) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", LOADED, *LAYER, *output],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "147,712" in done.stdout or '"params": 147712' in done.stdout  # 64*256*9 + 256
    loaded = set(json.loads(done.stderr.rpartition("MODULES ")[2]))
    assert "convcalc.engine" in loaded  # the test sees the run's modules
    assert ("rich.console" in loaded) == (not output)  # Rich's console for the table only
    assert ("json" in loaded) == bool(output)  # and json for JSON only (output/formats.py)
    # a network without a fractional stride never loads fractions (core/cumulative.py): JSON
    # does not; the table does, as Rich's table (rich._ratio) imports it
    assert ("fractions" in loaded) == (not output)
    unwanted = sorted(
        name for name in loaded for top in NOT_LOADED if name == top or name.startswith(top + ".")
    )
    assert unwanted == []


def test_only_the_running_command_works_out_its_options(tmp_path: Path) -> None:
    """cli/options.with_groups: a command's signature (its options and its groups') is worked
    out when Typer builds that command, not for every command of the module at import."""
    code = LOADED.replace(
        "sorted(sys.modules)",
        "sorted(n for n, c in vars(sys.modules['convcalc.cli.layers']).items()"
        " if getattr(c, '_prepared', 0) is not None and hasattr(c, '_prepare'))",
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, *LAYER, "--json"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.rpartition("MODULES ")[2]) == ["conv"]


@pytest.mark.parametrize(
    ("arguments", "status"),
    [
        ([*LAYER, "--json"], 0),
        (LAYER, 0),
        (["conv", "--in", "0", "--out", "8", "-k", "3", "--formula-only"], 2),
    ],
)
def test_the_cli_leaves_without_the_interpreters_teardown(
    tmp_path: Path, arguments: list[str], status: int
) -> None:
    """cli/app.main flushes its output and leaves by os._exit, torch loaded or not (start-up:
    a formula-only run skips tearing its modules down): an atexit handler never runs, while the
    output, the one line on stderr and the exit status are all there."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stdout.write('TORN DOWN'))\n"
        "from convcalc.cli.app import main\n"
        "sys.argv = ['convcalc', *sys.argv[1:]]\n"
        "main()\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, *arguments], env=env, capture_output=True, text=True
    )
    assert done.returncode == status, done.stderr
    assert "TORN DOWN" not in done.stdout
    if status:
        assert done.stderr.count("\n") == 1 and "--in" in done.stderr
    else:
        assert "147,712" in done.stdout or '"params": 147712' in done.stdout  # 64*256*9 + 256


@pytest.mark.parametrize("before", [True, False])
def test_the_collector_is_as_it_was_after_the_cli_is_imported(before: bool) -> None:
    """cli/app.py turns the garbage collector off while it imports Typer and click (start-up)
    and leaves it as it found it: on for the command, off if the caller had turned it off."""
    code = (
        "import gc, sys\n"
        f"gc.enable() if {before} else gc.disable()\n"
        "import convcalc.cli.app\n"
        "assert 'typer' in sys.modules\n"
        "print(gc.isenabled())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == str(before)


KINDS_ON_USE = (
    "import sys\n"
    "import convcalc.kinds as k\n"
    "from convcalc.core import memory_model\n"
    "print(sorted(n for n in sys.modules if n.startswith('convcalc.kinds.')))\n"
    "from convcalc.kinds import build_pool\n"
    "print(sorted(n for n in sys.modules if n.startswith('convcalc.kinds.')))\n"
    "spec = build_pool(kind='max', dims=2, channels=3)\n"
    "print(k.kind_of(spec).spec_type.__name__, k.is_pool(spec), k.is_norm(spec))\n"
    "print([kind.spec_type.__name__ for kind in k.KINDS])\n"
    "print(memory_model.INPLACE_SAVES_OUTPUT == k.activation.INPLACE_SAVES_OUTPUT)\n"
    "print(k.LayerSpec.__args__[0].__name__, len(k.LayerSpec.__args__))\n"
)


def test_kinds_load_on_use(tmp_path: Path) -> None:
    """kinds/__init__.py: the conv kind alone at import; a name of another kind loads its module
    (and only it), KINDS all of them in the registry's order; kind_of finds a kind loaded later."""
    lines = _run(KINDS_ON_USE, tmp_path).splitlines()
    assert lines[0] == "['convcalc.kinds.base', 'convcalc.kinds.conv']"
    assert lines[1] == "['convcalc.kinds.base', 'convcalc.kinds.conv', 'convcalc.kinds.pool']"
    assert lines[2] == "PoolSpec True False"
    assert lines[3] == (
        "['ConvSpec', 'PoolSpec', 'AdaptivePoolSpec', 'LinearSpec', 'NormSpec', 'ActSpec',"
        " 'ShapeSpec']"
    )
    assert lines[4] == "True"
    assert lines[5] == "ConvSpec 7"


#: the buckets of the file, and those this process unmarshalled
BUCKETS = (
    "from convcalc import _dataclass\n"
    "import convcalc.core.spec\n"
    "print(sorted(_dataclass._read()))\n"
    "print(sorted(_dataclass._tables))\n"
)


def test_a_damaged_bucket_is_compiled_again_not_run(tmp_path: Path) -> None:
    """marshal trusts its bytes: a flipped bit inside a code object made every later run crash
    (exit 139, a new-user trial) or call a generated __init__ with the wrong arguments (exit 3).
    Each bucket carries its CRC-32; one that does not match is compiled again, as without a
    cache, and the file is written whole again."""
    _run(MAKE, tmp_path)
    (path,) = (tmp_path / "convcalc").iterdir()
    header = _dataclass._header()
    buckets = marshal.loads(path.read_bytes()[len(header) :])
    entries, data, checksum = buckets["convcalc.core.report"]
    # flip one bit in the middle of the bucket's code: what a failing disk does
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0b1000
    buckets["convcalc.core.report"] = (entries, bytes(damaged), checksum)
    path.write_bytes(header + marshal.dumps(buckets))
    assert int(_run(MAKE, tmp_path)) == entries  # that bucket's classes compiled again
    repaired = marshal.loads(path.read_bytes()[len(header) :])
    assert repaired["convcalc.core.report"] == (entries, data, checksum)
    assert int(_run(MAKE, tmp_path)) == 0


def test_a_run_opens_only_its_modules_buckets(tmp_path: Path) -> None:
    """The table is kept per defining module: a process unmarshals the buckets of the classes it
    makes, and a save writes the buckets it did not open back as they were."""
    _run(MAKE, tmp_path)  # the report's classes and those of the modules it imports
    (path,) = (tmp_path / "convcalc").iterdir()
    before = path.read_bytes()
    written, opened = (eval(line) for line in _run(BUCKETS, tmp_path).splitlines())
    assert {"convcalc.core.report", "convcalc.core.spec", "convcalc.core.memory"} <= set(written)
    assert opened == ["convcalc.core.spec"]  # core.spec's classes only: not the report's
    # a class compiled in a new bucket: the file gains it, every other bucket's bytes unchanged
    _run(
        "from convcalc import _dataclass\n"
        "@_dataclass.dataclass\n"
        "class Fresh:\n"
        "    a: int\n"
        "_dataclass.save()\n",
        tmp_path,
    )
    after = _dataclass._header()
    assert before.startswith(after) and path.read_bytes().startswith(after)
    old = marshal.loads(before[len(after) :])
    new = marshal.loads(path.read_bytes()[len(after) :])
    assert set(new) == set(old) | {"__main__"}
    assert all(new[name] == entry for name, entry in old.items())
    assert new["__main__"][0] == 3  # Fresh's three texts (__init__, __repr__, __eq__: not frozen)


def test_too_many_entries_keep_this_runs_buckets_only(tmp_path: Path) -> None:
    _run(MAKE, tmp_path)
    _run(
        "from convcalc import _dataclass\n"
        "_dataclass.MOST_ENTRIES = 0\n"
        "import convcalc.core.spec\n"
        "_dataclass._compiled.add(('convcalc.core.spec', ''))\n"  # as if it compiled a class
        "_dataclass.save()\n",
        tmp_path,
    )
    assert _run(BUCKETS, tmp_path).splitlines()[0] == "['convcalc.core.spec']"


def test_the_report_module_still_names_the_model_and_compare_types() -> None:
    from convcalc.core import report

    for name, module in report._ELSEWHERE.items():
        cls = getattr(report, name)
        assert cls.__module__ == f"convcalc.core.{module}" and cls.__name__ == name
    with pytest.raises(AttributeError):
        report.NoSuchType  # noqa: B018


#: the most objects a young collection walked while the app was imported, and whether a list
#: frozen before it is frozen after it (no generation holds it)
YOUNG = (
    "import gc\n"
    "walked = [0]\n"
    "def seen(phase, info):\n"
    "    if phase == 'start' and info['generation'] == 0:\n"
    "        walked[0] = max(walked[0], len(gc.get_objects(0)))\n"
    "gc.callbacks.append(seen)\n"
    "mine = []\n"
    "if FREEZE:\n"
    "    gc.freeze()\n"
    "import convcalc.cli.app\n"
    "gc.callbacks.clear()\n"
    "print(walked[0], any(o is mine for o in gc.get_objects()))\n"
)


@pytest.mark.parametrize("freeze", [False, True])
def test_the_apps_imports_join_the_oldest_generation(tmp_path: Path, freeze: bool) -> None:
    """cli/app.py: Typer's and click's objects are not left young (the first young collection
    after the import walked all ~16,000 of them); objects another program froze stay frozen."""
    walked, unfrozen = _run(f"FREEZE = {freeze}\n" + YOUNG, tmp_path).split()
    assert unfrozen == str(not freeze)  # frozen stays frozen; otherwise in a generation
    if not freeze:
        assert int(walked) < 3000
