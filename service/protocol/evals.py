"""Request and response shapes of OpenAI's Evals API (`/v1/evals`, runs, output items), plus this product's
extensions: built-in suites, grader types beyond OpenAI's, retrieval in a run, progress, comparisons."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.protocol.chat import StoredCompletionsFilter
from service.protocol.common import Metadata
from service.protocol.vector_stores import RetrievalOptions

GRADERS_DOC = (
    "Graders: OpenAI's `string_check` (eq, ne, like, ilike; plus normalized_eq, regex), `text_similarity` "
    "(fuzzy_match, bleu, gleu, cosine, rouge_1..rouge_5, rouge_l), `label_model`, `score_model`; and this "
    "product's `json_check` (JSON validity, optional `schema`), `multiple_choice` (log-likelihood), "
    "`token_loss` (mean token loss / perplexity of the reply in `item.messages`), `retrieval` (hit rate or "
    "recall@k of gold files among the run's citations). Templates: `{{item.x}}`, `{{sample.output_text}}`."
)


class CustomDataSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["custom"]
    item_schema: dict[str, Any] = Field(description="JSON schema of one item.")
    include_sample_schema: bool = False


class StoredCompletionsDataSourceConfig(BaseModel):
    """An eval of stored chat completions (`store: true`): each item is a stored chat's `input` (its
    messages), `completion_id` and `metadata`; its sample is the stored answer."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["stored_completions"]
    metadata: Metadata | None = Field(
        None, description="Recorded with the eval (runs choose what they read)."
    )


class EvalCreate(BaseModel):
    name: str | None = Field(None, max_length=256)
    data_source_config: CustomDataSourceConfig | StoredCompletionsDataSourceConfig | None = Field(
        None, discriminator="type", description="Required unless `suite` is given (the suite's own is used)."
    )
    testing_criteria: list[dict[str, Any]] | None = Field(
        None, max_length=32, description=GRADERS_DOC + " Required unless `suite` is given."
    )
    metadata: Metadata | None = None
    suite: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Extension: make the eval from a built-in suite (`GET /v1/evals/suites`); runs may then "
        "leave out `source` and `input_messages`.",
    )

    @model_validator(mode="after")
    def _complete(self) -> EvalCreate:
        if self.suite is None and (self.data_source_config is None or not self.testing_criteria):
            raise ValueError("data_source_config and testing_criteria are required (or name a suite)")
        return self


class EvalUpdate(BaseModel):
    # Left out: unchanged; null is refused (an eval always has a name).
    name: str = Field(None, min_length=1, max_length=256)
    metadata: Metadata | None = None


class Eval(BaseModel):
    id: str
    object: Literal["eval"] = "eval"
    name: str
    data_source_config: dict[str, Any]
    testing_criteria: list[dict[str, Any]]
    created_at: int
    metadata: dict[str, str] | None = None
    suite: str | None = None


class EvalDeleted(BaseModel):
    object: Literal["eval.deleted"] = "eval.deleted"
    deleted: bool = True
    eval_id: str


class FileContentSource(BaseModel):
    type: Literal["file_content"]
    content: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)


class FileIdSource(BaseModel):
    type: Literal["file_id"]
    id: str


class StoredCompletionsSource(StoredCompletionsFilter):
    """The tenant's stored chat completions as items (oldest first): to grade their stored answers (a
    `jsonl` data source), or to ask another model the same (a `completions` one, `input_messages`
    `item_reference` `item.input`)."""

    type: Literal["stored_completions"]


class TemplateMessages(BaseModel):
    type: Literal["template"]
    template: list[dict[str, Any]] = Field(min_length=1)


class ItemReferenceMessages(BaseModel):
    type: Literal["item_reference"]
    item_reference: str = Field(pattern=r"^item(\.\w+)+$")


class CompletionsDataSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["completions"]
    model: str
    source: FileContentSource | FileIdSource | StoredCompletionsSource | None = Field(
        None, discriminator="type", description="Items; may be left out for an eval made from a suite."
    )
    input_messages: TemplateMessages | ItemReferenceMessages | None = Field(None, discriminator="type")
    sampling_params: dict[str, Any] | None = Field(
        None, description="temperature, top_p, seed, max_completion_tokens, response_format, ..."
    )
    retrieval: RetrievalOptions | None = Field(
        None, description="Extension: answer with retrieval from these vector stores (RAG evals)."
    )


class JsonlDataSource(BaseModel):
    """Items that bring their own `sample` (graded as they are; no model is called for samples)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["jsonl"]
    source: FileContentSource | FileIdSource | StoredCompletionsSource = Field(discriminator="type")
    model: str | None = Field(None, description="Model for log-likelihood graders, if any.")


class RunCreate(BaseModel):
    name: str | None = Field(None, max_length=256)
    data_source: CompletionsDataSource | JsonlDataSource = Field(discriminator="type")
    metadata: Metadata | None = None


class ResultCounts(BaseModel):
    total: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0


class CriterionResult(BaseModel):
    testing_criteria: str
    passed: int
    failed: int
    errored: int = 0
    mean_score: float | None = Field(None, description="Extension: the grader's mean score.")


class ModelUsage(BaseModel):
    model_name: str
    invocation_count: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0


class Progress(BaseModel):
    completed: int
    total: int


class RunError(BaseModel):
    code: str
    message: str


class Run(BaseModel):
    id: str
    object: Literal["eval.run"] = "eval.run"
    eval_id: str
    name: str
    model: str
    status: Literal["queued", "in_progress", "completed", "failed", "canceled"]
    created_at: int
    data_source: dict[str, Any]
    result_counts: ResultCounts
    per_testing_criteria_results: list[CriterionResult]
    per_model_usage: list[ModelUsage]
    report_url: str
    error: RunError | None = None
    metadata: dict[str, str] | None = None
    progress: Progress = Field(description="Extension: items done so far out of all.")
    fine_tuning_job_id: str | None = Field(None, description="Extension: the job that started this run.")


class RunDeleted(BaseModel):
    object: Literal["eval.run.deleted"] = "eval.run.deleted"
    deleted: bool = True
    run_id: str


class OutputItem(BaseModel):
    id: str
    object: Literal["eval.run.output_item"] = "eval.run.output_item"
    run_id: str
    eval_id: str
    created_at: int
    status: Literal["pass", "fail", "error"]
    datasource_item_id: int
    datasource_item: dict[str, Any]
    results: list[dict[str, Any]]
    sample: dict[str, Any]


class Suite(BaseModel):
    name: str
    object: Literal["eval.suite"] = "eval.suite"
    description: str
    source: str
    license: str
    items: int
    testing_criteria: list[dict[str, Any]]


class RunSummary(BaseModel):
    id: str
    model: str
    status: str
    result_counts: ResultCounts
    per_testing_criteria_results: list[CriterionResult]


class CriterionComparison(BaseModel):
    testing_criteria: str
    pass_rate: list[float | None] = Field(description="Per run, in the order of `runs`.")
    mean_score: list[float | None]


class ChangedItem(BaseModel):
    datasource_item_id: int
    datasource_item: dict[str, Any]
    status: list[str | None] = Field(description="Per run; None where the run has no such item.")
    output_text: list[str | None]


class Comparison(BaseModel):
    object: Literal["eval.comparison"] = "eval.comparison"
    eval_id: str
    runs: list[RunSummary]
    criteria: list[CriterionComparison]
    changed_items: list[ChangedItem] = Field(description="Items whose status differs between the runs.")
