"""``dataclass``, exactly the standard library's, with its generated code kept between runs.

Start-up matters (convcalc runs in shell loops), and most of what importing convcalc cost was
the standard ``@dataclass`` compiling the source of every class's ``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__`` and ``__delattr__``: six ``exec`` calls of generated
text per class, about 0.6 ms a class here, ~30 ms for the classes `convcalc conv
--formula-only` loads (docs/benchmarks.md). Python caches a module's compiled code in
``__pycache__``; nothing caches this code, so every process compiled it again.

This ``dataclass`` calls :func:`dataclasses.dataclass` itself, with one difference: while it runs,
the ``exec`` that ``dataclasses`` calls looks the generated text up in a table of code objects
compiled from that same text (``compile(text, "<string>", "exec")``, what ``exec(text)`` does),
and compiles only what is not there. The classes are the standard library's in every respect
(``fields``, ``replace``, ``asdict``, pickling, mypy's checks); only the compiling is skipped.

The table is a marshal file in convcalc's cache directory (``$XDG_CACHE_HOME/convcalc``, as
the roofline's peaks), named by the interpreter (``dataclasses-cpython-311.marshal``) and
headed by its bytecode magic number: another Python ignores it. It is kept in buckets, one per
module defining the classes (``cls.__module__``; a library's classes imported under
:func:`kept` go to the bucket it names): ``{bucket: (entries, marshal bytes of {text: code},
their CRC-32)}``; a bucket whose checksum does not match is not read (marshal trusts its bytes:
a damaged code object could crash the interpreter).
The file is read once, at the first class, and a bucket's code is unmarshalled at its first
class, so a command pays for its own modules' classes only, not for every class of every
command this user has run. A missing, unreadable or foreign file is an empty table. Only the
command-line entry point writes it (:func:`save`, at exit, when a class was compiled: the
first run, or after an upgrade), never the library, so importing convcalc writes nothing.
Deleting the file is always safe. The file is written for this user alone (0600) and read
only when this user owns it and nobody else may write it, so a shared cache directory cannot
hand convcalc code to run.
``CONVCALC_NO_CODE_CACHE=1`` turns the table off (nothing read, nothing written).
(PYTHONDONTWRITEBYTECODE is about ``__pycache__`` and is not consulted: like the peaks, this is
convcalc's own cache.)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import CodeType
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar

_T = TypeVar("_T")

if TYPE_CHECKING:
    from dataclasses import dataclass as dataclass
else:
    import dataclasses

    def dataclass(cls: Any = None, /, **options: Any) -> Any:
        """:func:`dataclasses.dataclass`, its generated methods' code taken from the table."""

        def wrap(cls: Any) -> Any:
            with kept(cls.__module__):
                return dataclasses.dataclass(**options)(cls)

        return wrap if cls is None else wrap(cls)


@contextlib.contextmanager
def kept(bucket: str = "") -> Iterator[None]:
    """While it lasts, every standard ``@dataclass`` takes its generated code from the table's
    ``bucket``: convcalc's own (:func:`dataclass`, in its module's bucket), and a library's
    imported meanwhile (Rich's Column, Row, ConsoleOptions...: output/render.py imports Rich
    under it, in its own bucket), which are the standard library's classes just the same."""
    import dataclasses

    global _bucket
    previous = dataclasses.__dict__.get("exec")
    outer = _bucket
    _bucket = bucket
    dataclasses.exec = _exec  # type: ignore[attr-defined]
    try:
        yield
    finally:
        _bucket = outer
        if previous is None:
            dataclasses.__dict__.pop("exec", None)
        else:
            dataclasses.exec = previous  # type: ignore[attr-defined]


#: the file's format; with the interpreter's magic number, the file's first bytes
FORMAT = b"convcalc dataclass code 3\n"
#: more entries than this in all (classes edited during development): rewritten with this run's
#: buckets and entries only (convcalc's own classes generate about 600 texts)
MOST_ENTRIES = 1000

