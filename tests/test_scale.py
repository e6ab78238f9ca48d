"""Issue 29, scale: `s2d distill` training under `accelerate launch` (train_processes,
accelerate_config) and the generation engine's parallelism from the config (engine_options).

The fast tests take model-free paths: the launcher's process is faked, the engine is the scripted
one, data-parallel engines are test backends in spawned processes. The slow ones train for real:
the embedded model under 2-process DDP against one process, and a tiny random model under the
shipped FSDP config (which accelerate runs as DDP on a CPU)."""

import json
import os
import sys
from pathlib import Path

import pytest

from s2d.backends import Backend, Completion
from s2d.backends.base import sample_seed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples" / "accelerate"


# -- settings ----------------------------------------------------------------------------------------
def build(**settings):
    from s2d.config import RunConfig

    return RunConfig.build({"task": "last_letter", **settings})


def test_scale_settings_default_to_one_process_and_no_engine_options():
    cfg = build()
    assert cfg["train_processes"] == 1 and cfg["accelerate_config"] is None and cfg["engine_options"] == {}
    cfg = build(train_processes=4, accelerate_config="fsdp.yaml",
                engine_options={"tensor_parallel_size": 2, "data_parallel_size": 4, "pipeline_parallel_size": 1,
                                "distributed_executor_backend": "ray", "gpu_memory_utilization": 1,
                                "max_model_len": 8192, "enforce_eager": False})
    assert cfg["engine_options"]["gpu_memory_utilization"] == 1


@pytest.mark.parametrize("bad, message", [
    ({"train_processes": 0}, "'train_processes' must be >= 1"),
    ({"train_processes": "2"}, "'train_processes' must be a positive integer"),
    ({"train_processes": True}, "'train_processes' must be a positive integer"),
    ({"accelerate_config": ""}, "'accelerate_config' must be the path"),
    ({"accelerate_config": 3}, "'accelerate_config' must be the path"),
    ({"engine_options": 2}, "'engine_options' must be a mapping"),
    ({"engine_options": {"tp": 2}}, "unknown key.*'tp'.*allowed: tensor_parallel_size, data_parallel_size"),
    ({"engine_options": {"tensor_parallel_size": 0}}, r"engine_options.tensor_parallel_size must be >= 1"),
    ({"engine_options": {"data_parallel_size": 1.5}}, "data_parallel_size must be an integer"),
    ({"engine_options": {"distributed_executor_backend": "slurm"}}, "must be one of mp, ray"),
    ({"engine_options": {"gpu_memory_utilization": 0}}, r"gpu_memory_utilization must be > 0 and <= 1"),
    ({"engine_options": {"gpu_memory_utilization": 1.2}}, r"gpu_memory_utilization must be > 0 and <= 1"),
    ({"engine_options": {"max_model_len": 0}}, "max_model_len must be >= 1"),
    ({"engine_options": {"enforce_eager": "yes"}}, "enforce_eager must be true or false"),
    ({"engine_options": {"tensor_parallel_size": True}}, "tensor_parallel_size must be an integer"),
])
def test_bad_scale_settings_are_one_line_errors(bad, message):
    from s2d.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        build(**bad)


def test_scale_settings_come_from_a_config_file_and_set_items(tmp_path):
    from s2d.config import resolve

    path = tmp_path / "run.yaml"
    path.write_text("task: last_letter\ntrain_processes: 2\naccelerate_config: docs/examples/accelerate/fsdp.yaml\n"
                    "engine_options: {tensor_parallel_size: 8, gpu_memory_utilization: 0.9}\n")
    cfg = resolve("distill", str(path), set_items=["engine_options.max_model_len=4096", "train_processes=4"])
    assert cfg["engine_options"] == {"tensor_parallel_size": 8, "gpu_memory_utilization": 0.9, "max_model_len": 4096}
    assert cfg["train_processes"] == 4 and cfg["accelerate_config"].endswith("fsdp.yaml")


# -- engine options ------------------------------------------------------------------------------
@pytest.fixture
def cuda_devices(monkeypatch):
    """Pretend torch sees this many CUDA devices (None: asking is a test failure)."""
    import torch

    def set_count(n):
        def count():
            assert n is not None, "torch.cuda.device_count() asked although one GPU was asked for"
            return n

        monkeypatch.setattr(torch.cuda, "device_count", count)

    return set_count


