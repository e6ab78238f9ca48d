"""`stepwise`: stepwise internalization of the chain of thought (Deng, Choi, Shieber 2024, "From
Explicit CoT to Implicit CoT"; code da03/Internalize_CoT_Step_by_Step).

Training starts on the curated System 2 text (``system2_completion``: the chosen sample's reasoning
and answer) and removes ``tokens_per_removal`` reasoning tokens from its front at every removal
step (``removals_per_epoch`` steps per epoch), until only the answer-only target (``completion``,
what `lora` trains on) is left; the last ``answer_only_epochs`` train on that alone, so the result
answers with System 1 prompting exactly like a `lora` or `full` student. Removal smoothing adds a
few extra removed tokens now and then (an offset ``o`` with P(o) proportional to exp(-smoothing * o),
their lambda; 0 turns it off), and the optimizer's state is reset at every removal step, both as
in the paper. ``variant``: ``lora`` (an adapter, `lora`'s settings) or ``full`` (every weight).
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

from s2d.hookspecs import hookimpl
from s2d.options import option
from s2d.trainers.base import (SCHEDULERS, Trainer, TrainerError, check_out_dir, device_batch,
                               encode, hf_train, load_model, load_records, saver, seed_everything)
from s2d.trainers.lora import LoraOptions, with_lora

ANSWER_LINE = re.compile(r"^\s*(?:\**\s*)?final answer\b", flags=re.I)


def text_of(value) -> str:
    return value if isinstance(value, str) else "".join(m["content"] for m in value)


def split_reasoning(system2_text: str) -> str:
    """The reasoning of a System 2 text: everything before its last "Final answer" line (the answer
    comes from the answer-only target instead, so the last step is exactly that target)."""
    lines = system2_text.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if ANSWER_LINE.match(lines[i]):
            return "\n".join(lines[:i]).strip()
    return system2_text.strip()


def removal_schedule(lengths: list[int], *, tokens_per_removal: int, removals_per_epoch: int,
                     epochs: int | None, answer_only_epochs: int, smoothing: float,
                     seed: int) -> list[tuple[int, list[tuple[int, int]]]]:
    """The curriculum in training order: per stage, its removal step and its (record index,
    reasoning tokens removed) pairs.

    Each epoch visits every record once in a seeded order, split as evenly as it goes into
    ``removals_per_epoch`` stages; stage s of the run removes ``s * tokens_per_removal`` tokens
    (plus the smoothing offset), capped at the record's reasoning length, and the last
    ``answer_only_epochs`` epochs remove everything (their step is the first answer-only one).
    ``epochs`` None: enough epochs to remove the longest reasoning, then the answer-only ones."""
    steps_needed = math.ceil(max(lengths, default=0) / tokens_per_removal)
    if epochs is None:
        epochs = math.ceil(steps_needed / removals_per_epoch) + answer_only_epochs
    answer_only = (epochs - answer_only_epochs) * removals_per_epoch  # the first answer-only stage
    if answer_only < steps_needed:
        raise TrainerError(
            f"stepwise: epochs={epochs} leaves {max(0, answer_only)} removal steps before the answer-only epochs; "
            f"the longest reasoning ({max(lengths)} tokens) needs {steps_needed} steps of {tokens_per_removal} "
            f"tokens: raise epochs or tokens_per_removal (or leave epochs unset to size it)")
    rng = random.Random(seed)
    q = math.exp(-smoothing) if smoothing > 0 else 0.0
    n = len(lengths)
    stages = []
    for epoch in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        for j in range(removals_per_epoch):
            s = epoch * removals_per_epoch + j
            items = []
            for i in order[j * n // removals_per_epoch:(j + 1) * n // removals_per_epoch]:
                extra = 0
                while q and rng.random() < q:  # geometric offset: P(o) = (1 - q) q^o
                    extra += 1
                removed = lengths[i] if s >= answer_only else min(lengths[i], s * tokens_per_removal + extra)
                items.append((i, removed))
            if items:  # fewer records than stages per epoch: some stages are empty
                stages.append((min(s, answer_only), items))
    return stages


class StepwiseTrainer(Trainer):
    """Stepwise internalization: train on the System 2 reasoning, removing it from the front until
    only the answer is left (Deng et al. 2024)."""

    name = "stepwise"

    class Options(LoraOptions):
        epochs: int | None = option(None, ge=1, help="null: sized to the data")
        learning_rate: float | None = option(None, gt=0, help="null: lora's 2e-4, full's 2e-5")
        scheduler: str = option("constant_with_warmup", choices=SCHEDULERS, help="transformers' learning-rate schedule")
        tokens_per_removal: int = option(8, help="reasoning tokens removed per stage")
        removals_per_epoch: int = option(1, help="stages per epoch")
        answer_only_epochs: int = option(1, help="epochs on the answer alone at the end")
        smoothing: float = option(4.0, help="removal smoothing (0: off)")
        reset_optimizer: bool = option(True, help="a fresh optimizer state at each stage")
        variant: str = option("lora", help="lora (an adapter) or full (every weight)")

    def __init__(self, **options):
        super().__init__(**options)
        if self.variant not in ("lora", "full"):
            raise TrainerError(f"stepwise: variant must be 'lora' or 'full', got {self.variant!r}")
        for key in ("tokens_per_removal", "removals_per_epoch"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise TrainerError(f"stepwise: {key} must be a positive integer, got {getattr(self, key)!r}")
        if not isinstance(self.answer_only_epochs, int) or self.answer_only_epochs < 0:
            raise TrainerError(f"stepwise: answer_only_epochs must be a non-negative integer, "
                               f"got {self.answer_only_epochs!r}")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise TrainerError(f"stepwise: epochs must be a positive integer or null (sized to the data), "
                               f"got {self.epochs!r}")
        if self.learning_rate is None:  # the defaults of `lora` and `full`
            self.learning_rate = 2e-4 if self.variant == "lora" else 2e-5
        if self.smoothing < 0:
            raise TrainerError(f"stepwise: smoothing must be >= 0 (0: off), got {self.smoothing!r}")
        if self.epochs is not None and self.epochs <= self.answer_only_epochs:
            raise TrainerError(f"stepwise: epochs={self.epochs} leaves no epoch to remove reasoning in before the "
                               f"{self.answer_only_epochs} answer-only epoch(s); raise epochs or leave it unset")

    def train(self, model_path, data_path, out_dir, *, seed=0, progress=True):
        from transformers import AutoTokenizer

        # Under accelerate launch (DDP, FSDP, ZeRO-3) the schedule holds: batch_size is the batch of all
        # processes together (device_batch), and accelerate deals an ordered list out batch by batch,
        # so optimizer step k trains on examples k*B*G .. (k+1)*B*G-1 (B batch_size, G grad_accum)
        # whatever the number of processes, and a stage's whole steps stay whole.
        device_batch(self)
        records = load_records(data_path)
        missing = [i for i, r in enumerate(records, 1) if not r.get("system2_completion")]
        if missing:
            raise TrainerError(f"{data_path}:{missing[0]}: stepwise trains on the System 2 text and this record has no "
                               f"'system2_completion' ({len(missing)} of {len(records)} lack it): curated by an s2d "
                               f"older than the stepwise trainer, or by a curator that did not say which sample it "
                               f"chose; curate again")
        out = Path(out_dir)
        check_out_dir(model_path, out)
        tokenizer = AutoTokenizer.from_pretrained(model_path)  # the schedule is checked before the model loads
        reasoning = [tokenizer(split_reasoning(text_of(r["system2_completion"])), add_special_tokens=False)["input_ids"]
                     for r in records]
        stages = removal_schedule([len(ids) for ids in reasoning], tokens_per_removal=self.tokens_per_removal,
                                  removals_per_epoch=self.removals_per_epoch, epochs=self.epochs,
                                  answer_only_epochs=self.answer_only_epochs, smoothing=float(self.smoothing),
                                  seed=seed)
        data, boundaries = self.encode_stages(tokenizer, records, reasoning, stages)
        seed_everything(seed)  # before the model and its adapter are built: one seed, one result
        model, tokenizer = load_model(model_path, self.dtype)
        # Deng et al. reset the optimizer when more is removed: at each new removal step, not
        # between stages of one step (the answer-only epochs).
        resets = [b for b, (step, _), (prev, _) in zip(boundaries[1:], stages[1:], stages) if step != prev]
        # `lora`'s adapter folder, or `full`'s model folder (FineTuner.adapt)
        model, save = (with_lora(model, self), saver(out)) if self.variant == "lora" else (model, saver(out, tokenizer))

        callbacks = (reset_callback(resets),) if self.reset_optimizer else ()
        hf_train(self, model, tokenizer, records, out, seed=seed, progress=progress, data_path=data_path,
                 model_path=model_path, save=save, data=data, epochs=1, ordered=True, callbacks=callbacks,
                 extra={"records": len(records), "stepwise": {
                     "stages": len(stages), "examples": len(data), "stage_first_steps": boundaries,
                     "optimizer_resets_at": resets if self.reset_optimizer else [],
                     "max_reasoning_tokens": max(len(ids) for ids in reasoning),
                     "mean_removed_per_stage": [round(sum(k for _, k in items) / len(items), 2)
                                                for _, items in stages]}})
        return out

    def encode_stages(self, tokenizer, records, reasoning, stages):
        """The encoded examples in schedule order, each stage padded (by repeating its own first
        examples) to whole optimizer steps so no step mixes two stages; and each stage's first step."""
        per_step = int(self.batch_size) * int(self.grad_accum)
        memo: dict[tuple[int, int], dict] = {}

        def example(i: int, removed: int) -> dict:
            if (i, removed) not in memo:
                answer = text_of(records[i]["completion"]).strip()
                left = tokenizer.decode(reasoning[i][removed:]).strip() if removed < len(reasoning[i]) else ""
                completion = f"{left}\n{answer}" if left else answer
                memo[i, removed] = encode(tokenizer, {"prompt": records[i]["prompt"], "completion": completion},
                                          int(self.max_length))
            return memo[i, removed]

        data, boundaries = [], []
        for _, stage in stages:
            boundaries.append(len(data) // per_step)
            items = [example(i, k) for i, k in stage]
            pad = -len(items) % per_step
            data += items + [items[j % len(items)] for j in range(pad)]
        return data, boundaries


def reset_callback(steps: list[int]):
    """A transformers callback clearing the optimizer's state (Adam's moments and step count) just
    before each of the given optimizer steps."""
    from transformers import TrainerCallback

    starts = set(steps)

    class ResetOptimizer(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            if state.global_step in starts and optimizer is not None:
                inner = getattr(optimizer, "optimizer", optimizer)
                inner.state.clear()

    return ResetOptimizer()


@hookimpl
def register_trainers(register):
    register(StepwiseTrainer)
