"""One process at a time per run folder and per eval record (issue 27, findings 4 and 6), tried with
real processes: a second `s2d` aimed at an output in use fails at once naming the first, and the
lock of a killed process is taken over with a warning."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# A scripted engine whose first generate call announces itself (a file named by its pid) and then
# waits for the test's gate file: the test knows the run is inside its work and holds it there.
GATED = '''
import os
import time
from pathlib import Path

from s2d.backends.scripted import ScriptedBackend
from s2d.hookspecs import hookimpl


class Gated(ScriptedBackend):
    """Scripted, held at its first generate call until the test opens the gate."""

    name = "gated"

    def generate(self, requests, *, progress=True):
        gate = Path(os.environ["S2D_TEST_GATE"])
        (gate.parent / f"generating-{os.getpid()}").write_text("")
        for _ in range(600):  # a test that never opens the gate still ends
            if gate.exists():
                return super().generate(requests, progress=progress)
            time.sleep(0.1)
        raise RuntimeError("the test never opened the gate")


@hookimpl
def register_backends(register):
    register(Gated)
'''


class Runs:
    """`s2d` processes on the gated engine, each with its own stderr file."""

    def __init__(self, root: Path):
        self.root = root
        (root / "plugins").mkdir()
        (root / "plugins" / "gated.py").write_text(GATED)
        self.gate = root / "gate"
        self.model = root / "model"  # a model folder the scripted engine never loads (nor anything else)
        self.model.mkdir()
        (self.model / "config.json").write_text("{}")
        self.env = {**os.environ, "S2D_TEST_GATE": str(self.gate), "S2D_CACHE": str(root / "s2d")}
        self.procs = []

    def start(self, *args) -> subprocess.Popen:
        err = open(self.root / f"stderr-{len(self.procs)}", "w+")
        proc = subprocess.Popen([sys.executable, "-m", "s2d.cli", "--plugins-dir", str(self.root / "plugins"),
                                 *args, "--backend", "gated", "--model", str(self.model), "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=err, env=self.env, text=True)
        proc.err = err
        self.procs.append(proc)
        return proc

    def generating(self, proc, timeout=120) -> bool:
        """Wait until ``proc`` is inside its first generation (True) or has ended (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (self.root / f"generating-{proc.pid}").exists():
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.1)
        raise AssertionError(f"{proc.args} neither generated nor ended in {timeout} s: {self.stderr(proc)}")

    def stderr(self, proc) -> str:
        proc.err.seek(0)
        return proc.err.read()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.err.close()


@pytest.fixture
def runs(tiny_data, tmp_path):
    r = Runs(tmp_path)
    yield r
    r.stop()


def distill_args(run: Path):
    return ["distill", "--task", "last_letter", "--set", "task_options.size=4", "--n", "2", "--out-dir", str(run),
            "--no-cache"]


def test_a_second_distill_into_a_run_folder_in_use_fails_at_once_naming_the_first(runs, tmp_path):
    """Finding 6: two distills into one folder both ran and mixed their artefacts. Then the first
    is killed (kill -9, no cleanup): a third run takes the folder over, with a warning."""
    run = tmp_path / "run"
    first = runs.start(*distill_args(run))
    assert runs.generating(first), runs.stderr(first)
    second = runs.start(*distill_args(run))
    got_in = runs.generating(second)  # before the lock: it generated into the same folder
    assert not got_in, "a second distill ran in a run folder in use"
    assert second.wait(60) == 1
    err = runs.stderr(second)
    assert f"is in use by process {first.pid} " in err and "started 20" in err and "distill" in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback

    first.send_signal(signal.SIGKILL)  # leaves its holder file behind: a stale lock
    first.wait()
    third = runs.start(*distill_args(run))
    assert runs.generating(third), runs.stderr(third)
    err = runs.stderr(third)
    assert f"warning: taking over the lock on the run folder {run} from process {first.pid} " in err, err


def test_a_second_eval_of_a_record_in_progress_fails_at_once_naming_the_first(runs, tmp_path):
    """Finding 4: two `s2d eval --label X` with different methods both passed the record check,
    both exited 0, and one record was lost."""
    args = ["eval", "--task", "last_letter", "--set", "task_options.size=4", "--label", "X", "--out-dir",
            str(tmp_path / "eval"), "--no-cache"]
    first = runs.start(*args)
    assert runs.generating(first), runs.stderr(first)
    second = runs.start(*args, "--method", "cot")
    got_in = runs.generating(second)
    assert not got_in, "a second eval passed the check of a record another eval is writing"
    assert second.wait(60) == 1
    err = runs.stderr(second)
    assert "the eval record" in err and "X.json is in use by process" in err and f" {first.pid} " in err, err
    runs.gate.write_text("")  # the first finishes, and its record is the one written
    assert first.wait(300) == 0, runs.stderr(first)
    (record,) = (tmp_path / "eval").rglob("X.json")
    assert json.loads(record.read_text())["s2d"]["method"] == "system1"


HOLD = """
import json, os, socket, sys, time
from filelock import FileLock

lock = FileLock(sys.argv[1])
lock.acquire(timeout=0)
# The holder file names another process, now ended: as when a run's child inherited its lock.
with open(sys.argv[1] + ".holder", "w") as f:
    json.dump({"pid": int(sys.argv[2]), "host": socket.gethostname(), "started": "2020-01-01 00:00:00",
               "command": "s2d distill"}, f)
print("held", flush=True)
time.sleep(120)
"""