def test_vllm_refuses_more_gpus_than_cuda_sees_before_any_engine(cuda_devices, monkeypatch):
    from s2d.backends.vllm import VLLMBackend
    from s2d.errors import ConfigError

    monkeypatch.setattr(os, "environ", dict(os.environ))  # what a backend might set stays here
    cuda_devices(2)
    with pytest.raises(ConfigError, match=r"tensor_parallel_size 2 x data_parallel_size 2 needs 4 GPUs, but torch "
                                          r"sees 2 CUDA device"):
        VLLMBackend("unused-path", tensor_parallel_size=2, data_parallel_size=2)
    VLLMBackend.check_engine_options({"tensor_parallel_size": 2}, devices=True)  # 2 of 2: fine
    VLLMBackend.check_engine_options({"tensor_parallel_size": 8}, devices=False)  # planning: not asked
    cuda_devices(None)  # one GPU asked: CUDA is not even asked
    VLLMBackend.check_engine_options({"tensor_parallel_size": 1, "gpu_memory_utilization": 0.5}, devices=True)


def test_ray_without_ray_is_refused_and_ray_skips_the_local_gpu_count(cuda_devices, monkeypatch):
    import importlib.util

    from s2d.backends.vllm import VLLMBackend
    from s2d.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match="distributed_executor_backend=ray: ray is not installed"):
        VLLMBackend.check_engine_options({"distributed_executor_backend": "ray"}, devices=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "ray" else real(name, *a))
    cuda_devices(None)  # the GPUs of a Ray cluster are on other nodes too: not counted here
    VLLMBackend.check_engine_options({"distributed_executor_backend": "ray", "tensor_parallel_size": 16},
                                     devices=True)


def test_the_hf_backend_refuses_parallel_engine_options():
    from s2d.backends.hf import HFBackend
    from s2d.errors import ConfigError

    with pytest.raises(ConfigError, match="tensor_parallel_size=2: the hf backend runs on one device"):
        HFBackend.check_engine_options({"tensor_parallel_size": 2})
    HFBackend.check_engine_options({"tensor_parallel_size": 1, "gpu_memory_utilization": 0.5, "max_model_len": 64})


# -- distill with a model-free trainer --------------------------------------------------------------------
def distill_config(**extra):
    from s2d.config import RunConfig

    return RunConfig.build({"task": "last_letter", "task_options": {"size": 4}, "backend": "scripted", "n": 3,
                            "method": "cot", "trainer": "memorize", **extra})


def answer(request, sample):
    return "Final answer: " + ("ab" if sample < 2 else "cd")


def distill_run(cfg, folder, log=None):
    from s2d.distill import DistillRun

    return DistillRun(cfg, folder, progress=False, echo=(log.append if log is not None else lambda m: None),
                      cache=False, backend_options={"script": answer})


def value_after(cmd, flag):
    return cmd[cmd.index(flag) + 1]


class FakeLauncher:
    """Stands in for `accelerate launch ... s2d train`: records the command and the engine's state,
    writes what a launcher would print, and trains with the plugin in this process."""

    def __init__(self, run=None, fail: str | None = None):
        self.calls, self.run, self.fail = [], run, fail

    def __call__(self, cmd, stdout=None, env=None, **kwargs):
        from s2d.plugins import get_plugins

        self.calls.append({"cmd": cmd, "env": env, "engine_closed": self.run is None or self.run._engine is None})
        stdout.write("launcher: starting 2 processes\n")
        if self.fail:
            stdout.write("Traceback (most recent call last):\n  ...\n[rank1]: RuntimeError: a worker failed\n"
                         f"Error: {self.fail}\n")
            return type("Done", (), {"returncode": 1})()
        trainer = get_plugins().get("trainers", value_after(cmd, "--trainer")).obj()
        trainer.train(value_after(cmd, "--model"), value_after(cmd, "--data"), value_after(cmd, "--out-dir"),
                      seed=int(value_after(cmd, "--seed")))
        return type("Done", (), {"returncode": 0})()


