"""`full`: full fine-tuning on the same data path; saves a complete model folder (safetensors)."""

from __future__ import annotations

from pathlib import Path

from s2d.hookspecs import hookimpl
from s2d.options import option
from s2d.trainers.base import CommonOptions, Trainer, hf_train, load_records, prepare


class FullTrainer(Trainer):
    """Full fine-tuning of every weight (loss on the answer only); writes a model folder."""

    name = "full"

    class Options(CommonOptions):
        learning_rate: float = option(2e-5, gt=0, help="AdamW's peak learning rate")

    def train(self, model_path, data_path, out_dir, *, seed=0, progress=True):
        records = load_records(data_path)
        out = Path(out_dir)
        model, tokenizer, data = prepare(self, model_path, records, out, seed=seed)
        hf_train(self, model, tokenizer, records, out, seed=seed, progress=progress, data_path=data_path,
                 model_path=model_path, data=data, save=model_folder_saver(out, tokenizer))
        return out


def model_folder_saver(out: Path, tokenizer):
    """Save a trained model as a plain model folder: safetensors weights and the tokenizer."""
    def save(m, state_dict=None):  # state_dict: gathered from FSDP or ZeRO-3 shards
        m.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(out)

    return save


@hookimpl
def register_trainers(register):
    register(FullTrainer)
