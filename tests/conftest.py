import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing in the test suite may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _own_generation_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's shared generation cache (a long run may be using it)."""
    monkeypatch.setenv("S2D_GENERATION_CACHE", str(tmp_path_factory.mktemp("generations")))


@contextlib.contextmanager
def pip_installed(target, *sources):
    """A real, non-editable `pip install` of ``sources`` (no dependencies) into the folder
    ``target``, on PYTHONPATH for the commands the test starts while the block runs. The shared
    venv is never changed, so a concurrent test run does not see these plugins and a killed one
    leaves none behind (installing into the venv did both)."""
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps",
                    "--no-build-isolation", "--target", str(target), *map(str, sources)], check=True)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), *([old] if old else [])])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(autouse=True)
def _fresh_plugins():
    """Each test starts from a freshly loaded plugin set."""
    from s2d import plugins

    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def replace(monkeypatch):
    """``replace(func, new)``: ``func`` replaced by ``new`` in its own module and in every s2d module
    that imported it by name. s2d imports its own modules at the top (tests/test_layers.py), so a
    patch of the defining module alone would not reach the callers."""
    import sys

    def replace(func, new):
        for name, module in list(sys.modules.items()):
            if (name == "s2d" or name.startswith("s2d.")) and getattr(module, func.__name__, None) is func:
                monkeypatch.setattr(module, func.__name__, new)

    return replace


