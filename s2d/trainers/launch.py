"""Training in a subprocess under `accelerate launch`: how `s2d distill` trains each round when
the run sets ``train_processes: N`` (N > 1) or ``accelerate_config: FILE`` (docs/scale.md).

The subprocess is ``s2d train`` with the run's trainer, trainer options, model and seed, on the
round's curated set and into the round's adapter folder: the same trainer code as the in-process
path, under DDP (no file: ``--multi_gpu``, gloo on a CPU machine) or whatever the file says (FSDP,
DeepSpeed ZeRO-3; docs/examples/accelerate/). It resumes from that folder's checkpoints as the
in-process trainer does. ``batch_size`` stays the batch of one step over all processes
(:func:`s2d.trainers.base.device_batch`), so N processes train what one would, up to rounding.
Its output goes to a log file in the round folder; a failure is one line naming that file.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from s2d.config import read_mapping
from s2d.errors import ConfigError, TrainerError
from s2d.plugins import get_plugins
from s2d.store import training_config
from s2d.trainers.base import share_batch

LOG_NAME = "train.log"


def parallel(settings: dict) -> bool:
    """Whether the run trains under `accelerate launch` (more than one process, or a config file)."""
    return settings["train_processes"] > 1 or settings["accelerate_config"] is not None


def read_accelerate_config(path: str) -> dict:
    """An accelerate config file (YAML or JSON, as `accelerate config` writes it): a mapping."""
    return read_mapping(path, f"accelerate_config {path}: cannot read it",
                        f"accelerate_config {path}: not an accelerate config (a mapping of its settings)")


def processes(settings: dict) -> int:
    """How many processes train: ``train_processes`` when above 1 (it overrides the file), else the
    accelerate config file's ``num_processes`` (1 without one)."""
    if settings["train_processes"] > 1 or settings["accelerate_config"] is None:
        return settings["train_processes"]
    n = read_accelerate_config(settings["accelerate_config"]).get("num_processes", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


def check(settings: dict, trainer=None) -> None:
    """Before the run starts (no model loaded): accelerate importable, the config file readable and
    for one machine, and a batch the processes can share. ``trainer``: the built trainer plugin."""
    if not parallel(settings):
        return
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        raise ConfigError("train_processes / accelerate_config: training under accelerate launch needs the "
                          "accelerate package (pip install accelerate)")
    path = settings["accelerate_config"]
    if path is not None:
        config = read_accelerate_config(path)
        machines = config.get("num_machines", 1)
        if machines not in (None, 1):
            raise ConfigError(f"accelerate_config {path}: num_machines {machines!r}: s2d distill launches training "
                              f"on this machine only; for several machines run each round's `s2d train` under "
                              f"accelerate launch on every machine yourself (docs/scale.md)")
    batch = getattr(trainer, "batch_size", None)
    if isinstance(batch, int) and not isinstance(batch, bool):
        share_batch(batch, processes(settings), error=ConfigError, why="train_processes / accelerate_config")


def command(settings: dict, data: str | os.PathLike, out_dir: str | os.PathLike, *,
            progress: bool = False) -> list[str]:
    """The `accelerate launch ... -m s2d.cli train ...` command line for one round."""
    path = settings["accelerate_config"]
    n = processes(settings)
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if path is not None:
        cmd += ["--config_file", str(path)]
        if settings["train_processes"] > 1:
            cmd += ["--num_processes", str(n)]
    else:  # DDP on this machine's GPUs (torchrun; over gloo on a CPU machine), nothing from a default config
        cmd += ["--multi_gpu", "--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no"]
    cmd += ["-m", "s2d.cli", "train", "--data", str(data), "--out-dir", str(out_dir),
            "--trainer", settings["trainer"], "--model", settings["model"], "--seed", str(settings["seed"])]
    for key, value in settings["trainer_options"].items():  # JSON: the value's type travels with it
        cmd += ["--set", f"trainer_options.{key}={json.dumps(value)}"]
    cmd.append("--progress" if progress else "--no-progress")
    return cmd


def environment(settings: dict) -> dict:
    """The subprocess's environment: this one's, s2d importable, and a trainer that a plugins
    folder (--plugins-dir) brought loaded there too."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)  # the folder holding the s2d package
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    try:
        plugins = get_plugins()
        info = plugins.info.get(plugins.get("trainers", settings["trainer"]).plugin)
        if info is not None and info.source == "file" and info.dist:  # a file of a plugins folder
            env["S2D_PLUGINS_DIR"] = str(Path(info.dist).resolve().parent)
    except LookupError:
        pass
    return env


def launch(settings: dict, data: str | os.PathLike, out_dir: str | os.PathLike, log: str | os.PathLike, *,
           progress: bool = False, echo: Callable[[str], None] = print) -> None:
    """Train one round in a subprocess under `accelerate launch`; its output is appended to ``log``.
    A failure raises :class:`TrainerError`: one line with the exit code, the subprocess's own
    error line where it printed one, and the log file."""
    cmd = command(settings, data, out_dir, progress=progress)
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    echo(f"training with {processes(settings)} process(es) under accelerate launch; log: {log}")
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n")
        f.flush()
        result = _spawn(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        env=environment(settings), preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    if result.returncode != 0:
        reason = last_error(log)
        raise TrainerError(f"training under accelerate launch failed (exit code {result.returncode})"
                           f"{': ' + reason if reason else ''}; see {log}")
    asked = read_accelerate_config(settings["accelerate_config"]).get("distributed_type") \
        if settings["accelerate_config"] else None
    record = None
    with contextlib.suppress(OSError, ValueError):  # only a warning hangs on it
        record = training_config(out_dir)
    if asked in ("FSDP", "DEEPSPEED") and record is not None and not record.get("sharded"):
        # accelerate shards only on GPUs: on a CPU machine an FSDP config trains as DDP (docs/scale.md)
        echo(f"warning: accelerate_config asks for {asked}, but training ran as "
             f"{record.get('distributed_type') or 'unsharded'} (no GPUs?): the same result, every process "
             f"holding the whole model")


def _spawn(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run the launcher and wait for it (tests put a fake process here)."""
    return subprocess.run(cmd, **kwargs)


def _die_with_parent() -> None:
    """In the launcher's process, before it starts: a SIGTERM when s2d dies, even by SIGKILL, which
    torchrun's agent passes on to its workers (else they train on, orphaned; the training folder's
    lock then keeps a rerun from training beside them)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def last_error(log: Path) -> str | None:
    """The last error line a failed subprocess wrote: s2d's own one-line ``Error: ...`` (click),
    else the last Python exception line."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    start = max((i for i, line in enumerate(lines) if line.startswith("=== ")), default=0)
    lines = [line.strip() for line in lines[start:]]
    for prefix in ("Error: ", "[rank0]: Error: "):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1][len(prefix):][:300]
    import re

    exc = [line for line in lines if re.match(r"^(\[rank\d+\]: )?[A-Za-z_][\w.]*(Error|Exception): ", line)]
    return re.sub(r"^\[rank\d+\]: ", "", exc[-1])[:300] if exc else None
