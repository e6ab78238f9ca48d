"""Plugin loading: built-ins, installed distributions (entry-point group ``s2d``) and loose files.

One pluggy manager holds everything. Loading is defensive: a plugin that fails to import (an
exception, sys.exit or os._exit), raises in a hook, or registers a name another plugin already owns
is skipped as a whole and kept in :data:`Plugins.errors`, so one broken plugin never takes down the
CLI. ``S2D_STRICT_PLUGINS=1`` turns those errors into exceptions.

Environment:
  S2D_LOAD_PLUGINS    comma-separated entry-point or distribution names to load ('' loads none);
                      unset loads every installed plugin
  S2D_STRICT_PLUGINS  1: a broken plugin is fatal
  S2D_TRACE_PLUGINS   1: print every hook call, its arguments and results to stderr
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pluggy

from s2d import __version__, hookspecs
from s2d.errors import ConfigError, PluginError, PluginExitError, S2DError, UnknownNameError
from s2d.options import validate_options

ENTRY_POINT_GROUP = "s2d"
KINDS = ("methods", "curators", "tasks", "trainers", "backends")

# Built-ins, registered through the same manager and hooks as third-party plugins.
DEFAULT_PLUGINS = (
    "s2d.backends.hf",
    "s2d.backends.vllm",
    "s2d.backends.scripted",
    "s2d.tasks.last_letter",
    "s2d.tasks.coin_flip",
    "s2d.tasks.triviaqa_bias",
    "s2d.tasks.mt_bench_judge",
    "s2d.tasks.gsm8k",
    "s2d.tasks.addition",
    "s2d.methods.system1",
    "s2d.methods.cot",
    "s2d.methods.fewshot",
    "s2d.methods.rar",
    "s2d.methods.s2a",
    "s2d.methods.bsm",
    "s2d.methods.route",
    "s2d.curators.majority",
    "s2d.curators.perturb",
    "s2d.curators.usc",
    "s2d.curators.none",
    "s2d.trainers.lora",
    "s2d.trainers.full",
    "s2d.trainers.stepwise",
)


@dataclass
class Entry:
    """One registered thing: a method, curator, task, trainer or backend."""

    kind: str
    name: str
    obj: Any
    description: str
    plugin: str

    def row(self) -> dict:
        return {"name": self.name, "plugin": self.plugin, "description": self.description}


@dataclass
class PluginInfo:
    name: str
    version: str | None
    source: str  # "builtin", "entrypoint" or "file"
    dist: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "distribution": self.dist,
            "hooks": self.hooks,
            "error": self.error,
        }


@contextmanager
def _os_exit_raises() -> Iterator[None]:
    """Within this block ``os._exit`` raises :class:`PluginExitError` instead of ending the process.
    The real one ends it at once (no except, finally or atexit runs), so a plugin calling it at
    import would end the CLI without a word; this way it is skipped and reported like any broken
    plugin. Only this process's loading thread is affected: a child the plugin forks, or another
    thread, still exits, and so does a reference kept for later (the guard is off by then). An exit
    below Python (``posix._exit``, a C library's ``exit()``, a signal) cannot be caught in-process."""
    real, pid, thread = os._exit, os.getpid(), threading.get_ident()

    def guarded(status: int) -> None:
        if os._exit is guarded and os.getpid() == pid and threading.get_ident() == thread:
            raise PluginExitError(f"called os._exit({status}) while being loaded")
        real(status)

    os._exit = guarded
    try:
        yield
    finally:
        os._exit = real


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _describe(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


class Plugins:
    """The loaded plugin set: a pluggy manager plus per-kind registries and load errors."""

    def __init__(self, *, load_entrypoints: bool = True, plugins_dir: str | os.PathLike | None = None,
                 strict: bool | None = None):
        self.strict = _truthy(os.environ.get("S2D_STRICT_PLUGINS")) if strict is None else strict
        self.pm = pluggy.PluginManager("s2d")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.registry: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        # What others build from this set and share while it lasts (lm-eval's glue keeps its tasks
        # here): a new set, after reset(), starts empty, so nothing built from an old one survives.
        self.built: dict = {}
        if _truthy(os.environ.get("S2D_TRACE_PLUGINS")):
            self._enable_tracing()
        for modname in DEFAULT_PLUGINS:
            self._register_module(modname, lambda m=modname: importlib.import_module(m), "builtin",
                                  version=__version__)
        with _os_exit_raises():  # third-party code runs from here: its imports and register hooks
            if load_entrypoints:
                self._load_entrypoints()
            if plugins_dir:
                self._load_dir(Path(plugins_dir))
            self._collect()

    # -- loading ---------------------------------------------------------------------------------
    def _fail(self, info: PluginInfo, message: str) -> None:
        info.error = message
        self.info[info.name] = info
        if self.strict:
            raise PluginError(f"plugin {info.name!r}: {message}")
        print(f"s2d: skipping broken plugin {info.name!r}: {message.splitlines()[0]}", file=sys.stderr)

    def _register_module(self, name: str, load: Callable[[], Any], source: str, *,
                         version: str | None = None, dist: str | None = None) -> None:
        info = PluginInfo(name=name, version=version, source=source, dist=dist)
        if name in self.info:
            self._fail(PluginInfo(name=f"{name} ({dist or source})", version=version, source=source,
                                  dist=dist), f"plugin name {name!r} is already taken by "
                                  f"{self.info[name].dist or self.info[name].source}")
            return
        try:
            module = load()
            self.pm.register(module, name=name)
            # A misspelled hook (register_method) would otherwise be silently ignored.
            self.pm.check_pending()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolate any failure of third-party code, even sys.exit
            if self.pm.is_registered(locals().get("module")):
                self.pm.unregister(module)
            self._fail(info, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            return
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])
        self.info[name] = info

    def _load_entrypoints(self) -> None:
        wanted = os.environ.get("S2D_LOAD_PLUGINS")
        allowed = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else None
            if allowed is not None and ep.name not in allowed and dist not in allowed:
                continue
            version = ep.dist.version if ep.dist else None
            self._register_module(ep.name, ep.load, "entrypoint", version=version, dist=dist)

    def _load_dir(self, directory: Path) -> None:
        if not directory.is_dir():
            raise click_error(f"--plugins-dir {directory}: not a directory")
        for path in sorted(directory.glob("*.py")):
            def load(path=path):
                spec = importlib.util.spec_from_file_location(f"s2d_plugins_dir.{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module

            self._register_module(path.stem, load, "file", dist=str(path))

    # -- registries ------------------------------------------------------------------------------
    def _collect(self) -> None:
        """Call every plugin's register hooks one plugin at a time, so errors are attributable."""
        for plugin_name, info in list(self.info.items()):
            if info.error:
                continue
            plugin = self.pm.get_plugin(plugin_name)
            others = [p for p in self.pm.get_plugins() if p is not plugin]
            staged: list[Entry] = []
            try:
                for kind in KINDS:
                    hook = self.pm.subset_hook_caller(f"register_{kind}", remove_plugins=others)

                    def register(obj, name=None, description=None, _kind=kind):
                        name = name or getattr(obj, "name", None)
                        if not name or not isinstance(name, str):
                            raise ValueError(f"{_kind[:-1]} {obj!r} has no name")
                        staged.append(Entry(_kind, name, obj, description or _describe(obj), plugin_name))

                    hook(register=register)
                seen: set[tuple[str, str]] = set()
                for entry in staged:
                    owner = self.registry[entry.kind].get(entry.name)
                    if owner is not None or (entry.kind, entry.name) in seen:
                        by = owner.plugin if owner else plugin_name
                        raise ValueError(f"duplicate {entry.kind[:-1]} name {entry.name!r} "
                                         f"(already registered by {by})")
                    seen.add((entry.kind, entry.name))
            except Exception as exc:  # noqa: BLE001
                self.pm.unregister(plugin)
                self._fail(info, f"{type(exc).__name__}: {exc}")
                continue
            for entry in staged:
                self.registry[entry.kind][entry.name] = entry

    def entries(self, kind: str) -> list[Entry]:
        if kind not in self.registry:
            raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        return sorted(self.registry[kind].values(), key=lambda e: e.name)

    def get(self, kind: str, name: str) -> Entry:
        try:
            return self.registry[kind][name]
        except KeyError:
            known = ", ".join(sorted(self.registry[kind])) or "none"
            raise UnknownNameError(f"unknown {kind[:-1]} {name!r}; known: {known} "
                                   f"(see `s2d list {kind}` and `s2d plugins`)") from None

    def plugin_rows(self) -> list[dict]:
        return [i.as_dict() for i in sorted(self.info.values(), key=lambda i: (i.source != "builtin", i.name))]

    # -- tracing ---------------------------------------------------------------------------------
    def _enable_tracing(self) -> None:
        from pprint import pformat

        def before(hook_name, hook_impls, kwargs):
            impls = ", ".join(i.plugin_name for i in hook_impls)
            print(f"s2d trace: {hook_name}({pformat(kwargs)}) -> [{impls}]", file=sys.stderr)

        def after(outcome, hook_name, hook_impls, kwargs):
            print(f"s2d trace: {hook_name} returned {pformat(outcome.get_result())}", file=sys.stderr)

        self.pm.add_hookcall_monitoring(before, after)


def click_error(message: str) -> Exception:
    import click

    return click.UsageError(message)


_current: Plugins | None = None


def get_plugins(**kwargs) -> Plugins:
    """The process-wide plugin set, loaded on first use (the CLI passes --plugins-dir here)."""
    global _current
    if _current is None and not kwargs and os.environ.get("S2D_PLUGINS_DIR"):
        kwargs = {"plugins_dir": os.environ["S2D_PLUGINS_DIR"]}  # also inside stock lm_eval runs
    if _current is None or kwargs:
        _current = Plugins(**kwargs)
    return _current


def build(kind: str, name: str, options: dict | None = None, *args: Any) -> Any:
    """The plugin ``name`` of ``kind`` made with ``options``: the one place a plugin is made from
    settings. ``args``: what its constructor takes first (a method's or curator's task, a backend's
    model path). Options are checked once, against the plugin's options model (s2d.options): a
    method's, curator's or trainer's by its base class's constructor, a task's here (its
    constructor's named parameters); a backend takes its engine's keyword arguments unchecked
    (the run setting ``engine_options`` is typed in s2d.config). Every error is one
    :class:`ConfigError` (or its subclass) naming the plugin: the option errors already are, and a
    TypeError or ValueError the constructor raises becomes one here."""
    entry = get_plugins().get(kind, name)
    options = dict(options or {})
    prefix = f"{kind[:-1]} {name!r}"
    if kind == "tasks":
        checked = validate_options(entry.obj, "task", name, options, ConfigError)
        options = {k: checked[k] for k in options}
    # A backend's constructor loads the model: only a refused keyword is a setting's fault there.
    caught = (TypeError,) if kind == "backends" else (TypeError, ValueError)
    try:
        return entry.obj(*args, **options)
    except S2DError:
        raise
    except caught as exc:  # a plugin's own check, or a constructor that refused a key
        text = str(exc)
        raise ConfigError(text if text.startswith(prefix) else f"{prefix}: {text}") from None


def reset() -> None:
    """Forget the loaded plugin set (tests), and with it what was built from it (:attr:`Plugins.built`)."""
    global _current
    _current = None