@pytest.fixture(scope="session")
def model_path():
    """The embedded default model, converted once into the s2d cache (the real thing)."""
    from s2d.models import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model(model_path, tmp_path_factory):
    """A random 2-layer model of the embedded model's architecture and tokenizer (hidden size 32):
    trains in seconds, for what needs a real training loop but not real weights."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny_model")
    config = AutoConfig.from_pretrained(model_path)
    config.update({"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 8})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (Path(model_path) / name).is_file():
            shutil.copy(Path(model_path) / name, out / name)
    return str(out)


@pytest.fixture(scope="session")
def random_adapter(model_path, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights: it must visibly change the model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                     init_lora_weights=False)
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return str(out)


CHAT = [
    "What is the capital of France?",
    "Name three colors.",
    "Count from 1 to 10, separated by commas.",
    "Write one sentence about the sea.",
]


NAMES_M = ["James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Charles",
           "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul", "Andrew", "Joshua", "Kenneth"]
NAMES_F = ["Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen",
           "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Kimberly", "Emily", "Donna", "Michelle"]


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    """A small data directory in the layout of shared/data, built by the test itself."""
    import json

    root = tmp_path / "data"
    (root / "last_letters").mkdir(parents=True)
    (root / "last_letters" / "us_top1000_M.txt").write_text("\n".join(NAMES_M) + "\n")
    (root / "last_letters" / "us_top1000_F.txt").write_text("\n".join(NAMES_F) + "\n")
    (root / "coin_flip").mkdir()
    (root / "coin_flip" / "coin_val.json").write_text(json.dumps([
        {"targets": "yes", "targets_vec": [1, 0], "inputs": " Q: A coin is heads up. ann does not flip the coin. "
                                                           "bob does not flip the coin.  Is the coin still heads up? "},
        {"targets": "no", "targets_vec": [0, 1], "inputs": " Q: A coin is heads up. cy flips the coin. "
                                                          "di does not flip the coin.  Is the coin still heads up? "}]))
    (root / "gsm8k").mkdir()
    for split in ("train", "test"):
        (root / "gsm8k" / f"{split}.jsonl").write_text("".join(
            json.dumps({"question": f"Tom has {i} apples and gets 2 more. How many now?",
                        "answer": f"{i} + 2 = <<{i}+2={i + 2}>>{i + 2}\n#### {i + 2}"}) + "\n" for i in range(6)))
    (root / "triviaqa").mkdir()
    qa = [("Which planet is known as the red planet?", ["Mars", "The Red Planet"]),
          ("Who wrote Hamlet?", ["William Shakespeare", "Shakespeare"]),
          ("What is the capital of Italy?", ["Rome"]), ("How many legs has a spider?", ["8", "eight"]),
          ("Which metal is liquid at room temperature?", ["Mercury"]), ("In which year did WW2 end?", ["1945"])]
    (root / "triviaqa" / "test.jsonl").write_text("".join(
        json.dumps({"id": f"test_{i}", "question": q, "golden_answers": a}) + "\n" for i, (q, a) in enumerate(qa)))
    mt = root / "mt_bench"
    (mt / "model_answer").mkdir(parents=True)
    (mt / "human_judgments").mkdir()
    (mt / "question.jsonl").write_text("".join(json.dumps({"question_id": q, "category": c, "turns": [t, "more"]}) + "\n"
                                               for q, c, t in [(81, "writing", "Write a haiku."),
                                                               (111, "math", "What is 2+2?")]))
    for model, answers in {"m1": {81: "Leaves fall slowly", 111: "4"}, "m2": {81: "I like cats", 111: "5"}}.items():
        (mt / "model_answer" / f"{model}.jsonl").write_text("".join(
            json.dumps({"question_id": q, "model_id": model, "choices": [{"index": 0, "turns": [a, "x"]}]}) + "\n"
            for q, a in answers.items()))
    votes = [(81, "m1", "m2", "model_a"), (81, "m2", "m1", "model_b"), (111, "m1", "m2", "model_a"),
             (111, "m1", "m2", "tie")]
    (mt / "human_judgments" / "human_judgments.jsonl").write_text("".join(
        json.dumps({"question_id": q, "judge": f"expert_{i}", "model_a": a, "model_b": b, "winner": w}) + "\n"
        for i, (q, a, b, w) in enumerate(votes)))
    monkeypatch.setenv("S2D_DATA_DIR", str(root))
    return root


@pytest.fixture
def script():
    """Load one of scripts/*.py as a module (they are scripts, not a package): script("rescore_samples")."""
    import importlib.util
    from pathlib import Path

    def load(name):
        path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


def table1_configs(folder, trainer: str = "lora"):
    """Table 1's two configs, tiny and on the scripted engine, in ``folder``/configs."""
    configs = folder / "configs"
    configs.mkdir()
    small = f"backend: scripted\nn: 2\ntrainer: {trainer}\neval_limit: 2\n"
    (configs / "table1_last_letter_rar2.yaml").write_text(
        "task: last_letter\nmethod: rar2\ntask_options: {size: 4}\n" + small)
    (configs / "table1_coin_flip_rar2.yaml").write_text(
        "task: coin_flip\nmethod: rar2\ntask_options: {train_size: 4, validation_size: 2}\n" + small)
    return configs


def load_plugin_file(tmp_path, name: str, source: str):
    """Write ``source`` as plugins/``name``.py under ``tmp_path`` and load it as a plugins folder."""
    from s2d.plugins import get_plugins

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{name}.py").write_text(source)
    get_plugins(plugins_dir=folder)
    return folder


MEMORIZE = '''
import hashlib, json, os
from pathlib import Path
from s2d.hookspecs import hookimpl

class Memorize:
    """Writes a "model folder" whose weights are the hash of its training data (no model)."""
    name = "memorize"
    batch_size = 8
    def __init__(self, **options):
        self.__dict__.update(options)
    def train(self, model_path, data_path, out, *, seed=0, progress=True):
        if os.environ.get("S2D_TEST_FAIL_ON") and os.environ["S2D_TEST_FAIL_ON"] in str(data_path):
            raise RuntimeError("killed in training")
        out = Path(out); out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(hashlib.sha256(Path(data_path).read_bytes()).digest())
        (out / "config.json").write_text("{}")
        (out / "s2d_training.json").write_text(json.dumps({"data": str(data_path), "base": model_path,
                                                           "seed": seed}))

@hookimpl
def register_trainers(register):
    register(Memorize)
'''


@pytest.fixture
def memorize(tmp_path, tiny_data):
    """A model-free trainer plugin, `memorize` (see MEMORIZE), loaded from a plugins folder."""
    return load_plugin_file(tmp_path, "memorize", MEMORIZE)
