"""Reading and writing s2d's files: JSONL with errors that name file and line, atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from s2d.errors import InputError


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


def cache_dir() -> Path:
    """``S2D_CACHE``, else ``$XDG_CACHE_HOME/s2d``, else ``~/.cache/s2d``."""
    root = os.environ.get("S2D_CACHE")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "s2d"


def default_cache_dir() -> Path:
    """The generation cache's folder: ``S2D_GENERATION_CACHE``, else ``$S2D_CACHE/generations``
    (shared by every run)."""
    explicit = os.environ.get("S2D_GENERATION_CACHE")
    return Path(explicit).expanduser() if explicit else cache_dir() / "generations"


def protected_folders() -> list[tuple[str, Path]]:
    """(what, folder) that no command's output may touch: the task data and the s2d cache (converted
    models, weight fingerprints, the shared generation cache), all read by every run."""
    folders = [("the s2d cache", cache_dir()), ("the generation cache", default_cache_dir())]
    if os.environ.get("S2D_DATA_DIR"):
        folders.append(("the task data (S2D_DATA_DIR)", Path(os.environ["S2D_DATA_DIR"])))
    return folders


def local_path(ref: str | os.PathLike | None) -> str | os.PathLike | None:
    """A model or adapter reference as something the output check compares: an existing path, or
    None (an alias lives in the s2d cache, a hub id on no local path)."""
    return ref if ref is not None and Path(ref).expanduser().exists() else None


def check_output(out: str | os.PathLike, *inputs: str | os.PathLike | None, folders=(), flag: str = "--out",
                 folder: bool = False, may_hold=()) -> Path:
    """Before any work: refuse an output that is, lies inside, or (a ``folder`` output) contains
    something the command reads -- the ``inputs`` (files, or folders such as the model's), the input
    ``folders`` (which need not exist yet, like the generation cache; a path or (what, path)), the
    task data and the s2d cache -- and find an unwritable one, so a run never destroys its input or
    loses its work at the end. ``may_hold``: inputs a ``folder`` output may contain because it is never
    replaced wholesale (a run folder holding its own generation cache)."""
    target = Path(out).expanduser().resolve()
    held = {Path(p).expanduser().resolve() for p in may_hold if p is not None}
    reads = [("", i, False) for i in inputs]
    reads += [(*(f if isinstance(f, tuple) else ("", f)), True) for f in folders]  # (what, path)
    reads += [(what, f, True) for what, f in protected_folders()]
    for what, given, is_folder in reads:
        if given is None:
            continue
        source = Path(given).expanduser().resolve()
        relation = path_relation(target, source, inside=is_folder or source.is_dir(),
                                 contains=folder and source not in held)
        if relation:
            raise InputError(f"{flag} {out} {relation} {what + ' ' if what else ''}{given}, also an input; write "
                             f"the output elsewhere")
    if not folder and target.is_dir():
        raise InputError(f"{flag} {out}: is a folder; give a file path")
    check_writable(target if folder else target.parent, f"{flag} {out}")
    return target


def path_relation(out: Path, source: Path, *, inside: bool = True, contains: bool = True) -> str | None:
    """How an output path stands to an input path (both resolved): ``"is"`` the same path, ``"is
    inside"`` it (with ``inside``: the input is a folder), ``"contains"`` it (with ``contains``: the
    output is a folder that would be replaced), else None. The one test of :func:`check_output`
    and of the trainers' output folder against the model (:func:`s2d.trainers.base.check_out_dir`)."""
    if out == source:
        return "is"
    if inside and source in out.parents:
        return "is inside"
    if contains and out in source.parents:
        return "contains"
    return None


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Before any work: the folder ``path`` can be made and written in (its first existing ancestor
    is a folder we may write in), so an unwritable output is one line now, not a traceback after the
    whole run. Nothing is created."""
    existing = Path(path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what}: cannot write there ({existing} is a file, not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what}: cannot write there ({existing} is not writable)")


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
