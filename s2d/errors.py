"""Every error class of s2d, under the one base class of its expected errors.

An :class:`S2DError` is the user's to fix (a bad setting, a missing file, a record in the way) and
says what to do; the command line prints its message as one line. Anything else is a bug and keeps
its traceback. Each subclass also derives from the builtin it refines (``ValueError``,
``LookupError``...), so ``except ValueError`` around s2d's functions keeps working."""


class S2DError(Exception):
    """An expected error: its message names the file, line, setting or option, and the fix."""


# Every error class lives here, at the bottom layer, so a module raises any of them without
# importing the module that first needed it (see the import contract in pyproject.toml).
class InputError(S2DError, ValueError):
    """Bad input, with the file and line (or field) it came from."""


class LockedError(S2DError, RuntimeError):
    """Another live process holds the output's lock; the message names it."""


class RecordExistsError(S2DError, ValueError):
    """An eval record of other settings is where a new one would be written."""


class ConfigError(S2DError, ValueError):
    """A bad setting, config file or ``--set`` item (named in the message)."""


class RunsFailed(S2DError, RuntimeError):
    """Runs of a plan failed (each message said); the others ran and the report was written
    (``path``, when given)."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path


class PluginError(S2DError, RuntimeError):
    """A plugin could not be loaded (raised only under S2D_STRICT_PLUGINS=1)."""


class UnknownNameError(S2DError, LookupError):
    """A method, curator, task, trainer or backend name nobody registered."""


class PluginExitError(RuntimeError):
    """A plugin called os._exit while it was loaded (see :func:`s2d.plugins._os_exit_raises`)."""


class ModelError(S2DError, ValueError):
    """A model reference that cannot be resolved, with what to do about it."""


class PromptTooLongError(S2DError, ValueError):
    """A prompt (plus its token budget) that does not fit the model's context."""


class TaskDataError(S2DError, FileNotFoundError):
    """Data a task needs is missing: says which file, which setting, and how to get it."""


class MethodConfigError(ConfigError):
    """A method option or template override that does not fit the method."""


class TrainerError(S2DError, ValueError):
    """Bad training data or settings (names the file and line, or the option)."""


class TrainerConfigError(TrainerError, ConfigError):
    """A trainer option that does not fit the trainer: a :class:`TrainerError`, as the trainers
    raised before the options model, and a :class:`ConfigError`, as every plugin's option error is."""
