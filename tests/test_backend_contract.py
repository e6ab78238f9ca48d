"""Fast checks of the backend contract and `s2d generate` input handling (no model)."""

import json

import pytest
from click.testing import CliRunner

from s2d.backends.base import Request, cut_at_stop, sample_seed
from s2d.backends.scripted import ScriptedBackend
from s2d.cli import cli
from s2d.files import InputError, atomic_write, read_jsonl


def test_request_validation_names_the_field():
    with pytest.raises(ValueError, match="exactly one of 'messages' or 'prompt'"):
        Request()
    with pytest.raises(ValueError, match="'n' must be a positive integer"):
        Request(prompt="x", n=0)
    with pytest.raises(ValueError, match="unknown field"):
        Request.from_dict({"prompt": "x", "temprature": 0.5})
    with pytest.raises(ValueError, match="'messages' must be"):
        Request(messages=[{"role": "user"}])
    assert Request(prompt="x", stop="\n").stop == ["\n"]


def test_sample_seeds_depend_on_identity_not_batch_position():
    r = Request(prompt="a", id="q1", temperature=1.0)
    assert sample_seed(0, r, 0, 0) == sample_seed(0, r, 17, 0)  # an id beats the position
    assert sample_seed(0, r, 0, 0) != sample_seed(1, r, 0, 0)
    assert sample_seed(0, r, 0, 0) != sample_seed(0, r, 0, 1)
    assert sample_seed(0, Request(prompt="a", seed=5), 0, 0) == 5


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("a, b. c", [".", ","]) == ("a", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


def test_scripted_backend_batches_and_cycles_samples():
    b = ScriptedBackend(script={"France": ["Paris", "Lyon"], "*": "dunno. really"})
    outs = b.generate([Request(prompt="capital of France?", n=3, temperature=1),
                       Request(messages=[{"role": "user", "content": "hi"}], stop=["."])])
    assert [c.text for c in outs[0]] == ["Paris", "Lyon", "Paris"]
    assert outs[1][0].text == "dunno" and outs[1][0].finish_reason == "stop"
    assert len(b.calls) == 1 and len(b.calls[0]) == 2  # one call for the whole batch


def test_read_jsonl_reports_file_and_line(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"prompt": "ok"}\n\n{"prompt": \n')
    with pytest.raises(InputError, match=r"in.jsonl:3: not valid JSON"):
        read_jsonl(f)
    f.write_text('{"prompt": "ok"}\n{"prompt": "x", "n": -1}\n')
    with pytest.raises(InputError, match=r"in.jsonl:2: 'n' must be a positive integer"):
        read_jsonl(f, Request.from_dict)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]
    with atomic_write(target) as f:
        f.write("new\n")
    assert target.read_text() == "new\n" and target.stat().st_mode & 0o044  # readable like a plain write


def test_generate_rejects_a_bad_line_before_loading_a_model(tmp_path):
    src = tmp_path / "prompts.jsonl"
    src.write_text('{"prompt": "fine"}\n{"messages": "not a list"}\n')
    result = CliRunner().invoke(cli, ["generate", "--backend", "hf", "--model", "/nonexistent/model",
                                      "--input", str(src), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1
    assert "prompts.jsonl:2: 'messages' must be" in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_generate_with_scripted_backend_writes_records(tmp_path):
    src = tmp_path / "prompts.jsonl"
    src.write_text('{"prompt": "one two three", "id": "a"}\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(cli, ["generate", "--backend", "scripted", "--input", str(src), "--out", str(out),
                                      "--n", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["a", 1]
    assert recs[0]["completions"][0]["text"] == "one two three" and len(recs[0]["completions"]) == 2
    assert recs[0]["request"]["temperature"] == 0.7 and recs[0]["backend"] == "scripted"
    assert recs[0]["versions"]["s2d"] and recs[0]["completion_tokens"] == 6


def test_unknown_backend_is_a_clear_error(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text('{"prompt": "x"}\n')
    result = CliRunner().invoke(cli, ["generate", "--backend", "nope", "--input", str(src), "--out",
                                      str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1 and "unknown backend 'nope'" in result.output