#: the file's buckets as read: bucket -> (its entries, marshal bytes of its table, their CRC-32);
#: None until read
_file: dict[str, Any] | None = None
_tables: dict[str, dict[str, Any]] = {}  # bucket -> generated text -> code, once unmarshalled
_compiled: set[tuple[str, str]] = set()  # (bucket, text) compiled in this process, not in the file
_used: set[tuple[str, str]] = set()  # (bucket, text) this process asked for
_bucket = ""  # the bucket of the class being made (kept())


def cache_file() -> str:
    """Where the table is kept: convcalc's cache directory (measure/calibrate.py's
    default_cache_dir: it is not imported here, the measure room imports torch's kin)."""
    import os

    if sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches", "convcalc")
    elif sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or os.path.join(
            os.path.expanduser("~"), "AppData", "Local"
        )
        base = os.path.join(local, "convcalc", "Cache")
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        home = os.path.expanduser("~")
        root = xdg if xdg and os.path.isabs(xdg) else os.path.join(home, ".cache")
        base = os.path.join(root, "convcalc")
    return os.path.join(base, f"dataclasses-{sys.implementation.cache_tag}.marshal")


def _header() -> bytes:
    """The format, the interpreter's bytecode magic number and convcalc's version: another
    Python's table, or an older convcalc's (its classes' texts, stale after an upgrade), is
    not read, so the table never fills with dead entries."""
    from importlib.util import MAGIC_NUMBER

    from convcalc._version import __version__

    return FORMAT + MAGIC_NUMBER + __version__.encode() + b"\n"


#: set (to anything but empty) to neither read nor write the table
OFF_VARIABLE = "CONVCALC_NO_CODE_CACHE"


def enabled() -> bool:
    import os

    return not os.environ.get(OFF_VARIABLE)


def _trusted(handle: Any) -> bool:
    """Code is loaded only from a file this user owns that nobody else may write (as ssh
    treats its keys): a cache directory shared with others (a CI cache, a group-writable home)
    cannot hand convcalc code to run. Elsewhere than POSIX, the file is the user's profile's."""
    import os
    import stat

    if not hasattr(os, "getuid"):
        return True
    info = os.fstat(handle.fileno())
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read() -> dict[str, Any]:
    """The file's buckets, each still marshalled (:func:`_table_of` unmarshals one)."""
    import marshal

    if not enabled():
        return {}
    try:
        with open(cache_file(), "rb") as handle:
            if not _trusted(handle):
                return {}
            data = handle.read()
        header = _header()
        if not data.startswith(header):
            return {}
        buckets = marshal.loads(memoryview(data)[len(header) :])
    except Exception:  # missing, unreadable, truncated: compile as dataclasses would
        return {}
    return buckets if isinstance(buckets, dict) else {}


def _table_of(bucket: str) -> dict[str, Any]:
    """A bucket's table, unmarshalled at its first class (an empty one where there is none)."""
    import marshal

    global _file
    if _file is None:
        _file = _read()
    loaded: Any = None
    entry = _file.get(bucket)
    # marshal trusts its bytes: a damaged code object can crash the interpreter, so a bucket
    # whose checksum differs from the one written with it is never unmarshalled
    if _whole(entry) and _checksum(entry[1]) == entry[2]:
        try:
            loaded = marshal.loads(entry[1])
        except Exception:  # a damaged bucket: compile as dataclasses would
            loaded = None
    table: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    _tables[bucket] = table
    return table


def _whole(entry: Any) -> TypeGuard[tuple[int, bytes, int]]:
    """Whether a bucket as read is one (its entries, its marshal bytes, their checksum)."""
    return (
        type(entry) is tuple
        and len(entry) == 3
        and type(entry[0]) is int
        and type(entry[1]) is bytes
        and type(entry[2]) is int
    )


def _checksum(data: bytes) -> int:
    """CRC-32 of a bucket's bytes: a flipped bit (a failing disk, a stray write) is caught
    before marshal reads them. Not a defence against a hostile file: :func:`_trusted` is."""
    import zlib

    return zlib.crc32(data)


def _bucket_entry(table: dict[str, Any]) -> tuple[int, bytes, int]:
    import marshal

    data = marshal.dumps(table)
    return (len(table), data, _checksum(data))


