"""`s2d plan`: a run's cost before it starts. The counts against a real `s2d distill` run on a
scripted engine, bad settings failing as in distill, estimates and their sources, the throughput
table and its calibration (scripted engine, a trainer plugin that loads no model)."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from s2d.cli import cli
from conftest import MEMORIZE  # the `memorize` trainer: a "model folder" from the data's hash

REPO = Path(__file__).resolve().parent.parent


# Scripted, but every sample its own text stating an answer. A run asks a prompt it has already
# asked (at the same sample index) only once; with one reply for everything, every input's second
# stage would see the same prompt, where a model's texts differ. The plan counts them as a model's.
DISTINCT = '''
from s2d.backends.scripted import ScriptedBackend
from s2d.hookspecs import hookimpl

class Distinct(ScriptedBackend):
    """Scripted: sample k of a request says so, then "Final answer: ab"."""
    name = "distinct"
    def __init__(self, model_path="scripted", **options):
        super().__init__(model_path, script=lambda r, k: f"Sample {k} of {r.id}. Final answer: ab", **options)

@hookimpl
def register_backends(register):
    register(Distinct)
'''


@pytest.fixture
def plugins(tmp_path):
    """A plugins folder with the `distinct` engine and the `memorize` trainer."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "distinct.py").write_text(DISTINCT)
    (folder / "memorize.py").write_text(MEMORIZE)
    return folder


