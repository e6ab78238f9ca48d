"""The plugin system: built-ins, loose-file plugins, broken-plugin isolation, tracing, and a real
installed distribution discovered through its entry point."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2d import hookspecs
from s2d.cli import cli
from s2d.plugins import DEFAULT_PLUGINS, KINDS, Plugins, PluginError

FIXTURES = Path(__file__).parent / "fixtures"
S2D = str(Path(sys.executable).with_name("s2d"))


def run_cli(*args, env=None):
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result


def test_every_hook_is_documented():
    specs = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(fn, "s2d_spec")]
    assert sorted(specs) == sorted(f"register_{k}" for k in KINDS)
    for name in specs:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert ":param register:" in doc and "Example::" in doc, f"{name} lacks argument docs or an example"


def test_builtins_load_through_the_manager():
    p = Plugins(load_entrypoints=False)
    p.pm.check_pending()  # every hookimpl matches a spec
    assert set(DEFAULT_PLUGINS) <= {r["name"] for r in p.plugin_rows()}
    assert {"hf", "vllm", "scripted"} <= {e.name for e in p.entries("backends")}
    assert all(r["error"] is None for r in p.plugin_rows())


def test_plugins_json_and_list_rows():
    out = json.loads(run_cli("plugins", "--json").output)
    hf = next(r for r in out if r["name"] == "s2d.backends.hf")
    assert hf["hooks"] == ["register_backends"] and hf["source"] == "builtin" and hf["version"]
    rows = json.loads(run_cli("list", "backends", "--json").output)
    assert {"name", "plugin", "description"} <= set(rows[0])
    assert next(r for r in rows if r["name"] == "hf")["plugin"] == "s2d.backends.hf"
    for kind in KINDS:
        assert run_cli("list", kind).exit_code == 0


def write(dirpath, name, text):
    (dirpath / name).write_text(text)


@pytest.fixture
def plugin_dir(tmp_path):
    write(tmp_path, "good.py", '''
import s2d
from s2d.backends.base import Backend

class Parrot(Backend):
    """Repeats things."""
    name = "parrot"

@s2d.hookimpl
def register_backends(register):
    register(Parrot)
''')
    write(tmp_path, "import_error.py", "import not_a_real_module_xyz\n")
    write(tmp_path, "raises.py", '''
import s2d
@s2d.hookimpl
def register_methods(register):
    raise RuntimeError("boom in hook")
''')
    write(tmp_path, "duplicate.py", '''
import s2d
class Fake:
    """Claims a taken name."""
    name = "hf"
@s2d.hookimpl
def register_backends(register):
    register(Fake)
''')
    return tmp_path


def test_broken_plugins_are_skipped_and_listed(plugin_dir):
    result = CliRunner().invoke(cli, ["--plugins-dir", str(plugin_dir), "plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["good"]["error"] is None and rows["good"]["source"] == "file"
    assert "ModuleNotFoundError" in rows["import_error"]["error"]
    assert "boom in hook" in rows["raises"]["error"]
    assert "duplicate backend name 'hf'" in rows["duplicate"]["error"]
    # Every other command still works, and the duplicate did not replace the built-in.
    listed = json.loads(CliRunner().invoke(cli, ["--plugins-dir", str(plugin_dir), "list", "backends",
                                                 "--json"]).stdout)
    by_name = {r["name"]: r for r in listed}
    assert by_name["parrot"]["plugin"] == "good" and by_name["hf"]["plugin"] == "s2d.backends.hf"
    assert CliRunner().invoke(cli, ["--plugins-dir", str(plugin_dir), "models"]).exit_code == 0


def test_strict_mode_makes_a_broken_plugin_fatal(plugin_dir, monkeypatch):
    monkeypatch.setenv("S2D_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="import_error"):
        Plugins(load_entrypoints=False, plugins_dir=plugin_dir)
    result = CliRunner().invoke(cli, ["--plugins-dir", str(plugin_dir), "plugins"])
    assert result.exit_code != 0 and "import_error" in result.output


def test_tracing_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("S2D_TRACE_PLUGINS", "1")
    Plugins(load_entrypoints=False)
    err = capsys.readouterr().err
    assert "s2d trace: register_backends" in err and "returned" in err


def test_missing_plugins_dir_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["--plugins-dir", str(tmp_path / "nope"), "plugins"])
    assert result.exit_code == 2 and "not a directory" in result.output


def test_cli_start_imports_no_heavy_library():
    code = ("import sys; from s2d.cli import cli\n"
            "for args in (['--help'], ['plugins'], ['list', 'backends'], ['models']):\n"
            "    try: cli(args, standalone_mode=False)\n"
            "    except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'vllm', 'peft', 'lm_eval', 'trl') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """Build and pip-install two real distributions that declare `s2d` entry points."""
    from conftest import pip_installed

    with pip_installed(tmp_path_factory.mktemp("site"), FIXTURES / "s2d-hello", FIXTURES / "s2d-broken"):
        yield


def s2d_cmd(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2D_") or k == "S2D_CACHE"}
    env.update(env_extra or {})
    return subprocess.run([S2D, *args], capture_output=True, text=True, env=env)


def test_installed_distribution_is_discovered(installed_plugins):
    out = s2d_cmd("plugins", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["hello"]["distribution"] == "s2d-hello" and rows["hello"]["version"] == "0.3.1"
    assert rows["hello"]["hooks"] == ["register_backends"] and rows["hello"]["error"] is None
    assert "s2d_this_dependency_does_not_exist" in rows["broken"]["error"]
    assert "skipping broken plugin 'broken'" in out.stderr
    backends = {r["name"]: r for r in json.loads(s2d_cmd("list", "backends", "--json").stdout)}
    assert backends["hello"]["plugin"] == "hello"
    # The broken plugin does not stop generation through another backend.
    assert s2d_cmd("list", "methods").returncode == 0


def test_load_plugins_env_selects_installed_plugins(installed_plugins):
    only = json.loads(s2d_cmd("plugins", "--json", env_extra={"S2D_LOAD_PLUGINS": "s2d-hello"}).stdout)
    names = {r["name"] for r in only}
    assert "hello" in names and "broken" not in names
    none = json.loads(s2d_cmd("plugins", "--json", env_extra={"S2D_LOAD_PLUGINS": ""}).stdout)
    assert {r["source"] for r in none} == {"builtin"}
    strict = s2d_cmd("plugins", env_extra={"S2D_STRICT_PLUGINS": "1"})
    assert strict.returncode != 0 and "broken" in strict.stderr


def test_every_hook_base_class_member_and_record_field_is_documented():
    """datasette's test_plugin_hooks_are_documented, for every kind: the docs must name each hook,
    each member a plugin implements or sets, and each field of the records plugins exchange."""
    import dataclasses

    from s2d.backends.base import Completion, Request
    from s2d.curators.base import Decision

    docs = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "s2d_spec")]
    members = {
        "method": ["name", "stages", "templates", "max_new_tokens", "run", "options", "answer", "question",
                   "answer_format", "render", "sampling", "sample_record"],
        "curator": ["curate", "completion", "needs_model", "options"],
        "task": ["docs", "system1_prompt", "extract", "question", "answer_format", "score", "metrics", "target",
                 "worked_example", "perturb", "unperturb_answer", "max_gen_toks", "lm_eval_name"],
        "trainer": ["train", "options", "overwrite"],
        "backend": ["generate", "available", "versions", "close"],
    }
    fields = ([f.name for f in dataclasses.fields(Decision)] + [f.name for f in dataclasses.fields(Request)]
              + [f.name for f in dataclasses.fields(Completion)]
              + ["id", "task", "method", "split", "model", "prompt", "samples", "perturbed", "reference",  # a trace
                 "response", "answer", "stages", "tokens", "total_tokens", "exemplars", "completion", "s2d"])
    missing = [n for n in hooks + [m for ms in members.values() for m in ms] + fields if f"`{n}" not in docs]
    assert not missing, f"docs/plugins.md does not mention: {missing}"
    for section in ("## 5. Curators", "## 6. Tasks", "## 7. Trainers", "## 8. Backends", "## When a plugin fails"):
        assert section in docs


def readme_flag_errors(text: str) -> tuple[list[str], int]:
    """(problems, flags checked) for every `s2d COMMAND ... --flag` snippet in ``text``."""
    import re

    import click

    problems, checked = [], 0
    for snippet in re.findall(r"`(s2d [^`]+)`", text):
        words = snippet.split()[1:]
        group, path = cli, []
        while words and isinstance(group, click.Group) and words[0] in group.commands:
            group = group.commands[words[0]]
            path.append(words.pop(0))
        if not path:
            continue
        known = {opt for p in group.params for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])\b", " ".join(words)):
            checked += 1
            if flag not in known:
                problems.append(f"`{snippet}` uses {flag}, which `s2d {' '.join(path)}` does not take")
    return problems, checked


def test_every_command_and_flag_in_the_readme_exists():
    """datasette's test_help_includes, turned around: each `s2d COMMAND ... --flag` the README shows
    is a real command taking that flag."""
    problems, checked = readme_flag_errors((Path(__file__).parent.parent / "README.md").read_text())
    assert not problems and checked > 20, problems
    assert readme_flag_errors("run `s2d eval --tasks x --no-such-flag`")[0]  # the check can fail


def test_task_caches_go_with_the_plugin_set(tiny_data):
    """What lm-eval's glue caches (task classes by name, tasks built) belongs to the plugin set it
    came from: after plugins.reset() a name means what the new set registers, and tasks are built
    anew (issue 28: both caches used to survive the reset)."""
    from s2d import plugins
    from s2d.lmeval.tasks import _task_class, build_task
    from s2d.tasks.last_letter import LastLetter

    first = build_task("last_letter")
    assert _task_class("last_letter") is LastLetter and build_task("last_letter") is first  # shared in one set

    class Other(LastLetter):
        """Another task under the same name."""

    plugins.reset()
    assert build_task("last_letter") is not first
    plugins.get_plugins().registry["tasks"]["last_letter"].obj = Other
    assert _task_class("last_letter") is Other
    assert isinstance(build_task("last_letter"), Other)
