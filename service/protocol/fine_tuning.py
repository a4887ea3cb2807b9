"""Fine-tuning jobs: OpenAI's request and response shapes, plus this product's extensions, and the one
typed spec (`TrainingSpec`) that flows unchanged from the API edge to the Ray workers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.protocol.common import Metadata

Auto = Literal["auto"]
# Every linear layer of the language model (peft's "all-linear": attention and MLP, not the output head).
DEFAULT_TARGET_MODULES = ["all-linear"]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: Annotated[int, Field(ge=1, le=100)] | Auto = Field(
        "auto",
        description='Passes over the training data; a number is trained in full. "auto": enough for about '
        "120 steps (3 to 30; DPO about 20), and the run stops early once every step of two epochs in a row "
        "had a training loss below 0.01.",
    )
    batch_size: Annotated[int, Field(ge=1, le=1024)] | Auto = Field(
        "auto", description='Examples per optimizer step. "auto": about an eighth of the data, 1 to 8.'
    )
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Auto = Field(
        "auto", description='Scales the base learning rate of 1e-3 (LoRA). "auto": 1.'
    )


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters | None = None


class DpoHyperparameters(Hyperparameters):
    beta: Annotated[float, Field(gt=0, le=2)] | Auto = Field(
        "auto",
        description="How far the model may move from the reference (its starting point): higher keeps it "
        "closer. Default: 0.1.",
    )
    sft_weight: Annotated[float, Field(ge=0, le=10)] | Auto = Field(
        "auto",
        description="Extension: weight of the preferred answers' own likelihood in the loss (RPO; TRL's "
        '`loss_type=["sigmoid", "sft"]`), which keeps DPO from unlearning what both answers share. '
        "0 is plain DPO. Default: 1.",
    )


class DpoMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: DpoHyperparameters | None = None


METHODS = ("supervised", "dpo")


class Method(BaseModel):
    """OpenAI's method: supervised fine-tuning, or Direct Preference Optimization on preference pairs."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised", "dpo"] = "supervised"
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None

    @model_validator(mode="after")
    def _options_of_its_type(self) -> Method:
        for other in METHODS:
            if other != self.type and getattr(self, other) is not None:
                raise ValueError(f"method.{other} is given but method.type is {self.type!r}")
        return self

    @property
    def hyperparameters(self) -> Hyperparameters | None:
        options = getattr(self, self.type)
        return options.hyperparameters if options is not None else None


class LoraOptions(BaseModel):
    """Extension: the LoRA adapter to train."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, ge=1, le=256)
    alpha: int | None = Field(None, ge=1, le=1024, description="Default: 2 * r.")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        min_length=1,
        description="Module names (q_proj, v_proj, ...) or 'all-linear'; one name may be given as a string, "
        "as in peft's LoraConfig.",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DeepSpeedOptions(BaseModel):
    """Extension: DeepSpeed ZeRO stage (0 = plain data parallel)."""

    model_config = ConfigDict(extra="forbid")
    stage: Literal[0, 2, 3] = 2


class ResourceOptions(BaseModel):
    """Extension: how many Ray Train workers, and CPUs (threads) each owns.

    The default layout on CPU is two workers of one thread each: with one OpenMP thread per process no
    thread waits at another's barrier, which trains faster than one worker of two threads at equal cores
    (bench/RESULTS.md). With `use_gpu`, one worker (one GPU) with two CPUs."""

    model_config = ConfigDict(extra="forbid")
    num_workers: int = Field(2, ge=1, le=256, description="Default: 2 on CPU, 1 with use_gpu.")
    cpus_per_worker: int = Field(1, ge=1, le=256, description="Default: 1 on CPU, 2 with use_gpu.")
    use_gpu: bool = False

    @model_validator(mode="before")
    @classmethod
    def _gpu_layout(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("use_gpu"):
            data = {"num_workers": 1, "cpus_per_worker": 2, **data}
        return data


class JobEval(BaseModel):
    """An eval to run on the job's result and on its base model when the job succeeds."""

    model_config = ConfigDict(extra="forbid")
    eval_id: str
    data_source: dict[str, Any] | None = Field(
        None,
        description="A `completions` data source without `model` (source, input_messages, sampling_params); "
        "may be left out for an eval made from a built-in suite.",
    )


class WandbOptions(BaseModel):
    """OpenAI's Weights & Biases integration: where the job's run goes."""

    model_config = ConfigDict(extra="forbid")
    project: str = Field(min_length=1, max_length=128)
    name: str | None = Field(None, max_length=128, description="The run's display name; default: the job id.")
    entity: str | None = Field(None, max_length=128)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=50)


class WandbIntegration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["wandb"]
    wandb: WandbOptions


class MlflowOptions(BaseModel):
    """Extension: an MLflow run in the stack's tracking server (TUNESERVE_MLFLOW_TRACKING_URI; by default a
    file store under the data dir). The tracking URI is the operator's choice, not the job's."""

    model_config = ConfigDict(extra="forbid")
    experiment: str = Field("tuneserve", min_length=1, max_length=128)
    run_name: str | None = Field(None, max_length=128, description="Default: the job id.")
    tags: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=50
    )


