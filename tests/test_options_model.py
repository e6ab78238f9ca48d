"""One typed options model for every plugin kind (issue 28 item 2): `build(kind, name, options)`
checks options once and raises one ConfigError naming the plugin, the key and the allowed keys or
the expected type; plugins declare options as a light `Options` class, a pydantic model, or (the
shim) the old `options()` dict, which keeps working unchanged; the run settings are typed with a
help text each, printed by `s2d config show --help-settings`."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2d.cli import cli
from s2d.errors import ConfigError, MethodConfigError, TrainerError

PLUGINS = Path(__file__).parent.parent / "plugins"


def example(name: str, module: str):
    """An example plugin's module, loaded from plugins/ exactly as it ships."""
    spec = importlib.util.spec_from_file_location(module, PLUGINS / name / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def task(tiny_data):
    from s2d.plugins import get_plugins

    return get_plugins().get("tasks", "last_letter").obj(size=4)


def test_build_names_the_plugin_the_unknown_key_and_the_allowed_keys_for_every_kind(task):
    from s2d.plugins import build

    cases = [("methods", "cot", (task,), "method 'cot'", "shots, shots_resample"),
             ("curators", "majority", (task,), "curator 'majority'", "margin, target, threshold"),
             ("trainers", "lora", (), "trainer 'lora'", "alpha, batch_size"),
             ("tasks", "last_letter", (), "task 'last_letter'", "data_dir, seed, size")]
    for kind, name, args, plugin, allowed in cases:
        with pytest.raises(ConfigError) as err:
            build(kind, name, {"bogus_key": 1}, *args)
        message = str(err.value)
        assert message.startswith(plugin) and "unknown option(s) bogus_key" in message and allowed in message, message


def test_build_names_the_expected_type_and_range(task):
    from s2d.plugins import build

    with pytest.raises(ConfigError, match=r"curator 'majority': option 'threshold' must be float \(like its default 0.5\), got 'high'"):
        build("curators", "majority", {"threshold": "high"}, task)
    with pytest.raises(MethodConfigError, match="method 'cot': option 'shot_pool' must be int or null, got '4'"):
        build("methods", "cot", {"shot_pool": "4"}, task)
    with pytest.raises(TrainerError, match="trainer 'lora': option 'rank' must be int"):
        build("trainers", "lora", {"rank": True})  # a bool is not an int
    with pytest.raises(ConfigError, match="trainer 'stepwise': option 'epochs' must be >= 1, got 0"):
        build("trainers", "stepwise", {"epochs": 0})
    assert build("trainers", "stepwise", {"epochs": None}).epochs is None  # null: sized to the data
    assert build("curators", "majority", {"threshold": 0}, task).threshold == 0.0  # an int where a float goes
    assert isinstance(build("curators", "majority", {"threshold": 0}, task).threshold, float)


def test_builtins_declare_a_typed_options_model():
    """The built-in methods, curators and trainers declare `Options`; the model is pydantic's."""
    from pydantic import BaseModel

    from s2d.options import declaration, options_model
    from s2d.plugins import get_plugins

    for kind in ("methods", "curators", "trainers"):
        for entry in get_plugins().entries(kind):
            if not entry.plugin.startswith("s2d."):  # an installed third-party plugin
                continue
            decl = declaration(entry.obj)
            assert not isinstance(decl, dict), (kind, entry.name)  # not the shim
            model = options_model(entry.obj)
            assert issubclass(model, BaseModel) and model.model_config["extra"] == "forbid"
            assert set(model.model_fields) == set(entry.obj.options()), (kind, entry.name)
    fields = options_model(get_plugins().get("trainers", "lora").obj).model_fields
    assert fields["rank"].annotation is int and fields["rank"].default == 16 and fields["rank"].description


def test_the_shim_types_a_dict_declared_plugin_unchanged(task):
    """plugins/s2d-unanimous declares `options()` as a dict: it is checked by the same model."""
    from pydantic import BaseModel

    from s2d.options import options_model

    unanimous = example("s2d-unanimous", "s2d_unanimous").Unanimous
    model = options_model(unanimous)
    assert issubclass(model, BaseModel) and model.model_fields["min_samples"].annotation is int
    assert unanimous(task).min_samples == 2 and unanimous(task, min_samples=3).min_samples == 3
    with pytest.raises(ConfigError, match=r"curator 'unanimous': option 'min_samples' must be int \(like its default 2\), got '3'"):
        unanimous(task, min_samples="3")
    with pytest.raises(ConfigError, match="curator 'unanimous': unknown option.s. min_sample; options: min_samples"):
        unanimous(task, min_sample=3)


def test_the_shim_keeps_the_types_and_ranges_of_a_typed_parent():
    """A dict plugin over a built-in (`s2d new-plugin --kind trainer` writes one) keeps its types."""
    from s2d.trainers.lora import LoraTrainer

    class Small(LoraTrainer):
        name = "small"

        @classmethod
        def options(cls):
            return {**super().options(), "rank": 4, "epochs": 1, "note": None}

    assert Small().rank == 4 and Small(note=[1]).note == [1]  # a default of None takes anything
    with pytest.raises(TrainerError, match="trainer 'small': option 'rank' must be >= 1, got 0"):
        Small(rank=0)
    with pytest.raises(TrainerError, match="trainer 'small': option 'scheduler' must be one of linear"):
        Small(scheduler="sometimes")


def test_a_pydantic_options_model_is_taken_as_declared(task):
    """A plugin may declare `Options` as a pydantic model, in the style of simonw/llm."""
    from pydantic import BaseModel, ConfigDict, Field

    from s2d.curators import Curator

    class Picky(Curator):
        name = "picky"

        class Options(BaseModel):
            model_config = ConfigDict(extra="forbid")
            keep: int = Field(2, ge=1, description="how many to keep")

    assert Picky.options() == {"keep": 2} and Picky(task, keep=5).keep == 5
    with pytest.raises(ConfigError, match="curator 'picky': option 'keep' must be >= 1, got 0"):
        Picky(task, keep=0)
    with pytest.raises(ConfigError, match="curator 'picky': unknown option.s. kept; options: keep"):
        Picky(task, kept=1)


def test_help_settings_lists_every_run_setting_with_its_type_default_and_help():
    from s2d.config import DEFAULTS

    res = CliRunner().invoke(cli, ["config", "show", "--help-settings"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for key, default in DEFAULTS.items():
        [i] = [i for i, line in enumerate(lines) if line.startswith(f"{key}: ")]
        assert "[default: " in lines[i] and lines[i + 1].startswith("    ") and lines[i + 1].strip(), (key, lines[i:i + 2])
    assert "n: int, >= 1, <= 1000 [default: 8]" in lines
    assert "tensor_parallel_size" in res.output  # engine_options names its keys


def test_the_run_settings_model_holds_the_defaults_and_ranges():
    from s2d.config import DEFAULTS, RANGES, RunSettings
    from s2d.options import options_model

    model = options_model(RunSettings)
    assert set(model.model_fields) == set(DEFAULTS) and model.model_validate(DEFAULTS)
    assert RANGES["n"] == {"ge": 1, "le": 1000} and RANGES["top_p"] == {"gt": 0, "le": 1}
    with pytest.raises(Exception, match="less than or equal to 1000"):
        model.model_validate({"n": 1001})


def test_starting_the_cli_does_not_import_pydantic():
    """The built-ins' options are plain classes until checked: `s2d --help` pays no pydantic import."""
    code = ("import sys; from s2d.cli import cli\n"
            "try: cli(['--help'], standalone_mode=False)\n"
            "except SystemExit: pass\n"
            "print('PYDANTIC', 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "PYDANTIC False" in out
