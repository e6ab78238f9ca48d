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


@hookspec
def register_methods(register):
    """Register System 2 (or System 1) methods: programs of prompting stages.

    :param register: call ``register(MethodClass)`` for each method. The class needs a ``name``
        and a docstring; it is instantiated only when a run uses it.

    Example::

        @s2d.hookimpl
        def register_methods(register):
            register(StepBack)   # class StepBack: name = "step-back"; '''Ask for the principle first.'''
    """


@hookspec
def register_curators(register):
    """Register curators: unsupervised filters turning N System 2 samples into training targets.

    :param register: call ``register(CuratorClass)`` for each curator (``name`` plus docstring).

    Example::

        @s2d.hookimpl
        def register_curators(register):
            register(MajorityVote)   # name = "majority"
    """


@hookspec
def register_tasks(register):
    """Register tasks: unlabeled train inputs, labeled evaluation splits and lm-eval task files.

    :param register: call ``register(TaskClass)`` for each task (``name`` plus docstring).

    Example::

        @s2d.hookimpl
        def register_tasks(register):
            register(LastLetter)     # name = "last_letter"
    """


@hookspec
def register_trainers(register):
    """Register trainers: turn curated prompt-completion JSONL into an adapter or model folder.

    :param register: call ``register(TrainerClass)`` for each trainer (``name`` plus docstring).

    Example::

        @s2d.hookimpl
        def register_trainers(register):
            register(LoraTrainer)    # name = "lora"
    """


@hookspec
def register_backends(register):
    """Register generation backends implementing :class:`s2d.backends.base.Backend`.

    :param register: call ``register(BackendClass)`` for each backend. The class is instantiated
        with ``(model_path, **options)`` when a run picks it; import heavy engines inside it, never
        at module import time.

    Example::

        @s2d.hookimpl
        def register_backends(register):
            register(MyServerBackend)   # name = "my-server"
    """