class MlflowIntegration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["mlflow"]
    mlflow: MlflowOptions


Integration = Annotated[WandbIntegration | MlflowIntegration, Field(discriminator="type")]


class FineTuningJobCreate(BaseModel):
    """POST /v1/fine_tuning/jobs."""

    model_config = ConfigDict(extra="forbid")
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = Field(None, max_length=40, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: Metadata | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    integrations: list[Integration] = Field(
        default_factory=list,
        max_length=4,
        description="Experiment tracking: `wandb` (offline under the data dir unless the stack is set "
        "online) and, as an extension, `mlflow`: hyperparameters, step metrics and the adapter's location.",
    )
    # Extensions of this product.
    lora: LoraOptions = Field(default_factory=LoraOptions)
    deepspeed: DeepSpeedOptions = Field(default_factory=DeepSpeedOptions)
    resources: ResourceOptions = Field(default_factory=ResourceOptions)
    max_seq_length: int = Field(1024, ge=16, le=131072)
    evals: list[JobEval] = Field(
        default_factory=list,
        max_length=8,
        description="Evals to run automatically on the fine-tuned model and, for reference, on its base "
        "model; the results appear in the job's `evals` and in the model's manifest.",
    )


class ResolvedHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    beta: float | None = Field(None, description="DPO only.")
    sft_weight: float | None = Field(None, description="DPO only (extension).")


class TrainingSpec(BaseModel):
    """Everything a training run needs, resolved and validated once at the API edge."""

    job_id: str
    tenant: str
    base_model: str
    base_model_path: str
    fine_tuned_model: str
    training_file: str
    training_key: str
    training_sha256: str
    validation_file: str | None = None
    validation_key: str | None = None
    validation_sha256: str | None = None
    n_train_examples: int
    n_train_tokens: int
    hyperparameters: ResolvedHyperparameters
    # n_epochs was "auto": the run may stop before its last epoch once its loss has converged
    # (trainers.convergence).
    stop_when_converged: bool = False
    learning_rate: float
    seed: int
    lora: LoraOptions
    method: Literal["supervised", "dpo"] = "supervised"
    # Continued training: the fine-tuned model it starts from, and where that model's adapter is.
    parent_model: str | None = None
    parent_adapter_prefix: str | None = None
    deepspeed: DeepSpeedOptions
    resources: ResourceOptions
    max_seq_length: int
    adapter_prefix: str
    checkpoint_prefix: str
    integrations: list[Integration] = Field(default_factory=list)
    # A vision-language base model: the model's processor prepares the examples (images included), LoRA
    # goes on its language model. `image_files`: the images the data names (file ids, and URLs fetched when
    # the job was made) -> object key; `image_url_domains`: the domains whose URLs the data may name.
    vision: bool = False
    image_files: dict[str, str] = Field(default_factory=dict)
    image_url_domains: list[str] = Field(default_factory=list)


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    """OpenAI's fine_tuning.job object, plus the extensions it was created with."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: ResolvedHyperparameters
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: str
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[Integration] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    method: dict
    user_provided_suffix: str | None = None
    lora: LoraOptions
    deepspeed: DeepSpeedOptions
    resources: ResourceOptions
    max_seq_length: int
    evals: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extension: the evaluation runs the job asked for, with their results.",
    )


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"] = "info"
    message: str
    data: dict | None = None
    type: Literal["message", "metrics"] = "message"


class JobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict
    step_number: int


# An adapter folder's lineage (base, data, loss curve, and evaluation results added after it was published):
# it changes after the weights are written, so the folder's checksums leave it out.
ADAPTER_MANIFEST = "manifest.json"
JOB_CONTEXT_ENV = "TS_JOB_CONTEXT"


class TrackingSettings(BaseModel):
    """Where the experiment-tracking integrations write (the stack's settings)."""

    wandb_mode: Literal["offline", "online"] = "offline"
    wandb_dir: str
    mlflow_tracking_uri: str


# The database URL may carry a password (PostgreSQL); the S3 secret key is one.
SECRET_FIELDS = ("database_url", "s3_secret_access_key")
JOB_SECRETS_FILE_ENV = "TUNESERVE_JOB_SECRETS_FILE"


class JobContext(BaseModel):
    """What a training driver receives: the spec, and where to read and write. Its secrets (SECRET_FIELDS)
    travel apart from the rest: a Ray job's environment is readable by anyone who can see its dashboard."""

    spec: TrainingSpec
    database_url: str
    s3_endpoint_url: str | None
    s3_access_key_id: str | None
    s3_secret_access_key: str | None
    s3_region: str
    s3_bucket: str
    tracking: TrackingSettings
    capacity_wait_s: float = 300.0  # how long the run waits for its workers' resources before failing
    max_attempts: int = 3  # runs the job gets when the cluster interrupts them

    def secrets(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in SECRET_FIELDS}

    def without_secrets(self) -> JobContext:
        return self.model_copy(update=dict.fromkeys(SECRET_FIELDS, ""))
