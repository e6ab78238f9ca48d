"""Reading and writing s2d's files: JSONL with errors that name file and line, atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from s2d.errors import S2DError


class InputError(S2DError, ValueError):
    """Bad input, with the file and line (or field) it came from."""


def read_jsonl(path: str | os.PathLike, parse: Callable[[Any], Any] | None = None) -> list:
    """Read every line of a JSONL file, failing on the first bad line with ``FILE:LINE: why``.
    ``parse`` turns each decoded record into an object and may raise ValueError/TypeError."""
    items = []
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                                 f"{exc.start + 1}); s2d reads and writes UTF-8 JSONL") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if parse is not None:
                try:
                    record = parse(record)
                except (ValueError, TypeError) as exc:
                    raise InputError(f"{path}:{lineno}: {exc}") from None
            items.append(record)
    return items


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Write to a temporary file beside ``path`` and rename it into place on success, so a kill
    never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes the file private; publish it like open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path``; on success it replaces ``path`` (made
    readable like any file we write), on failure it is dropped, so a reader never sees half of it."""
    import shutil

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        umask = current_umask()  # mkdtemp makes the folder private
        tmp.chmod(0o777 & ~umask)
        for f in tmp.rglob("*"):  # published like open()/mkdir() would have made them
            f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    n = 0
    with atomic_write(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def check_output(out: str | os.PathLike, *inputs: str | os.PathLike | None, folders=(), flag: str = "--out") -> Path:
    """Before any work: refuse an output that is one of the inputs or lies inside one of the input
    ``folders`` (the generation cache), and find an unwritable one, so a run never destroys its
    input or loses its work at the end."""
    target = Path(out).expanduser().resolve()
    for given, folder in [(i, False) for i in inputs] + [(f, True) for f in folders]:
        if given is None:
            continue
        source = Path(given).expanduser().resolve()
        if target == source or ((folder or source.is_dir()) and source in target.parents):
            raise InputError(f"{flag} {out}: that is also an input ({given}); write the output elsewhere")
    if target.is_dir():
        raise InputError(f"{flag} {out}: is a folder; give a file path")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".s2d-write-check-"):
            pass
    except OSError as exc:
        raise InputError(f"{flag} {out}: cannot write there ({exc.strerror or exc})") from None
    return target


def portable_path(path: str | os.PathLike | None, *roots: str | os.PathLike) -> str | None:
    """A path as results should record it: relative to the first of ``roots`` (a run folder, the
    repository) that holds it, ``$S2D_CACHE/...`` inside the s2d cache, else as given. Results then
    hold no machine's absolute paths where they need not."""
    if path is None:
        return None
    text = str(path)
    if not os.path.isabs(text):
        return text
    resolved = Path(text).resolve()
    from s2d.models import cache_dir

    for root in [*roots, repo_root()]:
        if root is None:
            continue
        try:
            return str(resolved.relative_to(Path(root).resolve()))
        except ValueError:
            continue
    try:
        return "$S2D_CACHE/" + str(resolved.relative_to(cache_dir().resolve()))
    except ValueError:
        return text


def repo_root() -> Path | None:
    """The checkout s2d runs from (where results/ and tasks/ live), None for an installed copy."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() and (here / "results").is_dir() else None
