"""What a trainer is, and the data path every built-in trainer shares.

Data: TRL's conversational prompt-completion JSONL written by ``s2d curate`` (``prompt``: chat
messages, ``completion``: the assistant's answer). Each record is rendered with the model's chat
template; the loss covers only the completion tokens, including the end-of-turn token, so the
model learns to stop. Padding uses a token other than EOS (labels are built explicitly, so padding
can never mask the EOS the model must learn).

Training runs on transformers' ``Trainer`` (checkpoints, resume, gradient accumulation, and
multi-process data parallelism under ``accelerate launch``), which users already know.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from s2d.errors import InputError, TrainerConfigError, TrainerError
from s2d.files import path_relation, portable_path, read_jsonl, write_json
from s2d.locks import SUFFIX, hold
from s2d.options import Options as BaseOptions
from s2d.options import apply_options, option, options_from_model
from s2d.options import defaults as option_defaults_of
from s2d.options import ranges as option_ranges_of
from s2d.store import TRAINING_CONFIG, training_config


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_records(path: str | os.PathLike) -> list[dict]:
    """Curated records, checked line by line (errors name FILE:LINE)."""

    def check(rec):
        if not isinstance(rec, dict) or "prompt" not in rec or "completion" not in rec:
            raise ValueError("a training record needs 'prompt' and 'completion' (TRL prompt-completion format)")
        for key in ("prompt", "completion"):
            value = rec[key]
            if isinstance(value, str):
                continue
            if not isinstance(value, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                      and m.get("role") in ("system", "user", "assistant")
                                                      for m in value):
                raise ValueError(f"'{key}' must be a string or a list of chat messages {{'role', 'content'}}")
        return rec

    def check_content(rec):
        rec = check(rec)
        completion = rec["completion"]
        text = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
        if not text.strip():
            raise ValueError("'completion' is empty: there is nothing to learn")
        return rec

    try:
        records = read_jsonl(path, check_content)
    except InputError as exc:
        raise TrainerError(str(exc)) from None
    if not records:
        raise TrainerError(f"{path}: no training records (did the curator keep any?)")
    return records


def pad_token_id(tokenizer) -> int:
    """A padding id that is not EOS: the tokenizer's own if distinct, else another special token.
    (Padded positions are masked in attention and loss; the id only must not be EOS.)"""
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return tokenizer.pad_token_id
    for tok in ("<|endoftext|>", "<pad>", "<|padding|>", "<unk>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != eos and tokenizer.convert_ids_to_tokens(tid) == tok:
            return tid
    return 0 if eos != 0 else 1


def encode(tokenizer, record: dict, max_length: int) -> dict:
    """input_ids and labels (-100 on the prompt) for one prompt-completion record."""
    prompt = record["prompt"]
    completion = record["completion"]
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)
    full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True)
    if hasattr(prompt_ids, "input_ids"):  # transformers may return a BatchEncoding
        prompt_ids, full_ids = prompt_ids["input_ids"], full_ids["input_ids"]
    prompt_ids, full_ids = list(prompt_ids), list(full_ids)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise TrainerError("the chat template renders the prompt differently with and without the completion; "
                           "cannot mask the prompt")
    # Keep the end-of-turn token, drop the template's trailing newline after it (nothing to learn).
    while len(full_ids) > len(prompt_ids) + 1 and full_ids[-1] != tokenizer.eos_token_id:
        full_ids.pop()
    labels = [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]
    if len(full_ids) > max_length:  # cut the prompt's start, never the answer
        cut = len(full_ids) - max_length
        if cut >= len(prompt_ids):  # the answer alone fills the window: it would be learnt without its input
            raise TrainerError(f"a completion of {len(full_ids) - len(prompt_ids)} tokens does not fit "
                               f"max_length={max_length} beside its prompt; raise trainer_options.max_length")
        full_ids, labels = full_ids[cut:], labels[cut:]
    return {"input_ids": full_ids, "labels": labels}


class Collator:
    """Dynamic padding to the longest sequence of the batch."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Trainer:
    """Base class for trainer plugins: ``name``, a docstring, ``options()`` and :meth:`train`.

    ``overwrite`` (set by ``s2d train --overwrite``): start over where OUT holds checkpoints or a
    result made from other data or settings, instead of refusing."""

    name: str = ""
    overwrite: bool = False
    adopt_checkpoints: bool = False  # s2d distill: unrecorded checkpoints in its own run folder are its own

    def __init__(self, **options: Any):
        apply_options(self, "trainer", options, TrainerConfigError)

    class Options(BaseOptions):
        """The trainer's options (a subclass declares ``name: type = option(default, ...)``; the
        built-ins extend :class:`CommonOptions`)."""

    # The options and their defaults, from ``Options`` (or a plugin's own dict: the shim).
    options = options_from_model()

    @classmethod
    def option_ranges(cls) -> dict[str, dict]:
        """The ranges of a trainer that declares ``options()`` as a dict (the shim), checked with
        its types when the trainer is built, before any model loads; a name it does not declare is
        skipped. A trainer with ``Options`` declares its ranges there."""
        return COMMON_RANGES

    def settings(self) -> dict:
        return {k: getattr(self, k) for k in self.options()}

    def train(self, model_path: str, data_path: str, out_dir: str, *, seed: int = 0, progress: bool = True) -> Path:
        """Train on ``data_path``; write the result under ``out_dir``; resume from its last checkpoint."""
        raise NotImplementedError


