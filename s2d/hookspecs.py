"""The hook specifications every s2d plugin implements a subset of.

A plugin is a module (or object) with functions decorated by ``@s2d.hookimpl`` whose names match
the specs below. Built-in methods, curators, tasks, trainers and backends are registered through
exactly these hooks, the same way as third-party plugins.

Each ``register_*`` hook receives a ``register`` callback and calls it once per thing it adds::

    register(obj, name=None, description=None)

``obj`` is a class or factory (nothing heavy is built until it is used); ``name`` defaults to
``obj.name`` and ``description`` to the first line of ``obj.__doc__``. Names must be unique within a
kind: a plugin that reuses a taken name is skipped as a whole and listed by ``s2d plugins`` with the
error.

Compatibility: hooks only ever gain keyword arguments, and pluggy lets an implementation accept
fewer arguments than the spec, so plugins written against an older s2d keep working.
"""

import pluggy

hookspec = pluggy.HookspecMarker("s2d")
hookimpl = pluggy.HookimplMarker("s2d")


def _register_hook(what: str, example: str, comment: str, param: str = "(``name`` plus docstring)"):
    """A ``register_*`` hookspec with its docstring (what it registers, its argument, an example):
    one template for the five specs, which `help()` and the docs test read in full."""

    def spec(fn):
        fn.__doc__ = (f"Register {what}\n\n"
                      f"    :param register: call ``register(Class)`` for each one {param}.\n\n"
                      f"    Example::\n\n"
                      f"        @s2d.hookimpl\n"
                      f"        def {fn.__name__}(register):\n"
                      f"            register({example})   # {comment}\n")
        return hookspec(fn)

    return spec


@_register_hook("methods: System 2 (or System 1) programs of prompting stages.",
                "StepBack", "name = \"step-back\"; docstring: \"Ask for the principle first.\"",
                "(it needs a ``name`` and a docstring; it is instantiated only when a run uses it)")
def register_methods(register): ...


@_register_hook("curators: unsupervised filters turning N System 2 samples into training targets.",
                "MajorityVote", "name = \"majority\"")
def register_curators(register): ...


@_register_hook("tasks: unlabeled train inputs, labeled evaluation splits and lm-eval task files.",
                "LastLetter", "name = \"last_letter\"")
def register_tasks(register): ...


@_register_hook("trainers: turn curated prompt-completion JSONL into an adapter or model folder.",
                "LoraTrainer", "name = \"lora\"")
def register_trainers(register): ...


@_register_hook("generation backends implementing :class:`s2d.backends.base.Backend`.",
                "MyServerBackend", "name = \"my-server\"",
                "(instantiated with ``(model_path, **options)`` when a run picks it; import heavy "
                "engines inside it, never at module import time)")
def register_backends(register): ...
