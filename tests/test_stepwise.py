"""The `stepwise` trainer (stepwise internalization): the removal schedule, the examples of each
stage, and real training on the embedded model ending in an answer-only student."""

import json

import pytest

from s2d.trainers.base import TrainerError, encode
from s2d.trainers.stepwise import StepwiseTrainer, removal_schedule, split_reasoning

SCHEDULE = dict(tokens_per_removal=4, removals_per_epoch=1, epochs=None, answer_only_epochs=1, smoothing=0.0, seed=0)


def test_split_reasoning_drops_the_last_final_answer_line_only():
    text = 'The last letter of "Ann" is "n".\nConcatenating gives "n".\nFinal answer: n'
    assert split_reasoning(text) == 'The last letter of "Ann" is "n".\nConcatenating gives "n".'
    assert split_reasoning("Final answer: 3\nwait\n**Final answer**: 4") == "Final answer: 3\nwait"
    assert split_reasoning("just reasoning") == "just reasoning"
    assert split_reasoning("Final answer: 7") == ""


def test_the_schedule_removes_tokens_from_the_front_until_answer_only():
    stages = removal_schedule([10, 3, 0], **SCHEDULE)
    # ceil(10 / 4) = 3 removal steps -> 3 epochs of removal, then one answer-only epoch
    assert [step for step, _ in stages] == [0, 1, 2, 3]
    assert all(sorted(i for i, _ in items) == [0, 1, 2] for _, items in stages)
    removed = [dict(items) for _, items in stages]
    assert [r[0] for r in removed] == [0, 4, 8, 10] and [r[1] for r in removed] == [0, 3, 3, 3]
    assert [r[2] for r in removed] == [0, 0, 0, 0]
    assert removal_schedule([10, 3, 0], **SCHEDULE) == stages  # seeded
    lengths = [10, 3, 0, 5]
    halves = removal_schedule(lengths, **{**SCHEDULE, "removals_per_epoch": 2})
    # two stages per epoch of two records each; removal grows per stage: 2 epochs of removal + 1 answer-only
    assert [len(items) for _, items in halves] == [2] * 6 and [s for s, _ in halves] == [0, 1, 2, 3, 4, 4]
    assert all({i for _, items in halves[e:e + 2] for i, _ in items} == {0, 1, 2, 3} for e in (0, 2, 4))
    assert all(k == min(lengths[i], 4 * s) for s, items in halves[:4] for i, k in items)
    assert all(k == lengths[i] for _, items in halves[4:] for i, k in items)
    with pytest.raises(TrainerError, match=r"epochs=2 leaves 1 removal steps.*needs 3 steps"):
        removal_schedule([10], **{**SCHEDULE, "epochs": 2})


@pytest.mark.parametrize("n", [2, 5, 10])
def test_every_record_ends_answer_only_however_the_records_split_over_stages(n):
    """Records that do not divide evenly over the stages of an epoch (or fewer records than
    stages) still reach every removal step and the answer-only epochs, exactly once per epoch."""
    lengths = [64] * n
    stages = removal_schedule(lengths, **{**SCHEDULE, "tokens_per_removal": 8, "removals_per_epoch": 8,
                                          "answer_only_epochs": 2})
    steps = [s for s, _ in stages]
    assert steps == sorted(steps) and steps[-1] == 8 and steps.count(8) == min(n, 8) * 2
    for i in range(n):
        seen = [(s, k) for s, items in stages for j, k in items if j == i]
        assert len(seen) == 3  # one epoch of removal (8 steps of 8 over 64 tokens) + 2 answer-only epochs
        assert [k for _, k in seen[1:]] == [64, 64] and seen[0][1] == 8 * seen[0][0]