class FineTuner(Trainer):
    """A trainer that fine-tunes on the curated records as they are (`lora`, `full`): :func:`prepare`,
    then :func:`hf_train` on what :meth:`adapt` makes of the model, saved as it says."""

    def train(self, model_path, data_path, out_dir, *, seed=0, progress=True):
        records = load_records(data_path)
        out = Path(out_dir)
        model, tokenizer, data = prepare(self, model_path, records, out, seed=seed)  # seeded before adapt
        model, save = self.adapt(model, tokenizer, out)
        hf_train(self, model, tokenizer, records, out, seed=seed, progress=progress, data_path=data_path,
                 model_path=model_path, data=data, save=save)
        return out

    def adapt(self, model, tokenizer, out: Path):
        """(the model that trains, how it is saved): here every weight, saved as a model folder."""
        return model, saver(out, tokenizer)


def saver(out: Path, tokenizer=None):
    """``save(model, state_dict=None)`` for :func:`train_loop`: the trained model's safetensors (a
    PEFT model's: its adapter) into ``out``, with ``tokenizer`` where given (a whole model's folder).
    ``state_dict``: the weights gathered from FSDP or ZeRO-3 shards."""
    def save(m, state_dict=None):
        m.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)

    return save


def hf_train(trainer: Trainer, model, tokenizer, records: list[dict], out: Path, **kwargs) -> dict:
    """:func:`train_loop` holding ``out``'s lock (in the first process of a launch): a second
    training into the folder, such as one started while a killed run's workers still train,
    fails at once naming the holder instead of mixing checkpoints with it."""
    from contextlib import nullcontext

    first = int(os.environ.get("RANK", "0") or 0) == 0
    with hold(Path(out) / SUFFIX, f"the training output {out}") if first else nullcontext():
        return train_loop(trainer, model, tokenizer, records, Path(out), **kwargs)


