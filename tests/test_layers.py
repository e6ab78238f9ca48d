"""s2d's modules import only downward through its layers (issue 28): the import contract in
pyproject.toml holds, and no module hides an import of another s2d module inside a function, where
it would keep a cycle or an upward import out of sight. Heavy third-party packages (torch,
transformers, vllm, peft, lm_eval, datasets, matplotlib) stay imported inside the functions that
use them, so `s2d --help` never loads them."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "s2d"
# The comment that allows a function-local import of an s2d module: it must say why it is needed.
NEEDED = "# local import needed:"


def test_the_import_contract_holds():
    """`lint-imports` (import-linter, the dev extra) keeps every contract in pyproject.toml: an
    upward import, a cycle across layers or an import between two plugin kinds breaks it."""
    script = Path(sys.executable).with_name("lint-imports")
    assert script.is_file(), "import-linter is missing: pip install -e '.[dev]'"
    res = subprocess.run([str(script), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not node.level:
        return [node.module or ""]
    base = module.split(".")[:len(module.split(".")) - node.level + is_package]
    return [".".join(base + ([node.module] if node.module else []))]


def local_s2d_imports() -> list[str]:
    """``file:line: import`` for each import of an s2d module inside a function body, unless its
    line carries the NEEDED comment with a reason."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        module = _module(path)
        for fn in ast.walk(ast.parse(source)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                targets = _targets(node, module, path.name == "__init__.py")
                if not any(t == "s2d" or t.startswith("s2d.") for t in targets):
                    continue
                line = lines[node.lineno - 1]
                reason = line.partition(NEEDED)[2].strip()
                if not reason:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()}")
    return sorted(set(found))


def test_no_function_imports_another_s2d_module():
    """s2d's own light modules are imported at the top of a module; a cycle cannot hide inside a
    function. An exception needs ``# local import needed: WHY`` on its line (there is none today)."""
    assert local_s2d_imports() == []


def test_the_scan_finds_a_hidden_import(tmp_path, monkeypatch):
    """The scan above sees an import in a method, and accepts one that says why it is needed."""
    pkg = tmp_path / "s2d"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("class A:\n    def f(self):\n        from s2d.high import g\n"
                                "        from . import high\n        import json\n")
    (pkg / "high.py").write_text(f"def g():\n    from s2d import low  {NEEDED} a plugin imports it lazily\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    assert local_s2d_imports() == ["s2d/low.py:3: from s2d.high import g", "s2d/low.py:4: from . import high"]