def test_distill_trains_every_round_under_accelerate_launch_with_a_log_each(memorize, tmp_path, monkeypatch):
    from s2d.trainers import launch

    cfg = distill_config(rounds=2, train_processes=2, trainer_options={"batch_size": 4, "note": "a b"}, seed=7)
    run = distill_run(cfg, tmp_path / "run", log := [])
    fake = FakeLauncher(run)
    monkeypatch.setattr(launch, "_spawn", fake)
    summary = run.run()
    assert summary["rounds"][1]["rows"], summary
    assert len(fake.calls) == 2 and all(c["engine_closed"] for c in fake.calls)  # the engine went first
    for r, call in enumerate(fake.calls, 1):
        folder = tmp_path / "run" if r == 1 else tmp_path / "run" / f"round{r}"
        cmd = call["cmd"]
        assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
        assert cmd[cmd.index("--num_processes") + 1] == "2" and "--multi_gpu" in cmd
        assert cmd[cmd.index("-m", 3):cmd.index("-m", 3) + 3] == ["-m", "s2d.cli", "train"]
        assert value_after(cmd, "--data") == str(folder / "sft.jsonl")
        assert value_after(cmd, "--out-dir") == str(folder / "adapter")
        assert (value_after(cmd, "--trainer"), value_after(cmd, "--model"), value_after(cmd, "--seed")) == \
            ("memorize", "smollm2-135m", "7")
        sets = [cmd[i + 1] for i, x in enumerate(cmd) if x == "--set"]
        assert sets == ['trainer_options.batch_size=4', 'trainer_options.note="a b"']
        assert call["env"]["S2D_PLUGINS_DIR"] == str(memorize.resolve())  # the plugin trainer loads there too
        text = (folder / "train.log").read_text()
        assert text.startswith("=== ") and "accelerate.commands.launch" in text and "launcher: starting" in text
        assert json.loads((folder / "adapter" / "s2d_training.json").read_text())["seed"] == 7
    assert any("under accelerate launch; log:" in m and m.endswith("train.log") for m in log)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["settings"]
    assert saved["train_processes"] == 2 and saved["accelerate_config"] is None and saved["engine_options"] == {}

    again = FakeLauncher()
    monkeypatch.setattr(launch, "_spawn", again)
    distill_run(cfg, tmp_path / "run").run()
    assert not again.calls  # trained rounds are reused


def test_a_failed_launch_is_one_line_naming_its_log_and_the_rerun_trains(memorize, tmp_path, monkeypatch):
    from s2d.errors import TrainerError
    from s2d.trainers import launch

    cfg = distill_config(train_processes=2)
    monkeypatch.setattr(launch, "_spawn", FakeLauncher(fail="out of memory on the GPUs"))
    with pytest.raises(TrainerError) as err:
        distill_run(cfg, tmp_path / "run").run()
    message = str(err.value)
    log = tmp_path / "run" / "train.log"
    assert "\n" not in message and str(log) in message and "exit code 1" in message
    assert "out of memory on the GPUs" in message
    assert not (tmp_path / "run" / "adapter" / "s2d_training.json").exists()
    monkeypatch.setattr(launch, "_spawn", FakeLauncher())
    assert distill_run(cfg, tmp_path / "run").run()["rows"]  # generate and curate reused, then trained
    assert log.read_text().count("=== ") == 2  # one log, each launch appended