def train_loop(trainer: Trainer, model, tokenizer, records: list[dict], out: Path, *, seed: int, progress: bool,
               data_path: str, model_path: str, save, data: list[dict] | None = None, epochs: float | None = None,
               ordered: bool = False, callbacks: tuple = (), extra: dict | None = None) -> dict:
    """The shared loop: encode, train with transformers' Trainer (resuming), save, record the config.

    A trainer with its own curriculum passes ``data`` already encoded and in order, ``ordered=True``
    (no shuffling: the order is the schedule, and a resumed run skips exactly what was done), its
    own ``epochs`` over that list, ``callbacks`` and ``extra`` facts for the recorded config."""
    import torch
    from torch.utils.data import SequentialSampler
    from transformers import Trainer as HFTrainer
    from transformers import TrainingArguments

    class OrderedTrainer(HFTrainer):
        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    if data is None:
        data = [encode(tokenizer, r, int(trainer.max_length)) for r in records]
    check_out_dir(model_path, out)  # the trainers check it before loading; this guards other callers
    checkpoints = out / "checkpoints"
    claim_output(out, {"trainer": trainer.name, "settings": trainer.settings(), "seed": seed, "model": model_path,
                       "data_sha256": file_sha256(data_path)}, overwrite=bool(getattr(trainer, "overwrite", False)),
                 adopt=bool(getattr(trainer, "adopt_checkpoints", False)))
    args = TrainingArguments(
        output_dir=str(checkpoints), per_device_train_batch_size=device_batch(trainer),
        gradient_accumulation_steps=int(trainer.grad_accum),
        num_train_epochs=float(trainer.epochs if epochs is None else epochs),
        learning_rate=float(trainer.learning_rate), lr_scheduler_type=trainer.scheduler,
        # transformers 5: a float warmup_steps below 1 is a ratio of the total steps.
        warmup_steps=float(trainer.warmup_ratio), weight_decay=float(trainer.weight_decay),
        logging_steps=1, save_strategy="steps", save_steps=int(trainer.save_steps), save_total_limit=2,
        seed=seed, data_seed=seed, report_to=[], disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        # An accelerate config's mixed_precision (accelerate launch exports it), said to the Trainer
        # too: DeepSpeed refuses a config whose bf16 the Trainer's arguments contradict.
        bf16=os.environ.get("ACCELERATE_MIXED_PRECISION") == "bf16",
        fp16=os.environ.get("ACCELERATE_MIXED_PRECISION") == "fp16",
        # The shuffled order is drawn from data_seed and the epoch alone, not from whatever else used
        # the global generator (accelerate's seedable sampler; said here, not left to a default).
        accelerator_config={"use_seedable_sampler": True})
    hf = (OrderedTrainer if ordered else HFTrainer)(model=model, args=args, train_dataset=data,
                                                    data_collator=Collator(pad_token_id(tokenizer)),
                                                    callbacks=list(callbacks))
    last = last_checkpoint(checkpoints)
    result = hf.train(resume_from_checkpoint=last)
    metrics = dict(result.metrics)
    losses = [h["loss"] for h in hf.state.log_history if "loss" in h]
    # FSDP and DeepSpeed ZeRO-3 hold each weight in pieces across the processes: every process
    # takes part in gathering the whole state dict, which the first process then saves.
    sharded = bool(getattr(hf, "is_fsdp_enabled", False) or getattr(hf, "is_deepspeed_enabled", False))
    state_dict = hf.accelerator.get_state_dict(hf.model_wrapped if hf.is_deepspeed_enabled else hf.model) \
        if sharded else None
    if hf.is_world_process_zero():
        # ``save(model)``; sharded, ``save(model, state_dict)`` (the built-in savers take both)
        save(hf.accelerator.unwrap_model(hf.model), state_dict) if sharded else save(hf.model)
        write_json(out / TRAINING_CONFIG, {
            "trainer": trainer.name, "settings": trainer.settings(), "seed": seed,
            "model": portable_path(model_path, out.parent), "data": portable_path(data_path, out.parent),
            "data_sha256": file_sha256(data_path), "records": len(data),
            "resumed_from": last, "metrics": metrics, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "world_size": args.world_size,
            "per_device_batch_size": args.per_device_train_batch_size, "sharded": sharded,
            # What accelerate made of it: NO, MULTI_CPU or MULTI_GPU (DDP), FSDP, DEEPSPEED.
            "distributed_type": str(hf.accelerator.distributed_type).removeprefix("DistributedType."),
            **(extra or {}),
        })
    return metrics


def last_checkpoint(checkpoints: Path) -> str | None:
    """The newest whole checkpoint: transformers writes trainer_state.json after the weights,
    optimizer and RNG states, so a checkpoint without it (or with half of it) was cut by a kill
    while it was saved, and resuming from it would fail; the one before it is taken."""
    import re

    if not checkpoints.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in checkpoints.iterdir()
                   if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))
    for _, path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return str(path)
    return None


