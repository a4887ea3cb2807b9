"""vLLM's engine arguments as the settings give them (no engine started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.llm import CPU_WORKER_CLASS, OMP_SPIN_COUNT, cpu_binding_env, engine_kwargs, serve_transport_env
from service.platform.images import MAX_IMAGE_BYTES
from service.platform.settings import (
    DEFAULT_BASE_MODEL,
    VISION_TEST_MODEL,
    Settings,
    SettingsError,
    load_settings,
)

MODELS = Path(__file__).resolve().parents[3] / "data" / "models"


def test_cpu_binding_pins_one_thread_per_core_that_spins_briefly() -> None:
    assert cpu_binding_env("auto", 8) == {}  # vLLM's own choice, one core kept free
    every = cpu_binding_env("all", 2)
    assert every["VLLM_CPU_OMP_THREADS_BIND"] == "0-1" and every["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert every["GOMP_SPINCOUNT"] == OMP_SPIN_COUNT and int(OMP_SPIN_COUNT) < 300_000  # libgomp's default
    assert cpu_binding_env("2-5", 8)["VLLM_CPU_OMP_THREADS_BIND"] == "2-5"


def test_cpu_defaults() -> None:
    kwargs = engine_kwargs(
        Settings(serving_dtype="float32"), DEFAULT_BASE_MODEL, str(MODELS / DEFAULT_BASE_MODEL)
    )
    assert kwargs["enable_lora"] and (kwargs["max_loras"], kwargs["max_lora_rank"]) == (4, 16)
    assert kwargs["dtype"] == "float32" and kwargs["kv_cache_memory_bytes"] == 1024**3
    assert kwargs["tool_call_parser"] == "hermes"
    assert "tensor_parallel_size" not in kwargs and "limit_mm_per_prompt" not in kwargs
    assert kwargs["worker_cls"] == CPU_WORKER_CLASS


def test_a_vision_base_limits_images_per_prompt() -> None:
    settings = Settings(serving_max_images_per_prompt=2)
    kwargs = engine_kwargs(settings, VISION_TEST_MODEL, str(MODELS / VISION_TEST_MODEL))
    assert kwargs["limit_mm_per_prompt"] == {"image": 2}


def test_gpu_profile_tensor_parallel_and_memory() -> None:
    settings = Settings(
        serving_gpu=True, serving_tensor_parallel_size=2, serving_tool_parsers={"big": "llama3_json"}
    )
    kwargs = engine_kwargs(settings, "big", str(MODELS / DEFAULT_BASE_MODEL))
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["dtype"] == "bfloat16"
    assert "kv_cache_memory_bytes" not in kwargs  # vLLM's share of GPU memory instead
    assert kwargs["tool_call_parser"] == "llama3_json"
    assert "worker_cls" not in kwargs  # vLLM's own for the platform


def test_tensor_parallel_needs_gpus() -> None:
    with pytest.raises(SettingsError, match="TENSOR_PARALLEL_SIZE above 1 needs TUNESERVE_SERVING_GPU"):
        load_settings(serving_tensor_parallel_size=2)


def test_the_transport_to_the_engines_carries_the_largest_request() -> None:
    # gRPC's default message limit is 4 MB; a chat may carry its body and ten 10 MB images as base64.
    settings = Settings(max_request_bytes=64 * 1024**2, serving_max_images_per_prompt=10)
    limit = int(serve_transport_env(settings)["RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"])
    assert limit >= 64 * 1024**2 + 10 * MAX_IMAGE_BYTES * 4 // 3
    huge = Settings(max_request_bytes=2**40)
    assert (
        int(serve_transport_env(huge)["RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"]) == 2**31 - 1
    )  # gRPC's most


@pytest.mark.parametrize(("setting", "ray_limit"), [("512", 512), ("0", -1)])
def test_the_queue_limit_reaches_the_deployment(setting: str, ray_limit: int) -> None:
    from deploy.llm import llm_config

    store = {"s3_endpoint_url": "http://s3.example", "s3_access_key_id": "k", "s3_secret_access_key": "s"}
    settings = Settings(serving_max_queued_requests=setting, serving_max_concurrent_requests=8, **store)
    config = llm_config(settings, DEFAULT_BASE_MODEL, str(MODELS / DEFAULT_BASE_MODEL)).deployment_config
    assert config["max_queued_requests"] == ray_limit and config["max_ongoing_requests"] == 16


def test_a_base_model_is_served_at_most_at_its_own_context_length(tmp_path: Path) -> None:
    """The 4,096 served by default, but 2,048 for a model that takes no more (vLLM refused the setting, and
    the stack did not start), as vLLM derives it: a vision-language model's is its language model's, the
    smallest of the keys, RoPE's factor unless the length is scaled already, the tokenizer's limit."""
    import json

    def folder(name: str, config: dict) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))

    configs = {
        "short": {"max_position_embeddings": 2048},
        "vlm": {"vision_config": {}, "text_config": {"max_position_embeddings": 1024}},
        "gpt2": {"n_positions": 1024},
        "linear": {"max_position_embeddings": 2048, "rope_scaling": {"type": "linear", "factor": 4}},
        "yarn": {"max_position_embeddings": 2048, "rope_scaling": {"rope_type": "yarn", "factor": 4}},
        "tokenizer": {"max_position_embeddings": 8192},
    }
    for name, config in configs.items():
        folder(name, config)
    (tmp_path / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 3000}))
    default = Settings()
    expected = {"short": 2048, "vlm": 1024, "gpt2": 1024, "linear": 4096, "yarn": 2048, "tokenizer": 3000}
    for name, length in expected.items():
        assert engine_kwargs(default, name, str(tmp_path / name))["max_model_len"] == length, name
    short = str(tmp_path / "short")
    assert engine_kwargs(Settings(serving_max_model_len=512), "short", short)["max_model_len"] == 512
    smollm2 = engine_kwargs(default, DEFAULT_BASE_MODEL, str(MODELS / DEFAULT_BASE_MODEL))
    assert smollm2["max_model_len"] == 4096  # its 8,192 capped by the setting