def test_the_last_exception_line_names_a_failure_without_an_error_line(tmp_path):
    from s2d.trainers.launch import last_error

    log = tmp_path / "train.log"
    log.write_text("=== old launch\nError: an older failure\n=== new launch\nTraceback (most recent call last):\n"
                   "[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    assert last_error(log) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    log.write_text("=== launch\nnothing useful\n")
    assert last_error(log) is None


def test_the_launch_command_with_an_accelerate_config_file(tmp_path):
    from s2d.trainers.launch import command, processes

    cfg = build(trainer="full", accelerate_config=str(EXAMPLES / "fsdp.yaml"), trainer_options={"epochs": 1})
    cmd = command(cfg.settings, "d.jsonl", "out", progress=True)
    assert value_after(cmd, "--config_file") == str(EXAMPLES / "fsdp.yaml")
    assert "--num_processes" not in cmd and "--multi_gpu" not in cmd  # the file's 8 processes
    assert processes(cfg.settings) == 8 and cmd[-1] == "--progress"
    cfg = build(trainer="full", accelerate_config=str(EXAMPLES / "fsdp.yaml"), train_processes=4)
    cmd = command(cfg.settings, "d.jsonl", "out")
    assert value_after(cmd, "--num_processes") == "4" and processes(cfg.settings) == 4  # over the file's


def test_launch_checks_run_before_the_run_starts(memorize, tmp_path):
    from s2d.errors import ConfigError
    from s2d.trainers.launch import check

    with pytest.raises(ConfigError, match="batch_size=6 is the batch of all 4 training processes together"):
        distill_run(distill_config(train_processes=4, trainer_options={"batch_size": 6}), tmp_path / "a").run()
    assert not (tmp_path / "a").exists()  # refused before the run folder is claimed
    two = tmp_path / "two.yaml"
    two.write_text((EXAMPLES / "ddp.yaml").read_text().replace("num_machines: 1", "num_machines: 2"))
    with pytest.raises(ConfigError, match="num_machines 2: s2d distill launches training on this machine only"):
        check(build(accelerate_config=str(two)).settings)
    with pytest.raises(ConfigError, match="accelerate_config .*missing.yaml: cannot read it"):
        check(build(accelerate_config=str(tmp_path / "missing.yaml")).settings)
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="not an accelerate config"):
        check(build(accelerate_config=str(tmp_path / "list.yaml")).settings)
    check(build(accelerate_config=str(EXAMPLES / "fsdp.yaml")).settings)  # the shipped one is fine