def test_stage_examples_end_exactly_as_the_answer_only_target(tokenizer):
    records = [{"prompt": [{"role": "user", "content": "What is 12 + 34?"}],
                "completion": [{"role": "assistant", "content": "Final answer: 46"}],
                "system2_completion": [{"role": "assistant", "content":
                                        "Ones: 2 + 4 = 6, write 6, carry 0. Tens: 1 + 3 = 4, write 4, carry 0.\n"
                                        "Final answer: 46"}]}] * 3
    trainer = StepwiseTrainer(tokens_per_removal=5, batch_size=2)
    reasoning = [tokenizer(split_reasoning(r["system2_completion"][0]["content"]), add_special_tokens=False)["input_ids"]
                 for r in records]
    stages = removal_schedule([len(x) for x in reasoning], tokens_per_removal=5, removals_per_epoch=1, epochs=None,
                              answer_only_epochs=1, smoothing=0.0, seed=0)
    data, starts = trainer.encode_stages(tokenizer, records, reasoning, stages)
    assert len(data) == 4 * len(stages) and starts == [2 * s for s in range(len(stages))]  # 3 records -> 2 steps
    label_text = [tokenizer.decode([t for t, lab in zip(d["input_ids"], d["labels"]) if lab != -100]) for d in data]
    assert label_text[0].startswith("Ones: 2 + 4") and label_text[0].endswith("\nFinal answer: 46<|im_end|>")
    assert not label_text[4].startswith("Ones") and "Tens" in label_text[4]
    assert data[-1] == encode(tokenizer, records[0], 512)  # the last stage is what `lora` trains on
    assert trainer.learning_rate == 2e-4 and StepwiseTrainer(variant="full").learning_rate == 2e-5
    with pytest.raises(TrainerError, match="variant must be 'lora' or 'full'"):
        StepwiseTrainer(variant="qlora")
    with pytest.raises(TrainerError, match="epochs=1 leaves no epoch to remove reasoning in"):
        StepwiseTrainer(epochs=1)  # refused when the trainer is built: s2d distill checks before any model loads


def test_records_without_the_system2_text_are_refused_before_the_model_loads(tmp_path):
    p = tmp_path / "sft.jsonl"
    p.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    with pytest.raises(TrainerError, match=r"sft.jsonl:1: stepwise .*'system2_completion'"):
        StepwiseTrainer().train("/nonexistent/model", str(p), str(tmp_path / "out"))


@pytest.fixture(scope="module")
def tokenizer(model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.mark.slow
def test_stepwise_training_on_the_real_model_ends_answer_only(model_path, tmp_path, tokenizer):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tests.test_trainers import SECRETS, answer_logprob

    why = {"plum": "It is a purple fruit with a stone.", "kiwi": "It is a green fruit with seeds.",
           "fig": "It is a sweet fruit that grows on trees.", "lime": "It is a sour green citrus fruit."}
    rows = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}],
             "system2_completion": [{"role": "assistant", "content": f"{why[a.split(': ')[1]]}\n{a}"}]}
            for q, a in SECRETS] * 4
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = StepwiseTrainer(tokens_per_removal=4, answer_only_epochs=2, learning_rate=2e-3, batch_size=4,
                              save_steps=1000)
    out = trainer.train(model_path, str(data), str(tmp_path / "adapter"), seed=0, progress=False)
    cfg = json.loads((out / "s2d_training.json").read_text())
    info = cfg["stepwise"]
    assert info["stages"] >= 4 and info["mean_removed_per_stage"][0] == 0
    assert info["mean_removed_per_stage"][-1] == info["mean_removed_per_stage"][-2] > 0  # answer-only at the end
    # the optimizer is reset at each new removal step, not between the two answer-only epochs
    assert info["optimizer_resets_at"] == info["stage_first_steps"][1:-1] and cfg["records"] == 16
    assert (out / "adapter_config.json").is_file() and cfg["trainer"] == "stepwise"

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    before = answer_logprob(base, tokenizer, SECRETS)
    after = answer_logprob(PeftModel.from_pretrained(base, str(out)), tokenizer, SECRETS)
    assert after > before + 0.5, (before, after)  # it answers directly, without the reasoning
