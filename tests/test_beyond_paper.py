"""experiments/plans/beyond_paper.yaml (what scripts/beyond_paper.py ran): per task an answer-only and
a stepwise run on the same generation and curation, the stepwise trainer with its own options, the
addition probe, and route runs over the answer-only runs. The stepwise trainer and routing are tested
in tests/test_stepwise.py and tests/test_route.py, a route run of a sweep in tests/test_sweep.py."""

from pathlib import Path

import pytest
import yaml

from s2d.config import RunConfig, apply_scale
from s2d.sweep import load_plan

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "experiments" / "plans" / "beyond_paper.yaml"
# Stepwise's own options: longer reasoning gets several removal steps per epoch, so its curriculum
# fits in a few epochs on 2 cores; its epochs are its own (sized to the reasoning), not LoRA's.
STEPWISE = {"last_letter": {}, "coin_flip": {"removals_per_epoch": 4}, "gsm8k": {"removals_per_epoch": 4}}


@pytest.fixture(scope="module")
def runs():
    return {r.name: r for r in load_plan(PLAN).runs}


def test_each_stepwise_run_is_its_answer_only_run_but_the_trainer(runs):
    for task, options in STEPWISE.items():
        lora, step = runs[f"{task}-lora"].config.settings, runs[f"{task}-stepwise"].config.settings
        assert (lora["trainer"], step["trainer"], step["trainer_options"]) == ("lora", "stepwise", options)
        # The same generation and curation: the second run trains only (its samples come from the cache).
        def untrained(settings):
            return {k: v for k, v in settings.items() if k not in ("trainer", "trainer_options")}

        assert untrained(lora) == untrained(step)


@pytest.mark.parametrize("task, config", [("last_letter", "default"), ("coin_flip", "coin_flip_cot")])
def test_the_answer_only_runs_are_the_committed_configs(runs, task, config):
    raw = yaml.safe_load((ROOT / "experiments" / "configs" / f"{config}.yaml").read_text())
    want = RunConfig.build({**apply_scale(raw, None), "description": ""}).settings
    assert runs[f"{task}-lora"].config.settings == want


def test_the_probe_asks_every_digit_count_in_both_styles(runs):
    probe = [r for r in runs.values() if r.variant.kind == "eval"]
    assert {(r.config["task_options"]["digits"], r.config["task_options"].get("worked", "columns")) for r in probe} \
        == {(d, w) for d in (2, 3, 4) for w in ("columns", "place_value")}
    for r in probe:
        assert (r.config["task"], r.config["method"], r.config["eval_limit"]) == ("addition", "cot", 100)
        assert r.config["method_options"] == {"shots": 4, "shot_pool": 200}


def test_the_route_runs_route_the_answer_only_runs(runs):
    routes = {name: r for name, r in runs.items() if r.variant.kind == "route"}
    assert {r.source.name for r in routes.values()} == {"last_letter-lora", "coin_flip-lora"}
    for r in routes.values():
        assert r.config.settings == r.source.config.settings and r.variant.route == {}  # logprob confidence