def test_the_example_accelerate_configs_are_valid_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for name in ("ddp", "fsdp", "deepspeed_zero3"):
        config = load_config_from_file(str(EXAMPLES / f"{name}.yaml"))
        kinds[name] = str(config.distributed_type).removeprefix("DistributedType.")
        assert config.num_machines == 1 and config.num_processes == 8
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}
    ds = load_config_from_file(str(EXAMPLES / "deepspeed_zero3.yaml")).deepspeed_config
    assert ds["zero_stage"] == 3 and ds["zero3_save_16bit_model"] is True  # s2d saves the gathered weights
    fsdp = load_config_from_file(str(EXAMPLES / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True


# -- engine options reach the engine -----------------------------------------------------------------
def test_engine_options_reach_the_engine_in_distill_and_eval(memorize, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import s2d.backends
    import s2d.cli
    import s2d.distill
    from s2d.cli import cli

    seen = []
    real = s2d.backends.load_backend

    def spy(name, model, **options):
        seen.append(options)
        return real(name, model, **options)

    for module in (s2d.backends, s2d.distill, s2d.cli):  # wherever the engine is built from
        monkeypatch.setattr(module, "load_backend", spy, raising=False)
    options = {"max_model_len": 2048, "gpu_memory_utilization": 0.5}
    distill_run(distill_config(engine_options=options), tmp_path / "run").run()
    assert seen and all({k: o.get(k) for k in options} == options for o in seen)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["settings"]["engine_options"] == options
    seen.clear()
    res = CliRunner().invoke(cli, ["eval", "--task", "last_letter", "--backend", "scripted", "--limit", "2",
                                   "--set", "task_options.size=4", "--set", "engine_options.max_model_len=1024",
                                   "--out-dir", str(tmp_path / "eval"), "--no-cache", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert seen and seen[0]["max_model_len"] == 1024


def test_a_null_engine_option_leaves_the_engine_its_default(tmp_path, monkeypatch, cuda_devices):
    """`engine_options.X: null` is accepted as "the engine's own default", but was passed on as
    X=None: the vLLM backend then failed with a TypeError (int(None)) when the engine was built,
    after the run folder was claimed. A null option is not passed at all."""
    import s2d.cli
    import s2d.distill
    from s2d.backends.vllm import VLLMBackend

    nulls = {"data_parallel_size": None, "tensor_parallel_size": None, "gpu_memory_utilization": None}
    cfg = distill_config(engine_options={**nulls, "max_model_len": 2048})
    assert cfg.engine_kwargs() == {"max_model_len": 2048}
    seen = []
    monkeypatch.setattr(s2d.distill, "load_backend", lambda name, model, **options: seen.append(options))
    monkeypatch.setattr(s2d.cli, "load_backend", lambda name, model, **options: seen.append(options))
    monkeypatch.setattr(s2d.cli, "_plugins", lambda ctx: None)
    distill_run(cfg, tmp_path / "run").engine()  # `s2d distill`'s engine
    s2d.cli.make_backend(None, cfg)  # `s2d generate`, `eval`, `curate`
    assert [{k: o[k] for k in o if k in {*nulls, "max_model_len"}} for o in seen] == [{"max_model_len": 2048}] * 2
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the CPU engine's settings stay in this test
    cuda_devices(1)
    VLLMBackend("unused-path", **{k: v for k, v in seen[0].items() if k in nulls or k == "max_model_len"})


def test_distill_refuses_engine_options_this_machine_cannot_run_before_claiming(memorize, tmp_path, cuda_devices,
                                                                                 model_path):
    from s2d.errors import ConfigError

    pytest.importorskip("vllm")
    cuda_devices(1)
    cfg = distill_config(backend="vllm", engine_options={"tensor_parallel_size": 2})
    run = distill_run(cfg, tmp_path / "run")
    run.check()  # `s2d plan` checks without the devices: a paper config plans anywhere
    with pytest.raises(ConfigError, match="needs 2 GPUs, but torch sees 1 CUDA device"):
        run.run()
    assert not (tmp_path / "run").exists()  # before the run folder, and before any engine
    with pytest.raises(ConfigError, match="the hf backend runs on one device"):  # hf: never, on any machine
        distill_run(distill_config(backend="hf", engine_options={"data_parallel_size": 2}), tmp_path / "b").check()


# -- data-parallel engines -------------------------------------------------------------------------
class SeedEcho(Backend):
    """A test engine: each sample's text is its seed (what vLLM would be seeded with), and it says
    which process answered; a prompt "fail" raises."""

    name = "seed-echo"

    def generate(self, requests, *, progress=True):
        out = []
        for i, r in enumerate(requests):
            if (r.prompt or "") == "fail":
                raise ValueError("the engine refused 'fail'")
            out.append([Completion(text=str(sample_seed(self.seed, r, i, r.first_sample + s)),
                                   prompt_tokens=os.getpid(), completion_tokens=1, finish_reason="stop")
                        for s in range(r.n)])
        return out


def requests_for_dp():
    from s2d.backends import Request

    return [Request(prompt=f"p{i}", n=1 + i % 3, temperature=0.7, id="named" if i == 3 else None,
                    seed=11 if i == 4 else None) for i in range(9)]


def test_data_parallel_engines_give_what_one_engine_gives(monkeypatch):
    from s2d.backends import Request
    from s2d.backends.vllm import DataParallelEngines, shard

    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the spawned engines import this module
    requests = requests_for_dp()
    one = SeedEcho("m", seed=3).generate(requests)
    engines = DataParallelEngines(2, "m", {"seed": 3}, pin=False, engine=f"{__name__}:SeedEcho")
    try:
        two = engines.generate(requests)
        assert [[c.text for c in cs] for cs in two] == [[c.text for c in cs] for cs in one]
        assert len({c.prompt_tokens for cs in two for c in cs}) == 2  # both engines answered
        with pytest.raises(ValueError, match="refused 'fail'"):
            engines.generate([Request(prompt="ok"), Request(prompt="fail")])
        assert [[c.text for c in cs] for cs in engines.generate(requests)] == [[c.text for c in cs] for cs in one]
    finally:
        engines.close()
    assert not engines.procs
    runs = shard(requests, 3)
    assert [i for run in runs for i in run] == list(range(9)) and len(runs) == 3
    assert shard(requests[:1], 4) == [[0]]


def test_the_vllm_backend_deals_batches_to_its_data_parallel_engines(monkeypatch, cuda_devices):
    import s2d.backends.vllm as vllm_backend

    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    built = []

    class Engines(vllm_backend.DataParallelEngines):
        def __init__(self, n, model_path, options, **kwargs):
            built.append((n, options, kwargs))
            super().__init__(n, model_path, {"seed": options["seed"]}, pin=False, engine=f"{__name__}:SeedEcho")

    monkeypatch.setattr(vllm_backend, "DataParallelEngines", Engines)
    cuda_devices(4)
    backend = vllm_backend.VLLMBackend("m", seed=3, tensor_parallel_size=2, data_parallel_size=2,
                                       gpu_memory_utilization=0.7)
    try:
        requests = requests_for_dp()
        got = backend.generate(requests, progress=False)
    finally:
        backend.close()
    assert [[c.text for c in cs] for cs in got] == [[c.text for c in cs] for cs in
                                                    SeedEcho("m", seed=3).generate(requests)]
    [(n, options, kwargs)] = built
    assert n == 2 and kwargs["gpus_per_engine"] == 2 and "data_parallel_size" not in options
    assert options["tensor_parallel_size"] == 2 and options["gpu_memory_utilization"] == 0.7


# -- trainers under several processes ---------------------------------------------------------------
def test_batch_size_is_the_batch_of_all_processes(monkeypatch):
    from s2d.errors import TrainerError
    from s2d.plugins import get_plugins
    from s2d.trainers.base import device_batch

    trainer = get_plugins().get("trainers", "lora").obj(batch_size=8)
    assert device_batch(trainer) == 8
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert device_batch(trainer) == 2
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(TrainerError, match="batch_size=8 is the batch of all 3 training processes"):
        device_batch(trainer)
    stepwise = get_plugins().get("trainers", "stepwise").obj(batch_size=8)
    with pytest.raises(TrainerError, match="multiple of 3"):  # stepwise runs under accelerate now; checked first
        stepwise.train("no-model", "no-data.jsonl", "out")


def test_resume_takes_the_newest_whole_checkpoint(tmp_path):
    from s2d.trainers.base import last_checkpoint

    assert last_checkpoint(tmp_path / "none") is None
    for step, state in ((2, "{}"), (10, "{}"), (12, '{"global_step": '), (14, None)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # 12 and 14 were cut while saved


def test_training_holds_its_output_folder(tmp_path, monkeypatch):
    import s2d.trainers.base as base
    from s2d.locks import SUFFIX, _held

    held = []
    monkeypatch.setattr(base, "train_loop", lambda *a, **k: held.append(dict(_held)) or {"ok": 1})
    assert base.hf_train(None, None, None, [], tmp_path / "out") == {"ok": 1}
    assert (tmp_path / "out" / SUFFIX).resolve() in held[0]
    monkeypatch.setenv("RANK", "1")  # the other processes of a launch leave it to the first
    base.hf_train(None, None, None, [], tmp_path / "out")
    assert (tmp_path / "out" / SUFFIX).resolve() not in held[1]


# -- slow: real training ------------------------------------------------------------------------------
def adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_process_gloo_distill_equals_the_one_process_run(tmp_path, tiny_data, model_path):
    """`s2d distill` on the embedded model (a scripted engine answers; the trainer trains the real
    135M model with LoRA, one epoch), once in its own process and once with ``train_processes: 2``
    (DDP over gloo on this CPU). The adapters are equal within 1e-5: the difference is not a
    different training but rounding. DDP averages the two processes' gradients, and transformers
    normalises each process's loss by the answer tokens of the whole step (average_tokens_across
    _devices), so the mean gradient is the one process's; ``batch_size`` is the batch of both
    processes together, so both runs take the same steps over the same examples (accelerate deals
    the seeded order out batch by batch). What is left is the order of float sums (on a tiny model
    the two differed by 1e-8). LoRA dropout would make each process draw its own masks, a difference
    DDP's averaging does not remove, so the test sets dropout 0."""
    import shutil
    import subprocess

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "answering_backend" / "answering.py", plugins)
    adapters = {}
    for processes in (1, 2):
        out = tmp_path / f"run{processes}"
        res = subprocess.run(
            [sys.executable, "-m", "s2d.cli", "--plugins-dir", str(plugins), "distill", "--task", "last_letter",
             "--set", "task_options.size=8", "--set", "task_options.train_size=4", "--backend", "answering", "--n", "2", "--curator", "none",
             "--method", "system1", "--eval-limit", "2", "--out-dir", str(out), "--no-cache", "--no-progress",
             "--set", "trainer_options.epochs=1", "--set", "trainer_options.batch_size=4",
             "--set", "trainer_options.dropout=0", "--set", "trainer_options.save_steps=1000",
             "--set", "trainer_options.learning_rate=1e-3", "--set", "trainer_options.scheduler=constant",
             "--set", "trainer_options.warmup_ratio=0",  # one step: a warmup would make its rate 0
             "--set", f"train_processes={processes}"],
            capture_output=True, text=True, timeout=1800,
            env={**os.environ, "S2D_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1"})
        assert res.returncode == 0, res.stderr[-3000:] + (
            (out / "train.log").read_text()[-3000:] if (out / "train.log").is_file() else "")
        record = json.loads((out / "adapter" / "s2d_training.json").read_text())
        assert record["world_size"] == processes and record["records"] == 4
        assert (out / "train.log").is_file() == (processes == 2)
        adapters[processes] = adapter_tensors(out / "adapter")
    import torch

    one, two = adapters[1], adapters[2]
    assert one.keys() == two.keys()
    moved = max(one[k].abs().max().item() for k in one if "lora_B" in k)
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    assert moved > 1e-4, "the adapter did not train"
    assert diff <= 1e-5, f"2-process adapter differs by {diff} (update size {moved})"
    assert all(torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-4) for k in one)


@pytest.mark.slow
def test_full_under_the_fsdp_config_and_stepwise_under_ddp_equal_one_process(tiny_model, tmp_path, monkeypatch):
    """The launcher for real on a tiny random model: `full` with the shipped FSDP config (on a CPU
    accelerate runs it as DDP over gloo, and s2d says so), `stepwise` with 2 processes; each equals
    its one-process training within rounding (docs/scale.md records the FSDP-on-CPU findings)."""
    from safetensors.torch import load_file

    from s2d.config import RunConfig
    from s2d.plugins import get_plugins
    from s2d.trainers import launch

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"What is the password of door {i}?"}],
        "completion": [{"role": "assistant", "content": f"Final answer: {w}"}],
        "system2_completion": [{"role": "assistant", "content": f"Door {i} is the {w} door.\nFinal answer: {w}"}]})
        + "\n" for i, w in enumerate(["plum", "kiwi", "fig", "lime"] * 2)))
    fsdp = tmp_path / "fsdp.yaml"
    fsdp.write_text((EXAMPLES / "fsdp.yaml").read_text().replace("num_processes: 8", "num_processes: 2")
                    .replace("mixed_precision: bf16", "mixed_precision: 'no'"))
    cases = {"full": ({"epochs": 1, "batch_size": 4, "save_steps": 1000, "learning_rate": 1e-3},
                      {"accelerate_config": str(fsdp)}, "model.safetensors"),
             "stepwise": ({"batch_size": 4, "save_steps": 1000, "learning_rate": 1e-2, "dropout": 0,
                           "tokens_per_removal": 4, "removals_per_epoch": 2, "smoothing": 0},
                          {"train_processes": 2}, "adapter_model.safetensors")}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name, (options, scale, weights) in cases.items():
        one = get_plugins().get("trainers", name).obj(**options).train(tiny_model, str(data), str(tmp_path / name),
                                                                       seed=0, progress=False)
        settings = RunConfig.build({"model": tiny_model, "trainer": name, "trainer_options": options, **scale},
                                   require_task=False).settings
        said = []
        launch.launch(settings, data, tmp_path / f"{name}2", tmp_path / f"{name}2.log", echo=said.append)
        record = json.loads((tmp_path / f"{name}2" / "s2d_training.json").read_text())
        assert record["world_size"] == 2 and record["per_device_batch_size"] == 2
        if name == "full":  # no GPUs: accelerate trains an FSDP config as DDP, and s2d says so
            assert record["distributed_type"] == "MULTI_CPU" and not record["sharded"]
            assert any("asks for FSDP, but training ran as MULTI_CPU" in m for m in said)
        a, b = load_file(str(Path(one) / weights)), load_file(str(tmp_path / f"{name}2" / weights))
        assert a.keys() == b.keys()
        # full: float-order differences only (1e-7 measured); stepwise's per-process token counts change
        # the order of its sums more, against updates of ~1e-2: 1e-4 measured on an AVX2 CPU, 2.5e-3 on
        # an AVX-512 BF16 one (the same at commit c9ea26c, before this tolerance: the CPU's kernels, not
        # s2d's code; why they move stepwise 25x more than full is not yet understood)
        assert max((a[k] - b[k]).abs().max().item() for k in a) < (1e-5 if name == "full" else 5e-3), name
