"""Curator plugins: unsupervised filters that turn N System 2 samples per input into training
targets (or drop the input). The contract is in :mod:`s2d.curators.base`."""
