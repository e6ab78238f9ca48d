"""`lora` (default): PEFT LoRA on the curated records; saves an adapter folder that transformers +
PEFT and vLLM's ``LoRARequest`` both load, with the training config and data hash beside it."""

from __future__ import annotations

from pathlib import Path

from s2d.files import atomic_folder
from s2d.hookspecs import hookimpl
from s2d.options import option
from s2d.options import ranges as option_ranges_of
from s2d.trainers.base import CommonOptions, FineTuner, load_model, saver

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraOptions(CommonOptions):
    """LoRA's options over the common ones."""

    rank: int = option(16, ge=1, help="the adapter's rank")
    alpha: int = option(32, gt=0, help="LoRA's scaling numerator (the update is scaled by alpha / rank)")
    dropout: float = option(0.05, ge=0, lt=1, help="dropout on the adapter's input")
    target_modules: list = option(TARGET_MODULES, min_length=1, help="the modules that get an adapter")


# The ranges of LoRA's own options, for trainers declaring a dict over them (the shim).
LORA_RANGES = {k: v for k, v in option_ranges_of(LoraOptions).items() if k in ("rank", "alpha", "dropout", "target_modules")}


class LoraTrainer(FineTuner):
    """LoRA fine-tuning with PEFT (loss on the answer only); writes an adapter folder."""

    name = "lora"

    class Options(LoraOptions):
        # Defaults measured to move the embedded 135M model within a few epochs on a few hundred records.
        learning_rate: float = option(2e-4, gt=0, help="AdamW's peak learning rate")

    def adapt(self, model, tokenizer, out: Path):
        """The model wrapped in an adapter (after the seeding: its A matrices are drawn now), saved alone."""
        return with_lora(model, self), saver(out)


def with_lora(model, trainer):
    """``model`` wrapped in PEFT LoRA from a trainer's ``rank``, ``alpha``, ``dropout`` and
    ``target_modules`` (`lora`'s and `stepwise`'s settings)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=int(trainer.rank), lora_alpha=int(trainer.alpha),
                                            lora_dropout=float(trainer.dropout),
                                            target_modules=list(trainer.target_modules), task_type="CAUSAL_LM"))


def merge_adapter(model_path: str, adapter_dir: str, out_dir: str) -> Path:
    """Fold the adapter into the base weights (PEFT ``merge_and_unload``) and save a plain model
    folder (safetensors + tokenizer): the same model, served without LoRA kernels."""
    from peft import PeftModel

    out = Path(out_dir)
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if (out / "config.json").is_file() and (not weights.is_file() or
                                           (out / "config.json").stat().st_mtime >= weights.stat().st_mtime):
        return out  # merged from this adapter already (a retrained adapter is newer: merge again)
    model, tokenizer = load_model(model_path, "float32")
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    with atomic_folder(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out


@hookimpl
def register_trainers(register):
    register(LoraTrainer)
