"""Curator plugins: unsupervised filters that turn N System 2 samples per input into training
targets (or drop the input). The contract is in :mod:`s2d.curators.base`."""

from s2d.curators.base import Curator, Decision, vote

__all__ = ["Curator", "Decision", "vote"]
