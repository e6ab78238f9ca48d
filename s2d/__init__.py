"""s2d: distil System 2 methods into System 1 answers (Yu et al., 2024, arXiv 2407.06023).

Kept import-light on purpose: `s2d --help` must not import torch, transformers, vllm, peft
or lm_eval. Heavy imports live inside the functions that need them.
"""

from s2d.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
