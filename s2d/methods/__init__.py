"""Method plugins: System 1 and the System 2 methods, each a program of batched prompting stages.

The contract is in :mod:`s2d.methods.base`; each built-in is one module registered through the
``register_methods`` hook, exactly like a third-party plugin (see plugins/s2d-step-back).
"""

from s2d.errors import MethodConfigError
from s2d.methods.base import Method
from s2d.stages import Chain, StageRunner, flatten, start

__all__ = ["Chain", "Method", "MethodConfigError", "StageRunner", "flatten", "start"]