@pytest.fixture
def fake_model(tmp_path):
    """A model folder with no model in it: the scripted engines and `memorize` never read weights,
    and resolving it needs nothing converted."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"not weights")
    return str(folder)


def s2d(plugins, *args):
    return CliRunner().invoke(cli, ["--plugins-dir", str(plugins), *args])


def write_config(tmp_path, **settings):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def plan_json(plugins, *args):
    res = s2d(plugins, "plan", "--json", *args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def steps(plan, stage, condition=None):
    (found,) = [s for s in plan["rounds"][0]["stages"] if s["stage"] == stage and s.get("condition") == condition]
    return found


def test_plan_counts_what_a_scripted_distill_run_does(plugins, fake_model, tiny_data, tmp_path):
    # rar2 with two answers per rephrasing, also at eval time: the fan-out the counts must follow.
    cfg = write_config(tmp_path, task="last_letter", task_options={"size": 4}, method="rar2",
                       method_options={"respond_n": 2}, n=3, curator="majority", trainer="memorize",
                       backend="distinct", model=fake_model, eval_limit=3)
    res = s2d(plugins, "distill", "--config", cfg, "--out-dir", str(tmp_path / "run"), "--no-cache", "--no-progress")
    assert res.exit_code == 0, res.output
    plan = plan_json(plugins, "--config", cfg, "--records", str(tmp_path / "none"),
                     "--throughput", str(tmp_path / "none.json"))

    run = tmp_path / "run"
    traces = [json.loads(x) for x in (run / "traces.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    gen = steps(plan, "generate")
    assert gen["inputs"] == len(traces) == 4
    assert [(s["name"], s["requests"], s["samples"]) for s in gen["steps"]] == [
        ("rar2/rephrase", 4, 12), ("rar2/respond", 12, 24)]
    # Every sample the engine made (no cache): the summary's count, and the traces' final samples.
    info = next(s["info"] for s in summary["stages"] if s["stage"] == "generate")
    assert info["generated"] == sum(s["samples"] for s in gen["steps"]) and info["reused"] == 0
    assert sum(len(t["samples"]) for t in traces) == gen["steps"][-1]["samples"]
    train = steps(plan, "train")
    curated = json.loads((run / "sft.summary.json").read_text())
    assert curated["records"] <= train["examples_upper_bound"] == 4 and "upper bound" in train["examples_source"]
    for row in summary["rows"]:
        ev = steps(plan, "eval", row["condition"])
        record = json.loads(next((run / "eval").rglob(f"{row['condition']}.json")).read_text())["s2d"]
        assert ev["docs"] == row["n"] == record["n_examples"] == 3
        assert sum(s["samples"] for s in ev["steps"]) == record["samples_generated"]
    assert [s["samples"] for s in steps(plan, "eval", "system2-rar2")["steps"]] == [3, 6]
    assert plan["seconds"] is None and "no time estimate" in " ".join(plan["notes"])


BAD = [
    ["--set", "n=0"],  # a run setting out of range (resolve)
    ["--set", "curator=nope"],  # an unknown plugin
    ["--set", "method_options.bogus=1"],  # a plugin option (DistillRun.check)
    ["--set", "task_options.size=-3"],  # a task option out of range
    ["--set", "trainer_options.epochs=0"],
]


@pytest.mark.parametrize("bad", BAD, ids=[b[1] for b in BAD])
def test_bad_settings_fail_in_plan_exactly_as_in_distill(bad, plugins, tiny_data, tmp_path):
    common = ["--set", "task=last_letter", "--set", "backend=scripted", *bad]
    planned = s2d(plugins, "plan", *common)
    distilled = s2d(plugins, "distill", "--runs-dir", str(tmp_path / "runs"), "--no-progress", *common)
    assert planned.exit_code == distilled.exit_code == 1
    assert planned.output == distilled.output and planned.output.startswith("Error: ")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("settings, says", [({"task": "last_letter", "nonsense": 1}, "nonsense"),
                                             ({"task": "last_letter", "backend": "scripted"}, "S2D_DATA_DIR")])
def test_a_bad_config_file_or_missing_data_fails_in_plan_as_in_distill(settings, says, plugins, tmp_path,
                                                                       monkeypatch):
    monkeypatch.delenv("S2D_DATA_DIR", raising=False)  # last_letter reads its names from the data folder
    cfg = write_config(tmp_path, **settings)
    planned = s2d(plugins, "plan", "--config", cfg)
    distilled = s2d(plugins, "distill", "--config", cfg, "--runs-dir", str(tmp_path / "runs"))
    assert planned.exit_code == distilled.exit_code == 1 and planned.output == distilled.output
    assert says in planned.output and len(planned.output.splitlines()) == 1


def record(path, *, model, task, method, condition, stages, method_options=None, adapter=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"s2d": {
        "model": model, "task": task, "method": method, "condition": condition, "adapter": adapter,
        "method_options": method_options or {}, "generation": {"task_options": {}}, "date": "2026-01-01",
        "mean_generated_tokens_by_stage": stages}, "lm_eval": {}}))


def test_tokens_come_from_matching_records_else_the_cap_and_say_so(plugins, fake_model, tiny_data, tmp_path):
    cfg = write_config(tmp_path, task="last_letter", task_options={"size": 4}, method="rar2", n=2,
                       trainer="memorize", backend="scripted", model=fake_model)
    records = tmp_path / "results"
    system2 = records / "eval" / "m" / "last_letter" / "system2-rar2.json"
    record(system2, model=fake_model, task="last_letter", method="rar2", condition="system2-rar2",
           stages={"rephrase": 40.0, "respond": 9999.0})  # respond over its cap of 1024: the cap wins
    record(records / "other" / "x.json", model=fake_model, task="last_letter", method="rar2", condition="x",
           stages={"rephrase": 1.0}, method_options={"wording": "paper"})  # another wording: never used
    record(records / "eval" / "m" / "last_letter" / "system1.json", model=fake_model, task="last_letter",
           method="system1", condition="system1", stages={"answer": 7.0})
    plan = plan_json(plugins, "--config", cfg, "--records", str(records), "--throughput", str(tmp_path / "none.json"))

    rephrase, respond = steps(plan, "generate")["steps"]
    assert rephrase["tokens_per_sample"] == 40.0 and rephrase["tokens_source"].endswith("system2-rar2.json")
    assert rephrase["tokens_source"].startswith("record ")
    assert respond["tokens_per_sample"] == respond["cap"] == 1024
    assert rephrase["generated_tokens"] == 40 * rephrase["samples"] == 40 * 8
    (answer,) = steps(plan, "eval", "system1")["steps"]
    assert answer["tokens_per_sample"] == 7.0
    (distilled,) = steps(plan, "eval", "distilled")["steps"]
    # System 1 at eval time is capped by the task file's max_gen_toks (last_letter: 512).
    assert distilled["tokens_source"] == "cap" and distilled["tokens_per_sample"] == distilled["cap"] == 512
    # The scripted engine counts words, as the plan says.
    assert rephrase["prompt_tokens_source"] == "words (scripted)" and rephrase["prompt_tokens"] > 0


def rates(**over):
    return {"engine_start_s": 10, "prompt_tokens_per_s": 1000, "generated_tokens_per_s": 100, "train_start_s": 5,
            "train_examples_per_s": 2, "eval_start_s": 3, "eval_s_per_doc": 0.5, **over}


def test_time_estimate_from_the_throughput_table(plugins, fake_model, tiny_data, tmp_path):
    cfg = write_config(tmp_path, task="last_letter", task_options={"size": 4}, method="cot", n=2,
                       trainer="memorize", backend="scripted", model=fake_model, eval_limit=2)
    table = tmp_path / "throughput.json"
    table.write_text(json.dumps({"entries": {f"{fake_model}|scripted|auto": rates()}}))
    plan = plan_json(plugins, "--config", cfg, "--records", str(tmp_path / "none"), "--throughput", str(table))

    gen = steps(plan, "generate")
    (reason,) = gen["steps"]
    assert gen["seconds"] == pytest.approx(10 + reason["prompt_tokens"] / 1000 + reason["generated_tokens"] / 100,
                                           abs=0.1)
    train = steps(plan, "train")
    assert train["examples_expected"] == 4 and train["epochs"] == 1  # memorize has no epochs: one pass
    assert train["seconds"] == pytest.approx(5 + 4 / 2)
    system2 = steps(plan, "eval", "system2-cot")
    (s,) = system2["steps"]
    assert system2["engine_starts"] == 0  # the teacher's engine from System 1's row
    assert system2["seconds"] == pytest.approx(3 + 2 * 0.5 + s["prompt_tokens"] / 1000 + s["generated_tokens"] / 100,
                                               abs=0.1)
    assert steps(plan, "eval", "distilled")["engine_starts"] == 1  # `memorize` writes a model folder
    assert plan["seconds"] == pytest.approx(sum(st["seconds"] for st in plan["rounds"][0]["stages"]), abs=0.2)
    assert plan["throughput"]["key"] == f"{fake_model}|scripted|auto"

    text = s2d(plugins, "plan", "--config", cfg, "--records", str(tmp_path / "none"), "--throughput", str(table))
    assert text.exit_code == 0, text.output
    assert "cot/reason" in text.output and "total " in text.output and "(cap 1024)" in text.output

    table.write_text(json.dumps({"entries": {"x|y|auto": rates(generated_tokens_per_s=0)}}))
    res = s2d(plugins, "plan", "--config", cfg, "--throughput", str(table))
    assert res.exit_code == 1 and "generated_tokens_per_s" in res.output and len(res.output.splitlines()) == 1


def test_calibrate_measures_and_writes_the_table_keeping_other_entries(plugins, fake_model, tmp_path):
    table = tmp_path / "cache" / "throughput.json"
    table.parent.mkdir()
    table.write_text(json.dumps({"entries": {"other|vllm|auto": rates()}}))
    res = s2d(plugins, "plan", "--calibrate", "--backend", "scripted", "--model", fake_model,
              "--set", "trainer=memorize", "--throughput", str(table))
    assert res.exit_code == 0, res.output
    entries = json.loads(table.read_text())["entries"]
    assert set(entries) == {"other|vllm|auto", f"{fake_model}|scripted|auto"}
    entry = entries[f"{fake_model}|scripted|auto"]
    assert entry == json.loads(res.stdout)
    assert all(entry[k] >= 0 for k in rates()) and entry["generated_tokens_per_s"] > 0
    assert entry["trainer"] == "memorize" and entry["backend"] == "scripted"
    assert not list(table.parent.glob("*.tmp*"))  # written atomically, nothing left beside it


# -- vLLM's prefix cache, simulated on token ids ------------------------------------------------------
def test_a_shared_prefix_of_full_blocks_is_a_hit_for_every_later_prompt():
    from s2d.plan import PrefixCache

    cache = PrefixCache(block_size=4)
    shots = list(range(100, 110))  # 10 tokens: two full blocks of 4, then 2 of the third
    assert cache.prefill(shots + [1, 2, 3, 4, 5]) == 0  # the first prompt: nothing held yet
    assert cache.prefill(shots + [6, 7, 8, 9, 10]) == 8  # the two blocks within the shots; the third differs
    assert cache.prefill(shots + [1, 2, 9, 9, 9]) == 12  # the third block (shots + 1, 2) was held too


def test_a_prompt_that_differs_in_its_first_block_hits_nothing():
    from s2d.plan import PrefixCache

    cache = PrefixCache(block_size=4)
    cache.prefill(list(range(16)))
    # The same tokens from the second block on: the blocks chain from the start, so none is the same.
    assert cache.prefill([99, 1, 2, 3] + list(range(4, 16))) == 0
    assert cache.prefill([99, 1, 2, 3, 4, 5, 6, 7, 42]) == 8  # a chain of its own now, held


def test_a_partial_tail_block_is_never_a_hit_and_the_last_token_is_computed():
    from s2d.plan import PrefixCache

    cache = PrefixCache(block_size=4)
    assert cache.prefill([1, 2, 3, 4, 5, 6]) == 0
    assert cache.prefill([1, 2, 3, 4, 5, 6]) == 4  # the tail 5, 6 is never held, though the same
    assert cache.prefill([1, 2, 3]) == 0  # shorter than a block
    assert cache.prefill([1, 2, 3, 4, 5, 6, 7, 8]) == 4  # whole blocks: at most len - 1 tokens are hits
    assert cache.prefill([1, 2, 3, 4, 5, 6, 7, 8, 9]) == 8  # ... yet the second block was held


def test_a_bounded_cache_drops_the_least_recently_used_blocks():
    from s2d.plan import PrefixCache

    cache = PrefixCache(block_size=2, capacity_tokens=4)  # two blocks
    cache.prefill([1, 1, 0])
    cache.prefill([2, 2, 0])
    assert cache.prefill([1, 1, 0]) == 2  # touched: now the newest
    cache.prefill([3, 3, 0])  # pushes out [2, 2], the least recently used
    assert cache.prefill([2, 2, 0]) == 0 and cache.prefill([3, 3, 0]) == 2


def test_counting_engine_counts_per_stage_with_vllms_cache_one_request_per_sample():
    from s2d.backends.base import Request
    from s2d.plan import CountingEngine, PrefixCache, _chars, _steps

    shots = [{"role": "user", "content": "q1" * 10}, {"role": "assistant", "content": "a1" * 10}]
    ask = [Request(messages=[*shots, {"role": "user", "content": f"question {i}"}], n=2, max_new_tokens=5, id=str(i))
           for i in range(3)]
    tokens = len(_chars(ask[0]))  # chars/4: 73 characters, 19 pieces
    engine = CountingEngine(cache=PrefixCache(block_size=4))
    outs = engine.generate(ask, progress="cot/reason")
    (step,) = _steps(engine, 1.0)
    assert (step["name"], step["requests"], step["samples"], step["cap"]) == ("cot/reason", 3, 6, 5)
    assert step["prompt_tokens"] == 6 * tokens == 6 * 19  # each sample prefills on its own
    # Four full blocks (16 pieces), alike in all (the questions differ in their last character, in
    # the tail): the first sample computes them, the five others hit them.
    assert step["prompt_tokens_cached"] == 5 * 16
    assert step["prompt_tokens_charged"] == step["prompt_tokens"] - step["prompt_tokens_cached"]
    assert len({c.text for o in outs for c in o}) == 6  # every sample its own text

    hf = CountingEngine()  # no cache: a request's samples share one prefill
    hf.generate(ask, progress="cot/reason")
    (step,) = _steps(hf, 1.0)
    assert step["prompt_tokens"] == step["prompt_tokens_charged"] == 3 * tokens and step["prompt_tokens_cached"] == 0


def test_with_vllm_the_time_leaves_out_the_prefix_cache_hits(plugins, fake_model, tiny_data, tmp_path):
    cfg = write_config(tmp_path, task="last_letter", task_options={"size": 4}, method="cot",
                       method_options={"shots": 2}, n=2, trainer="memorize", backend="vllm", model=fake_model)
    table = tmp_path / "throughput.json"
    table.write_text(json.dumps({"entries": {f"{fake_model}|vllm|auto": rates(block_size=8)}}))
    plan = plan_json(plugins, "--config", cfg, "--records", str(tmp_path / "none"), "--throughput", str(table))
    gen = steps(plan, "generate")
    (reason,) = gen["steps"]
    assert reason["prompt_tokens_source"] == "chars/4"  # the fake model folder has no tokenizer
    assert 0 < reason["prompt_tokens_cached"] < reason["prompt_tokens"]  # the exemplars, after the first
    assert reason["prompt_tokens_cached"] % 8 == 0  # whole blocks
    charged = reason["prompt_tokens"] - reason["prompt_tokens_cached"]
    assert reason["prompt_tokens_charged"] == charged
    assert gen["seconds"] == pytest.approx(10 + charged / 1000 + reason["generated_tokens"] / 100, abs=0.1)
    assert "blocks of 8 tokens (the throughput entry)" in " ".join(plan["notes"])

    text = s2d(plugins, "plan", "--config", cfg, "--records", str(tmp_path / "none"), "--throughput", str(table))
    assert text.exit_code == 0 and " cached " in text.output and "prefix cache simulated" in text.output


def test_the_hf_engine_prefills_every_prompt_whole(plugins, fake_model, tiny_data, tmp_path):
    cfg = write_config(tmp_path, task="last_letter", task_options={"size": 4}, method="cot",
                       method_options={"shots": 2}, n=2, trainer="memorize", backend="hf", model=fake_model)
    table = tmp_path / "throughput.json"
    table.write_text(json.dumps({"entries": {f"{fake_model}|hf|auto": rates()}}))
    plan = plan_json(plugins, "--config", cfg, "--records", str(tmp_path / "none"), "--throughput", str(table))
    gen = steps(plan, "generate")
    (reason,) = gen["steps"]
    assert reason["prompt_tokens_cached"] == 0 and reason["prompt_tokens_charged"] == reason["prompt_tokens"] > 0
    assert gen["seconds"] == pytest.approx(10 + reason["prompt_tokens"] / 1000 + reason["generated_tokens"] / 100,
                                           abs=0.1)
    assert "hf has no prefix cache" in " ".join(plan["notes"])


def test_prefill_calibration_prompts_share_no_cached_block():
    from s2d.plan import START, PrefixCache, _chars, prefill_requests

    prompts = prefill_requests()
    # Raw text (no chat template, whose header all would share), distinct from the first piece.
    assert all(r.messages is None for r in [START, *prompts]) and len(prompts) == 16
    for size in (1, 16, 128):
        cache = PrefixCache(size)
        assert sum(cache.prefill(_chars(r)) for r in [START, *prompts]) == 0


def test_calibration_reads_vllms_cache_geometry():
    from types import SimpleNamespace as NS

    from s2d.plan import _kv_cache

    cache = NS(block_size=128, kv_cache_size_tokens=93184, num_gpu_blocks=728)
    assert _kv_cache(NS(llm=NS(llm_engine=NS(vllm_config=NS(cache_config=cache))))) == \
        {"block_size": 128, "kv_cache_tokens": 93184}
    cache = NS(block_size=16, kv_cache_size_tokens=None, num_gpu_blocks=10)
    assert _kv_cache(NS(llm=NS(llm_engine=NS(vllm_config=NS(cache_config=cache))))) == \
        {"block_size": 16, "kv_cache_tokens": 160}
    assert _kv_cache(NS(llm=None)) == _kv_cache(object()) == {}  # not vLLM, or its engine not started


def test_a_bad_cache_key_in_the_throughput_table_is_refused(plugins, fake_model, tiny_data, tmp_path):
    cfg = write_config(tmp_path, task="last_letter", task_options={"size": 4}, trainer="memorize",
                       backend="scripted", model=fake_model)
    table = tmp_path / "throughput.json"
    table.write_text(json.dumps({"entries": {"x|y|auto": rates(block_size=0)}}))
    res = s2d(plugins, "plan", "--config", cfg, "--throughput", str(table))
    assert res.exit_code == 1 and "block_size" in res.output and len(res.output.splitlines()) == 1


def test_every_command_and_flag_docs_plan_shows_exists():
    from test_plugins import readme_flag_errors

    problems, checked = readme_flag_errors((REPO / "docs" / "plan.md").read_text())
    assert not problems and checked >= 5, problems
