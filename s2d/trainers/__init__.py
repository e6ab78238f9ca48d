"""Trainer plugins: turn a curated prompt-completion JSONL into a LoRA adapter (`lora`) or a model
folder (`full`). The contract and the shared data path are in :mod:`s2d.trainers.base`."""
