"""The thin CLI (issue 28, item 4): flags are declared once and become run settings in one function,
and the work behind each command lives in the layer below it (s2d.traces, s2d.stage_runs,
s2d.lmeval.run, s2d.distill), where it is tested here without the command line."""

import functools
import json

import click
import pytest
from click.testing import CliRunner

import s2d.cli
from s2d.cli import FLAGS, cli, flag_settings
from s2d.config import resolve
from s2d.errors import ConfigError, InputError


class Resolved(Exception):
    """Raised by the spy below: the command got as far as its settings."""


def _commands(group=cli, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


@pytest.fixture
def spy(monkeypatch):
    """Every command's settings: (command, flags) as they reach s2d.config.resolve (or, for `s2d
    plan`, the distill checks), then stop."""
    seen = []

    def record(command, flags):
        seen.append((command, flags))
        raise Resolved

    monkeypatch.setattr(s2d.cli, "resolve", lambda command, *a, flags=None, **k: record(command, flags))
    monkeypatch.setattr(s2d.cli, "load_settings", lambda plugins, *a: record("distill", a[-1]))
    return seen


def test_every_command_maps_the_same_flags_to_the_same_settings(spy, tmp_path):
    """One function maps flags to settings: the same flag gives the same setting in every command
    that takes it, and `--limit` is the limit of what the command reads (train or test split)."""
    data = tmp_path / "in.jsonl"
    data.write_text("")
    given = {"--task": "last_letter", "--method": "cot", "--curator": "usc", "--trainer": "full",
             "--model": "m1", "--backend": "scripted", "--seed": "7", "--n": "3"}
    setting = {"--task": ("task", "last_letter"), "--method": ("method", "cot"), "--curator": ("curator", "usc"),
               "--trainer": ("trainer", "full"), "--model": ("model", "m1"), "--backend": ("backend", "scripted"),
               "--seed": ("seed", 7), "--n": ("n", 3)}
    required = {("generate",): ["--out", str(tmp_path / "o.jsonl"), "--limit", "5"],
                ("eval",): ["--limit", "6"],
                ("curate",): ["--traces", str(data), "--out", str(tmp_path / "c.jsonl")],
                ("train",): ["--data", str(data), "--out-dir", str(tmp_path / "t")],
                ("distill",): ["--train-limit", "5", "--eval-limit", "6"],
                ("plan",): [], ("show-prompts",): [], ("config", "show"): []}
    for path, cmd in _commands():
        if path not in required:
            continue
        takes = {p.opts[0] for p in cmd.params if isinstance(p, click.Option)}
        args = [*path, *required[path]]
        for opt, value in given.items():
            if opt in takes:
                args += [opt, value]
        spy.clear()
        res = CliRunner().invoke(cli, args)
        assert isinstance(res.exception, Resolved), (path, res.output, res.exception)
        (_, flags), = spy
        for opt in given:
            if opt in takes:
                key, value = setting[opt]
                assert flags[key] == value, (path, opt, flags)
        if "--limit" in required[path] or "--train-limit" in required[path]:
            assert flags.get("train_limit", 5) == 5 and flags.get("eval_limit", 6) == 6, (path, flags)
    assert not set(required) - {p for p, _ in _commands()}


def test_flag_settings_is_the_mapping():
    assert flag_settings({"task_name": "t", "limit": 4, "index": 2}, "generate") == {"task": "t", "train_limit": 4}
    assert flag_settings({"task_name": "t", "limit": 4}, "eval") == {"task": "t", "eval_limit": 4}
    assert flag_settings({"model": "m", "n": 2, "seed": 1}, "generate", only=("model", "seed")) == {"model": "m",
                                                                                                    "seed": 1}


def test_shared_flags_are_declared_once():
    """A command's --task, --model, --seed, --cache, ... is the one declared in FLAGS (name, type,
    default), whatever help text the command adds. Two are their own: show-prompts' --split (the
    document's split, not the setting `split`) and reproduce's --scale (small or paper)."""
    first = {decls[0].split("/")[0]: (name, decls, attrs) for name, (decls, attrs) in FLAGS.items()}
    checked = 0
    for path, cmd in _commands():
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.opts[0] not in first:
                continue
            if (path, p.opts[0]) in ((("show-prompts",), "--split"), (("reproduce",), "--scale")):
                continue
            name, decls, attrs = first[p.opts[0]]
            shared = click.Option(list(decls), **{k: v for k, v in attrs.items() if k != "help"})
            assert (p.name, type(p.type), p.default, p.multiple, p.is_flag) == (
                shared.name, type(shared.type), shared.default, shared.multiple, shared.is_flag), (path, p.opts)
            checked += 1
    assert checked > 60


def test_settings_match_resolve(tmp_path):
    """What a command resolves is what s2d.config.resolve makes of the same flags."""
    ctx = click.Context(cli.commands["eval"], info_name="eval")
    ctx.params = {"task_name": "last_letter", "method": "cot", "limit": 3, "model": None, "seed": 2,
                  "config_path": None, "scale": None, "set_items": ("task_options.size=4",)}
    got = s2d.cli.run_settings(ctx)
    want = resolve("eval", set_items=["task_options.size=4"], require_task=False,
                   flags={"task": "last_letter", "method": "cot", "eval_limit": 3, "model": None, "seed": 2})
    assert got.settings == want.settings


# -- the work that moved below the CLI ---------------------------------------------------------------
def never():
    raise AssertionError("the engine started before the refusal")


def test_generate_requests_checks_every_line_before_the_engine(tmp_path):
    from s2d.traces import generate_requests

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no requests"):
        generate_requests(empty, tmp_path / "o.jsonl", model="smollm2-135m", seed=0, engine=never)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hi", "adapter": str(tmp_path)}) + "\n")
    with pytest.raises(ValueError, match="not a PEFT adapter folder"):
        generate_requests(bad, tmp_path / "o.jsonl", model="smollm2-135m", seed=0, engine=never)


def test_generate_requests_writes_the_completions(tmp_path):
    from s2d.backends import load_backend
    from s2d.traces import generate_requests

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Say hi", "id": "a"}) + "\n")
    out, said = tmp_path / "o.jsonl", []
    generate_requests(src, out, model="smollm2-135m", seed=3,
                      engine=lambda: load_backend("scripted", "smollm2-135m", seed=3), echo=said.append)
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert rec["id"] == "a" and rec["run_seed"] == 3 and rec["backend"] == "scripted" and rec["completions"]
    assert said and "1 requests" in said[0]


def test_evaluate_settings_refuses_before_the_engine(tmp_path):
    """`s2d eval`'s checks, below the CLI: an adapter that is no adapter, an unknown task, and a
    record path that is an input are refused before the engine starts."""
    from s2d.lmeval.run import evaluate_settings
    from s2d.plugins import get_plugins

    get_plugins()
    cfg = resolve("eval", set_items=["task_options.size=4"], require_task=False,
                  flags={"task": "last_letter", "backend": "scripted"})
    with pytest.raises(InputError, match="not a PEFT adapter folder"):
        evaluate_settings(cfg, never, adapter=str(tmp_path), results_dir=tmp_path / "eval")
    with pytest.raises(LookupError, match="unknown task 'nope'"):
        evaluate_settings(resolve("eval", require_task=False, flags={"task": "nope"}), never,
                          results_dir=tmp_path / "eval")
    with pytest.raises(ConfigError, match="method 'cot'"):
        evaluate_settings(resolve("eval", set_items=["method_options.nope=1", "task_options.size=4"],
                                  require_task=False, flags={"task": "last_letter", "method": "cot"}),
                          never, results_dir=tmp_path / "eval")


def test_stage_prompts_renders_without_an_engine(tiny_data):
    from s2d.plugins import get_plugins
    from s2d.stage_runs import stage_prompts

    get_plugins()
    cfg = resolve("show-prompts", set_items=["task_options.size=4"], flags={"task": "last_letter", "method": "cot"})
    shown = stage_prompts(cfg, "test", 0)
    assert shown and all(isinstance(p, str) and p for _, prompts in shown for p in prompts)
    with pytest.raises(InputError, match="--index 99: last_letter/test has"):
        stage_prompts(cfg, "test", 99)


def test_a_task_constructor_error_is_one_config_error(monkeypatch):
    """The CLI no longer converts plugin errors itself: a task whose constructor refuses a value
    is a ConfigError naming the task, made by plugins.build."""
    from s2d.lmeval.tasks import build_task
    from s2d.plugins import get_plugins

    cls = get_plugins().get("tasks", "last_letter").obj

    @functools.wraps(cls.__init__)  # the same signature: the same declared options
    def refuse(self, *args, **kwargs):
        raise ValueError("size too odd")

    monkeypatch.setattr(cls, "__init__", refuse)
    with pytest.raises(ConfigError, match=r"^task 'last_letter': size too odd$"):
        build_task("last_letter", strict=True, size=7)