def _exec(source: Any, globals: Any = None, locals: Any = None) -> None:
    """``exec`` as ``dataclasses`` calls it, the text's code object taken from the table."""
    if isinstance(source, str):
        bucket = _bucket
        table = _tables.get(bucket)
        if table is None:
            table = _table_of(bucket)
        code = table.get(source)
        if type(code) is not CodeType:
            code = compile(source, "<string>", "exec", dont_inherit=True)
            table[source] = code
            _compiled.add((bucket, source))
        _used.add((bucket, source))
        source = code
    if globals is None:  # exec's own default: the caller's namespace
        frame = sys._getframe(1)
        globals = frame.f_globals
        if locals is None:
            locals = frame.f_locals
    exec(source, globals, locals)


def save() -> None:
    """Write the table if this process compiled anything new (the CLI calls this at exit).
    Written whole to a temporary file and renamed: processes running at once each leave a
    complete file. The buckets this process did not open are written back as they were read.
    Any failure is ignored: the table only saves time."""
    if not _compiled or not enabled():
        return
    import contextlib
    import marshal
    import os

    read = _file or {}
    buckets = {name: entry for name, entry in read.items() if name not in _tables and _whole(entry)}
    total = sum(entry[0] for entry in buckets.values()) + sum(map(len, _tables.values()))
    if total > MOST_ENTRIES:  # this run's buckets and entries only
        used: dict[str, dict[str, Any]] = {}
        for bucket, text in _used:
            used.setdefault(bucket, {})[text] = _tables[bucket][text]
        buckets = {name: _bucket_entry(table) for name, table in used.items()}
    else:
        for name, table in _tables.items():
            unchanged = read.get(name)
            if _whole(unchanged) and not any(bucket == name for bucket, _ in _compiled):
                buckets[name] = unchanged  # nothing new in it: its bytes as read
            elif table:
                buckets[name] = _bucket_entry(table)
    path = cache_file()
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # this user's alone (0600): _read trusts nothing else
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(_header() + marshal.dumps(buckets))
        os.replace(temporary, path)
        _compiled.clear()
    except Exception:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


#: per dataclass: the names of its fields when :func:`replace` may copy an instance directly
#: (every field set by the generated ``__init__``, no ``__post_init__``, no ``__slots__``);
#: None when it must call :func:`dataclasses.replace`
_COPYABLE: dict[type, frozenset[str] | None] = {}


def _copyable(cls: type) -> frozenset[str] | None:
    import dataclasses

    if hasattr(cls, "__post_init__") or hasattr(cls, "__slots__"):
        return None
    params = getattr(cls, "__dataclass_params__", None)
    init = getattr(getattr(cls, "__init__", None), "__code__", None)
    # the generated __init__ (compiled from text: its file is "<string>"), not the class's own
    if params is None or not params.init or init is None or init.co_filename != "<string>":
        return None
    fields = dataclasses.fields(cls)
    # every __init__ argument a field (an InitVar is an argument and no field) and back
    if (
        any(not f.init for f in fields)
        or init.co_argcount + init.co_kwonlyargcount != len(fields) + 1
    ):
        return None
    return frozenset(f.name for f in fields)


def replace(obj: _T, /, **changes: Any) -> _T:
    """:func:`dataclasses.replace`, the same new object, made without the generated
    ``__init__``: the instance's fields copied and ``changes`` set over them. Only where that
    is exactly what ``replace`` does (a class whose ``__init__`` sets each field from its
    argument and nothing else, an instance holding only its fields, ``changes`` naming fields);
    anything else goes to :func:`dataclasses.replace`. ``replace`` walks ``fields()`` and calls
    ``__init__`` (a frozen class sets every field through ``object.__setattr__``): ~10 µs a
    report's layer, three a batch spec (docs/benchmarks.md)."""
    cls = type(obj)
    try:
        names = _COPYABLE[cls]
    except KeyError:
        names = _COPYABLE[cls] = _copyable(cls)
    state = getattr(obj, "__dict__", None)
    if names is None or state is None or state.keys() != names or not names.issuperset(changes):
        import dataclasses

        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    new = object.__new__(cls)
    values = new.__dict__
    values.update(state)
    values.update(changes)
    return new