def test_a_lock_still_held_for_an_ended_process_is_broken_with_a_warning(tmp_path):
    """A lock whose recorded process has ended but whose file is still locked (a child process of a
    killed run inherited it) is taken over too; one held for a live process is refused."""
    from s2d.locks import LockedError, hold

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    lock = tmp_path / "run" / ".s2d-lock"
    lock.parent.mkdir()
    for pid, taken in ((os.getpid(), False), (ended.pid, True)):  # ourselves: alive
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(pid)], stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert holder.stdout.readline() == "held\n"
            warnings = []
            if taken:
                with hold(lock, "the run folder R", warn=warnings.append):
                    assert json.loads((lock.parent / ".s2d-lock.holder").read_text())["pid"] == os.getpid()
                assert warnings == [f"s2d: warning: taking over the lock on the run folder R from process "
                                    f"{pid} on {socket.gethostname()} (started 2020-01-01 00:00:00: s2d distill), "
                                    f"which has ended"]
            else:
                with pytest.raises(LockedError, match=f"the run folder R is in use by process {pid} "):
                    with hold(lock, "the run folder R", warn=warnings.append):
                        pass
        finally:
            holder.kill()
            holder.wait()
    assert not (lock.parent / ".s2d-lock.holder").exists()  # released: the holder file goes with it


def test_a_run_holds_its_folder_through_every_stage(tmp_path, monkeypatch):
    """The lock is taken before the claim and held until the run (and its export) is over: a
    process trying it in the middle of a stage is refused, one after the run gets it."""
    from s2d.config import RunConfig
    from s2d.distill import DistillRun, Round

    probe = ("import sys\nfrom s2d.locks import hold, LockedError\ntry:\n    with hold(sys.argv[1], 'x'):\n"
             "        print('free')\nexcept LockedError as exc:\n    print(exc)")
    seen = []

    def try_lock(self):
        seen.append(subprocess.run([sys.executable, "-c", probe, str(self.folder.lock())], capture_output=True,
                                   text=True).stdout)
        raise KeyboardInterrupt  # stop here: the rest of the run is not this test's

    monkeypatch.setattr(Round, "curate", try_lock)
    monkeypatch.setattr(Round, "generate", lambda self: None)
    cfg = RunConfig.build({"task": "last_letter", "task_options": {"size": 4}, "backend": "scripted"})
    run = DistillRun(cfg, tmp_path / "run", progress=False, cache=False)
    monkeypatch.setattr(DistillRun, "check", lambda self, **kw: None)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert f"is in use by process {os.getpid()} " in seen[0], seen
    free = subprocess.run([sys.executable, "-c", probe, str(run.folder.lock())], capture_output=True, text=True)
    assert free.stdout == "free\n"  # released when the run ended (here by an interrupt)


def test_a_run_exports_under_its_own_lock_and_leaves_lock_files_behind(tmp_path, monkeypatch):
    """The export inside a run takes the lock the run already holds (no self-deadlock, no refusal),
    and copies no lock file into results."""
    from s2d.config import RunConfig
    from s2d.distill import DistillRun, Round

    def evaluate(self):  # as if an `s2d eval` had once locked a record here
        self.folder.eval_dir(self.r).mkdir()
        (self.folder.eval_dir(self.r) / ".system1.json.s2d-lock").write_text("")

    for stage in ("generate", "curate", "train"):
        monkeypatch.setattr(Round, stage, lambda self: None)
    monkeypatch.setattr(Round, "eval", evaluate)
    monkeypatch.setattr(DistillRun, "check", lambda self, **kw: None)
    cfg = RunConfig.build({"task": "last_letter", "task_options": {"size": 4}, "backend": "scripted"})
    DistillRun(cfg, tmp_path / "run", progress=False, cache=False).run(export=tmp_path / "export")
    exported = sorted(p.name for p in (tmp_path / "export").rglob("*"))
    assert "summary.txt" in exported and "config.json" in exported
    assert not [name for name in exported if "s2d-lock" in name], exported
    assert (tmp_path / "run" / ".s2d-lock").exists() and not (tmp_path / "run" / ".s2d-lock.holder").exists()


def test_a_lock_just_taken_beside_a_killed_runs_holder_file_is_not_broken(tmp_path):
    """A killed run leaves its holder file behind while the kernel frees its lock. A rerun takes the
    lock and writes its own holder file a moment later; a second rerun looking in between read the
    dead process's file as the holder's, "took over" the lock (unlinking the file the first rerun
    holds) and both ran in the folder. It must wait for the holder it can see and be refused."""
    import threading

    from filelock import FileLock

    from s2d.locks import LockedError, hold

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    lock, holder = tmp_path / ".s2d-lock", tmp_path / ".s2d-lock.holder"

    def holder_of(pid):
        return json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2020-01-01 00:00:00",
                           "command": "s2d distill"})

    holder.write_text(holder_of(ended.pid))  # the killed run's
    live = FileLock(str(lock))
    live.acquire(timeout=0)  # the first rerun: it holds the lock, its holder file not yet written
    timer = threading.Timer(0.1, lambda: holder.write_text(holder_of(os.getpid())))
    timer.start()
    warnings = []
    try:
        with pytest.raises(LockedError, match=f"in use by process {os.getpid()} "):
            with hold(lock, "the run folder R", warn=warnings.append):
                pass
    finally:
        timer.join()
        live.release()
    assert not warnings and lock.exists()
