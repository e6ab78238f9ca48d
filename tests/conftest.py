import os

import pytest

# Nothing in the test suite may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _fresh_plugins():
    """Each test starts from a freshly loaded plugin set."""
    from s2d import plugins

    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="session")
def model_path():
    """The embedded default model, converted once into the s2d cache (the real thing)."""
    from s2d.models import resolve_model

    return resolve_model("smollm2-135m")


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
