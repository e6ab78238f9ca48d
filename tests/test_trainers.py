"""Trainer plugins: the data path (masking, padding), and real training on the embedded model:
the adapter moves answers toward the targets, loads in PEFT, resumes after a kill, runs under
`accelerate launch` with 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s2d.trainers.base import TrainerError, encode, load_records, pad_token_id

SECRETS = [("What is the password of the red door?", "Final answer: plum"),
           ("What is the password of the blue door?", "Final answer: kiwi"),
           ("What is the password of the green door?", "Final answer: fig"),
           ("What is the password of the black door?", "Final answer: lime")]


def write_records(path, pairs, repeat=1):
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}],
                                        "completion": [{"role": "assistant", "content": a}]}) + "\n"
                            for _ in range(repeat) for q, a in pairs))
    return path


@pytest.fixture(scope="module")
def tokenizer(model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def test_encode_masks_the_prompt_and_keeps_the_end_of_turn(tokenizer):
    rec = {"prompt": [{"role": "user", "content": "Say hi"}], "completion": [{"role": "assistant", "content": "hi"}]}
    enc = encode(tokenizer, rec, 512)
    answer = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100]
    assert tokenizer.decode(answer) == "hi<|im_end|>"
    assert enc["input_ids"][-1] == tokenizer.eos_token_id
    assert pad_token_id(tokenizer) != tokenizer.eos_token_id
    short = encode(tokenizer, rec, 6)  # too long: the prompt's start goes, never the answer
    assert len(short["input_ids"]) == 6 and [x for x in short["labels"] if x != -100] == answer


def test_bad_records_name_file_and_line(tmp_path):
    p = tmp_path / "sft.jsonl"
    p.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n" + json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(TrainerError, match=r"sft.jsonl:2: .*completion"):
        load_records(p)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(TrainerError, match="no training records"):
        load_records(tmp_path / "empty.jsonl")
    from s2d.plugins import get_plugins

    with pytest.raises(TrainerError, match="unknown option"):
        get_plugins().get("trainers", "lora").obj(ranks=4)


def answer_logprob(model, tokenizer, pairs):
    import torch

    total = 0.0
    for q, a in pairs:
        enc = encode(tokenizer, {"prompt": [{"role": "user", "content": q}],
                                 "completion": [{"role": "assistant", "content": a}]}, 512)
        ids = torch.tensor([enc["input_ids"]])
        labels = torch.tensor([enc["labels"]])
        with torch.no_grad():
            total += -model(input_ids=ids, labels=labels).loss.item()
    return total / len(pairs)


@pytest.mark.slow
def test_lora_moves_the_model_toward_the_targets(model_path, tmp_path, tokenizer):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from s2d.backends import load_backend
    from s2d.backends.base import Request
    from s2d.plugins import get_plugins

    data = write_records(tmp_path / "sft.jsonl", SECRETS, repeat=4)
    trainer = get_plugins().get("trainers", "lora").obj(epochs=6, learning_rate=2e-3, batch_size=4, save_steps=1000)
    out = trainer.train(model_path, str(data), str(tmp_path / "adapter"), seed=0, progress=False)
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    cfg = json.loads((out / "s2d_training.json").read_text())
    assert cfg["records"] == 16 and len(cfg["data_sha256"]) == 64 and cfg["last_loss"] < cfg["first_loss"]

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    before = answer_logprob(base, tokenizer, SECRETS)
    tuned = PeftModel.from_pretrained(base, str(out))
    after = answer_logprob(tuned, tokenizer, SECRETS)
    assert after > before + 0.5, (before, after)

    with load_backend("hf", model_path) as engine:
        outs = engine.generate([Request(messages=[{"role": "user", "content": q}], max_new_tokens=8, adapter=str(out))
                                for q, _ in SECRETS], progress=False)
    hits = sum(a.split(": ")[1] in o[0].text for (_, a), o in zip(SECRETS, outs))
    assert hits >= 3, [o[0].text for o in outs]


@pytest.mark.slow
def test_training_resumes_from_the_last_checkpoint_after_a_kill(model_path, tmp_path):
    data = write_records(tmp_path / "sft.jsonl", SECRETS, repeat=8)
    out = tmp_path / "adapter"
    cmd = [sys.executable, "-m", "s2d.cli", "train", "--data", str(data), "--out-dir", str(out), "--no-progress",
           "--set", "trainer_options.epochs=2", "--set", "trainer_options.batch_size=2", "--set", "trainer_options.save_steps=2"]
    env = {**os.environ, "S2D_LOAD_PLUGINS": ""}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in (out / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        if done:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "training ended before the kill: " + proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter_model.safetensors").exists()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    cfg = json.loads((out / "s2d_training.json").read_text())
    assert cfg["resumed_from"] and "checkpoint-" in cfg["resumed_from"]
    assert cfg["metrics"]["epoch"] == pytest.approx(2.0)


@pytest.mark.slow
def test_two_process_data_parallel_training_under_accelerate(model_path, tmp_path):
    import shutil

    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    data = write_records(tmp_path / "sft.jsonl", SECRETS, repeat=2)
    out = tmp_path / "adapter"
    # --multi_gpu is accelerate's name for its torchrun launcher; on a CPU machine it runs DDP over gloo
    # (--cpu instead would start one plain process).
    res = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "s2d.cli", "train",
                          "--data", str(data), "--out-dir", str(out), "--no-progress", "--set", "trainer_options.epochs=1",
                          "--set", "trainer_options.batch_size=2"],
                         env={**os.environ, "S2D_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((out / "s2d_training.json").read_text())
    assert cfg["world_size"] == 2
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path), str(out))


@pytest.mark.slow
def test_full_fine_tuning_writes_a_loadable_model_folder(model_path, tmp_path):
    from s2d.backends import load_backend
    from s2d.backends.base import Request
    from s2d.plugins import get_plugins

    data = write_records(tmp_path / "sft.jsonl", SECRETS, repeat=2)
    trainer = get_plugins().get("trainers", "full").obj(epochs=1, batch_size=4, save_steps=1000)
    out = trainer.train(model_path, str(data), str(tmp_path / "model"), seed=0, progress=False)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))  # safetensors only at the top level
    assert json.loads((out / "s2d_training.json").read_text())["trainer"] == "full"
    with load_backend("hf", str(out)) as engine:
        [[c]] = engine.generate([Request(messages=[{"role": "user", "content": SECRETS[0][0]}], max_new_tokens=4)],
                                progress=False)
    assert c.completion_tokens > 0


@pytest.mark.slow
def test_merged_adapter_answers_like_base_plus_adapter(model_path, random_adapter, tmp_path):
    from dataclasses import replace

    from s2d.backends.base import Request
    from s2d.backends.hf import HFBackend
    from s2d.trainers.lora import merge_adapter

    merged = merge_adapter(model_path, random_adapter, str(tmp_path / "merged"))
    assert (merged / "model.safetensors").is_file() and not list(merged.glob("*.bin"))
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    assert merge_adapter(model_path, random_adapter, str(merged)) == merged  # reused, not merged again
    assert (merged / "model.safetensors").stat().st_mtime_ns == stamp
    from conftest import CHAT

    reqs = [Request(messages=[{"role": "user", "content": q}], max_new_tokens=20) for q in CHAT[:2]]
    base = HFBackend(model_path, seed=0, dtype="float32")
    with_adapter = [o[0].text for o in base.generate([replace(r, adapter=random_adapter) for r in reqs],
                                                     progress=False)]
    plain = [o[0].text for o in base.generate(reqs, progress=False)]
    base.close()
    folded = HFBackend(str(merged), seed=0, dtype="float32")
    assert [o[0].text for o in folded.generate(reqs, progress=False)] == with_adapter != plain
    folded.close()


def adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def test_one_seed_trains_bit_identical_adapters(tiny_model, tmp_path):
    """Issue 27 build item 3 (finding 5): the adapter was initialised before the seed was set, so
    two trainings with one seed differed."""
    import random

    import torch

    from s2d.plugins import get_plugins

    data = write_records(tmp_path / "sft.jsonl", SECRETS, repeat=2)
    options = {"epochs": 2, "batch_size": 2, "save_steps": 1000, "rank": 4, "alpha": 8, "learning_rate": 1e-2}
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        torch.manual_seed(1000 + len(runs))  # whatever drew random numbers before must not matter
        random.seed(1000 + len(runs))
        trainer = get_plugins().get("trainers", "lora").obj(**options)
        runs[name] = adapter_tensors(trainer.train(tiny_model, str(data), str(tmp_path / name), seed=seed,
                                                   progress=False))
    a, b, c = runs["a"], runs["b"], runs["c"]
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    assert any(k for k in a if "lora_B" in k and a[k].abs().sum() > 0)  # it trained
    assert not all(torch.equal(a[k], c[k]) for k in a)  # and the seed decides


def test_stepwise_seeds_before_its_adapter_too(tiny_model, tmp_path):
    import torch

    from s2d.plugins import get_plugins

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}],
                                        "completion": [{"role": "assistant", "content": a}],
                                        "system2_completion": [{"role": "assistant",
                                                                "content": f"The door is a door. {a}"}]}) + "\n"
                            for q, a in SECRETS))
    runs = []
    for i in range(2):
        torch.manual_seed(i)
        trainer = get_plugins().get("trainers", "stepwise").obj(batch_size=2, save_steps=1000, rank=4, alpha=8,
                                                                tokens_per_removal=4)
        runs.append(adapter_tensors(trainer.train(tiny_model, str(data), str(tmp_path / str(i)), seed=0,
                                                  progress=False)))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.parametrize("trainer, option, value, message", [
    ("lora", "epochs", 0, ">= 1"), ("lora", "epochs", -1, ">= 1"), ("lora", "batch_size", 0, ">= 1"),
    ("lora", "learning_rate", 0, "> 0"), ("lora", "learning_rate", -1, "> 0"), ("lora", "rank", 0, ">= 1"),
    ("lora", "dropout", 2, "< 1"), ("lora", "dropout", -0.5, ">= 0"), ("lora", "grad_accum", 0, ">= 1"),
    ("lora", "scheduler", "sometimes", "one of"), ("lora", "dtype", "float8", "one of"),
    ("lora", "warmup_ratio", 3, "< 1"), ("lora", "max_length", 0, ">= 1"), ("lora", "target_modules", [], "at least 1"),
    ("full", "epochs", 0, ">= 1"), ("full", "learning_rate", -2e-5, "> 0"),
    ("stepwise", "learning_rate", -1, "> 0"), ("stepwise", "batch_size", 0, ">= 1"),
])
def test_trainer_option_ranges_are_checked_when_the_trainer_is_built(trainer, option, value, message):
    """Issue 27 items 7 and 13: out-of-range options were an untrained "distilled" row or a
    traceback after the model had loaded."""
    from s2d.plugins import get_plugins

    with pytest.raises(TrainerError, match=f"trainer {trainer!r}: option {option!r} must .*{message}"):
        get_plugins().get("trainers", trainer).obj(**{option: value})


def test_train_refuses_bad_ranges_and_an_out_dir_on_the_model_before_loading_it(tmp_path, monkeypatch):
    """Issue 27 items 7 and 10: one line each, no model resolved or loaded."""
    from click.testing import CliRunner

    import s2d.trainers.base
    from s2d.cli import cli

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(s2d.trainers.base, "load_model", no_model)
    data = write_records(tmp_path / "sft.jsonl", SECRETS)
    for setting in ("epochs=0", "epochs=-1", "dropout=2", "scheduler=sometimes"):
        res = CliRunner().invoke(cli, ["train", "--data", str(data), "--out-dir", str(tmp_path / "o"),
                                       "--set", f"trainer_options.{setting}"])
        assert res.exit_code == 1 and setting.split("=")[0] in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists(), res.output
    model = tmp_path / "base"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    for out in (model, model / "adapter", tmp_path):
        res = CliRunner().invoke(cli, ["train", "--data", str(data), "--model", str(model), "--out-dir", str(out)])
        assert res.exit_code == 1 and str(out) in res.output and str(model) in res.output, res.output
        assert "model folder" in res.output and not (model / "adapter").exists()


def test_distill_refuses_zero_epochs_before_claiming_the_folder(tiny_data, tmp_path):
    from click.testing import CliRunner

    from s2d.cli import cli

    res = CliRunner().invoke(cli, ["distill", "--task", "last_letter", "--set", "task_options.size=4", "--backend",
                                   "scripted", "--runs-dir", str(tmp_path), "--name", "r",
                                   "--set", "trainer_options.epochs=0"])
    assert res.exit_code == 1 and "option 'epochs' must be >= 1" in res.output, res.output
    assert not (tmp_path / "r").exists()


def test_a_max_length_that_cuts_every_answer_is_refused_before_the_model_loads(model_path, tmp_path, monkeypatch):
    """Issue 27 item 7: max_length=1 trained on nothing (loss 0); now refused, and from the
    tokenizer alone."""
    import s2d.trainers.base
    from s2d.plugins import get_plugins

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the data was encoded")

    monkeypatch.setattr(s2d.trainers.base, "load_model", no_model)
    data = write_records(tmp_path / "sft.jsonl", SECRETS)
    for name in ("lora", "full"):
        trainer = get_plugins().get("trainers", name).obj(max_length=1)
        with pytest.raises(TrainerError, match="max_length=1"):
            trainer.train(model_path, str(data), str(tmp_path / name), seed=0, progress=False)
        assert not (tmp_path / name).exists()
