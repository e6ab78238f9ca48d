"""scripts/gpu_check.sh (issue 29): the GPU machine's check, run here on the CPU in fp32 with the tiny
random model (S2D_GPU_CHECK_CPU=1, S2D_GPU_CHECK_SIZE=tiny; about 30 s on two cores)."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("build_model", "generate", "train_lora", "train_full", "eval", "distill")


def check_result(result: dict) -> None:
    """What the check must report: every step ok, throughput and memory as numbers."""
    assert result["ok"] is True, {k: v.get("error") for k, v in result["steps"].items() if not v.get("ok")}
    assert set(STEPS) <= set(result["steps"])
    assert all(result["steps"][s]["ok"] and result["steps"][s]["seconds"] >= 0 for s in STEPS)
    generate = result["steps"]["generate"]
    assert generate["samples"] == 8 * 4 and generate["generated_tokens"] > 0  # n=8 per prompt
    for key in ("generate_tokens_per_s", "train_lora_tokens_per_s", "train_full_tokens_per_s", "peak_rss_mb"):
        assert isinstance(result[key], (int, float)) and result[key] > 0, key
    assert result["steps"]["distill"]["rows"] == ["system1", "system2-rar2", "distilled"]
    assert result["steps"]["eval"]["records"]
    assert result["dtype"] == "float32" and result["device"] == "cpu" and result["peak_gpu_mb"] is None


def test_the_gpu_check_runs_on_the_cpu_and_reports_json(model_path, tmp_path):
    out = tmp_path / "out"
    # model_path: the embedded model, whose config and tokenizer the random model is built from
    env = {**os.environ, "S2D_GPU_CHECK_CPU": "1", "S2D_GPU_CHECK_SIZE": "tiny", "OUT": str(out),
           "OMP_NUM_THREADS": "1", "S2D_LOAD_PLUGINS": ""}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    printed = json.loads(res.stdout)
    check_result(printed)
    assert json.loads((out / "gpu_check.json").read_text()) == printed
