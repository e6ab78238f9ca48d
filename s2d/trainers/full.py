"""`full`: full fine-tuning on the same data path; saves a complete model folder (safetensors)."""

from __future__ import annotations

from s2d.hookspecs import hookimpl
from s2d.options import option
from s2d.trainers.base import CommonOptions, FineTuner


class FullTrainer(FineTuner):
    """Full fine-tuning of every weight (loss on the answer only); writes a model folder (safetensors
    weights and the tokenizer: :meth:`FineTuner.adapt`)."""

    name = "full"

    class Options(CommonOptions):
        learning_rate: float = option(2e-5, gt=0, help="AdamW's peak learning rate")


@hookimpl
def register_trainers(register):
    register(FullTrainer)
