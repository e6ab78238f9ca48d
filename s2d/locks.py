"""One process at a time per output: a run folder (`s2d distill`) or an eval record (`s2d eval`).

Two processes writing one output mix their files or lose one's result, and both exit 0. So the
output's lock (a ``filelock``, held for the whole run) is taken without waiting: a second process
fails at once, naming the holder from the small JSON file written beside the lock (pid, host,
start time, command). The kernel drops the lock of a killed process, so its leftover holder file
only earns a warning; a lock still held although its recorded process is gone (a child process
that inherited it, or a file system without ``flock``) is broken and taken over with a warning.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from s2d.errors import LockedError

SUFFIX = ".s2d-lock"  # lock files end so (.gitignore lists them); the holder file adds ".holder"
TAKEOVER = ".takeover"  # beside the lock: held by a process while it decides whether to break it
TAKEOVER_WAIT_S = 0.5  # how long a live holder has to write its holder file before its lock is judged


_held: dict[Path, int] = {}  # this process's locks: a nested hold (an export inside its run) is free


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


@contextmanager
def hold(lock: str | os.PathLike, what: str, warn: Callable[[str], None] = _warn) -> Iterator[None]:
    """Hold the lock file ``lock`` for ``what`` (e.g. "the run folder runs/x") until the block
    ends; raise :class:`LockedError` at once if another live process holds it."""
    lock = Path(lock).resolve()
    if lock in _held:
        _held[lock] += 1
        try:
            yield
        finally:
            _held[lock] -= 1
        return
    from filelock import FileLock, Timeout

    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = lock.with_name(lock.name + ".holder")
    flock = FileLock(str(lock))
    if not _acquire(flock):
        previous = _read(holder)
        if not _gone(previous):
            raise LockedError(_in_use(what, previous))
        # The holder file names a process that has ended. Breaking the lock is done by one process at a
        # time, and only after a moment's wait: the file may be a killed run's while a live process
        # has just taken the lock the kernel freed and is about to write its own (breaking it then
        # would let both run), and two processes breaking it at once would each unlink the lock file
        # the other has just made.
        try:
            takeover = FileLock(str(lock.with_name(lock.name + TAKEOVER)), timeout=TAKEOVER_WAIT_S * 20)
            takeover.acquire()
        except Timeout:
            raise LockedError(_in_use(what, _read(holder))) from None
        try:
            flock = FileLock(str(lock))  # the file at the path now: another process may have replaced it
            taken = _acquire(flock, TAKEOVER_WAIT_S)
            previous = _read(holder)
            if not taken:
                if not _gone(previous):
                    raise LockedError(_in_use(what, previous))
                warn(f"s2d: warning: taking over the lock on {what} from {_describe(previous)}, which has ended")
                lock.unlink(missing_ok=True)  # a new lock file: the dead process's descendants keep the old one
                holder.unlink(missing_ok=True)
                previous = None
                flock = FileLock(str(lock))
                if not _acquire(flock):  # another process took it first
                    raise LockedError(_in_use(what, _read(holder)))
        finally:
            takeover.release()
    else:
        previous = _read(holder)
    if previous is not None and previous.get("pid") != os.getpid():  # left by a killed process
        warn(f"s2d: warning: taking over the lock on {what} from {_describe(previous)}, which has ended")
    try:
        program = Path(sys.argv[0]).name
        program = "s2d" if program == "cli.py" else program  # `python -m s2d.cli`
        command = shlex.join([program, *sys.argv[1:]]).replace("\n", " ")[:300]
        holder.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command}) + "\n")
        _held[lock] = 1
        yield
    finally:
        _held.pop(lock, None)
        holder.unlink(missing_ok=True)  # left behind only by a killed process: the sign of a stale lock
        flock.release()


def _acquire(flock, timeout: float = 0) -> bool:
    from filelock import Timeout

    try:
        flock.acquire(timeout=timeout)
    except Timeout:
        return False
    return True


def _read(holder: Path) -> dict | None:
    try:
        info = json.loads(holder.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not written yet (the holder just took the lock), or damaged
        return None
    return info if isinstance(info, dict) else None


def _gone(info: dict | None) -> bool:
    """Whether the recorded holder has ended. Only a process of this host can be asked; a holder not
    yet written, or of another host (a shared file system), counts as alive."""
    if not info or info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _in_use(what: str, info: dict | None) -> str:
    return f"{what} is in use by {_describe(info)}; wait for it to end, or write elsewhere"


def _describe(info: dict | None) -> str:
    if not info:
        return "another process (it has not written its details yet)"
    return (f"process {info.get('pid')} on {info.get('host')} (started {info.get('started')}: "
            f"{info.get('command')})")