def world_size() -> int:
    """How many processes train together: ``WORLD_SIZE``, which `accelerate launch` (torchrun)
    sets in each of them before s2d starts; 1 without it."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def device_batch(trainer: Trainer) -> int:
    """Each process's batch. ``batch_size`` is the batch of one (micro-)step over all processes, so
    a run means the same on one process or N (the same steps, the same examples in each; under DDP
    the gradient is the same mean up to rounding): each of N processes takes ``batch_size / N``."""
    return share_batch(int(trainer.batch_size), world_size())


def share_batch(batch: int, processes: int, *, error: type[Exception] = TrainerError, why: str = "") -> int:
    """``batch`` (``batch_size``, the batch of all processes together) dealt out to ``processes``:
    each one's share, or ``error`` where it does not divide. ``why``: what set the number of
    processes, said in the message. The one check of the training processes' batch: in each
    process (:func:`device_batch`) and before a launch (:func:`s2d.trainers.launch.check`)."""
    if batch % processes:
        raise error(f"trainer_options.batch_size={batch} is the batch of all {processes} training processes "
                    f"together and must be a multiple of {processes} "
                    f"(e.g. {batch + processes - batch % processes}{'; ' + why if why else ''})")
    return batch // processes


RUN_NAME = "s2d_run.json"


def claim_output(out: Path, run: dict, *, overwrite: bool = False, adopt: bool = False) -> None:
    """Make ``out`` this training run's folder: resume only checkpoints made from the same data and
    settings (recorded in ``checkpoints/s2d_run.json``); refuse anything else unless ``overwrite``."""
    import shutil

    checkpoints = out / "checkpoints"
    record = checkpoints / RUN_NAME
    run = json.loads(json.dumps(run, default=str))
    finished = training_config(out)
    theirs = json.loads(record.read_text()) if record.is_file() else None
    foreign = []
    if finished is not None and (finished.get("data_sha256") != run["data_sha256"]
                                 or finished.get("settings") != run["settings"]):
        foreign.append(f"a model trained from other data or settings ({out / TRAINING_CONFIG})")
    if checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*")) and theirs != run \
            and not (adopt and theirs is None):
        why = "no record of what made them" if theirs is None else \
            "made from other " + ", ".join(k for k in run if theirs.get(k) != run[k])
        foreign.append(f"checkpoints of another run ({why})")
    if foreign and not overwrite:
        raise TrainerError(f"{out} holds {' and '.join(foreign)}; choose another --out, or pass --overwrite "
                           f"to start over there")
    if foreign:  # asked for: the old checkpoints and result are replaced
        shutil.rmtree(checkpoints, ignore_errors=True)
        (out / TRAINING_CONFIG).unlink(missing_ok=True)
    write_json(record, run)


# transformers' schedulers that need no extra arguments (reduce_lr_on_plateau needs an evaluation
# loop, cosine_with_min_lr a min_lr); listed, not imported, so the check loads no library.
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")


class CommonOptions(BaseOptions):
    """The options of the shared training loop (every built-in trainer extends these). Ranges:
    epochs 0 would save an untrained adapter as the "distilled" model."""

    epochs: int = option(3, ge=1, help="passes over the curated set")
    batch_size: int = option(8, ge=1, help="examples per micro-step, all processes together (each of N takes batch_size / N)")
    grad_accum: int = option(1, ge=1, help="micro-steps per optimizer step: one step sees batch_size x grad_accum examples")
    max_length: int = option(512, ge=1, help="tokens of prompt and completion; the prompt's start is cut")
    scheduler: str = option("cosine", choices=SCHEDULERS, help="transformers' learning-rate schedule")
    # 1 or more: transformers would read it as a number of steps
    warmup_ratio: float = option(0.05, ge=0, lt=1, help="share of the steps warming the rate up")
    weight_decay: float = option(0.0, ge=0, help="AdamW's weight decay")
    save_steps: int = option(20, ge=1, help="steps between checkpoints (a killed run resumes from the last)")
    dtype: str = option("float32", choices=("float32", "bfloat16", "float16"), help="the weights' dtype in training")


# The dict spellings, for trainers that declare ``options()`` as a dict: ``{**COMMON_OPTIONS, ...}``,
# checked against COMMON_RANGES (Trainer.option_ranges) by the shim.
COMMON_OPTIONS = option_defaults_of(CommonOptions)
COMMON_RANGES = {**option_ranges_of(CommonOptions), "learning_rate": {"gt": 0}}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every device). transformers' Trainer seeds
    them too, but only once it is built: after the adapter, whose LoRA A matrices are drawn at
    creation, so the same seed gave other adapters. Call this before the model and adapter are built."""
    import random

    import numpy as np
    import torch
    from transformers import set_seed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_seed(seed)


def check_out_dir(model_path: str, out_dir: str | os.PathLike) -> None:
    """Refuse an output folder that is, is inside, or contains the model folder: the result would be
    written into the base model (loading it as a base would then apply the adapter)."""
    model = Path(model_path).expanduser()
    if not model.exists():  # a hub id: no folder to write into
        return
    relation = path_relation(Path(out_dir).expanduser().resolve(), model.resolve())
    if relation:
        raise TrainerError(f"--out-dir {out_dir} {relation} the model folder {model_path}: training would write "
                           f"into the base model; choose another --out-dir")


def prepare(trainer: Trainer, model_path: str, records: list[dict], out: Path, *, seed: int):
    """What `lora` and `full` do before training, cheapest check first: the output folder, every
    record encoded with the tokenizer alone (a max_length that cuts an answer is refused before the
    model loads), the generators seeded, then the model. Returns (model, tokenizer, encoded data)."""
    from transformers import AutoTokenizer

    check_out_dir(model_path, out)
    device_batch(trainer)  # a batch the processes cannot share: refused before the model loads
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data = [encode(tokenizer, r, int(trainer.max_length)) for r in records]
    seed_everything(seed)
    model, tokenizer = load_model(model_path, trainer.dtype)
    return model, tokenizer, data


def load_model(model_path: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype), use_safetensors=True)
    return model, tokenizer

