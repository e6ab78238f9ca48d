"""Trainer plugins: turn a curated prompt-completion JSONL into a LoRA adapter (`lora`) or a model
folder (`full`). The contract and the shared data path are in :mod:`s2d.trainers.base`."""

from s2d.errors import TrainerError
from s2d.trainers.base import COMMON_OPTIONS, Trainer, load_records

__all__ = ["COMMON_OPTIONS", "Trainer", "TrainerError", "load_records"]
