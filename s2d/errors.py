"""The one base class of s2d's expected errors.

An :class:`S2DError` is the user's to fix (a bad setting, a missing file, a record in the way) and
says what to do; the command line prints its message as one line. Anything else is a bug and keeps
its traceback. Each subclass also derives from the builtin it refines (``ValueError``,
``LookupError``...), so ``except ValueError`` around s2d's functions keeps working."""


class S2DError(Exception):
    """An expected error: its message names the file, line, setting or option, and the fix."""
