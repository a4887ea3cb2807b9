"""Testing criteria: OpenAI's grader types (string_check, text_similarity, label_model, score_model) and
this product's own (json_check, multiple_choice, token_loss, retrieval), validated before anything runs and
applied to one item and its sample at a time.

Grading is pure apart from the `Scorer` it is given, which reaches the models (the run's model for
log-likelihoods, a judge model for model-graded criteria): evals.client.ApiScorer in a run, a fake in tests.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from evals import metrics, user_patterns
from evals.templates import NAMESPACES, references, render, render_messages
from service.protocol.sampling import check_sampling

SAMPLE_FIELDS = ("output_text", "output_json", "choices", "citations", "tool_calls")
ROUGE = {f"rouge_{n}": f"rouge{n}" for n in (1, 2, 3, 4, 5)} | {"rouge_l": "rougeL"}
# A judge answers greedily and briefly unless its grader says otherwise (a label or a score comes first).
JUDGE_SAMPLING = {"temperature": 0, "max_completion_tokens": 64}
SIMILARITY_METRICS = ("fuzzy_match", "bleu", "gleu", "cosine", *ROUGE)


class GradingError(Exception):
    """A grader could not grade this item (a judge's call failed, a template names a missing field);
    `sample` keeps what the judge said, if it said something."""

    def __init__(self, message: str, sample: dict | None = None) -> None:
        super().__init__(message)
        self.sample = sample


class Scorer(Protocol):
    def chat(self, model: str, messages: list[dict], sampling: dict) -> str:
        """A chat completion's text."""

    def continuation_logliks(self, context: str, continuations: list[str]) -> list[float]:
        """The run's model's log-likelihood of each continuation after `context`."""

    def reply_logprobs(self, messages: list[dict]) -> list[float]:
        """The run's model's log-probabilities of the last (assistant) message's tokens."""

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Sentence embeddings (for cosine similarity)."""


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]


class _Grader(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=256)

    # Whether grading needs the run's model to answer the item first.
    needs_sample: ClassVar[bool] = True

    def templates(self) -> list[str]:
        return [v for k, v in self if isinstance(v, str) and k not in ("name", "type", "model")]

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        raise NotImplementedError


class StringCheck(_Grader):
    """OpenAI's string check; `like`/`ilike` test that the input contains the reference (case-sensitive /
    not); this product adds `normalized_eq` (SQuAD normalisation) and `regex` (reference is a pattern)."""

    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike", "normalized_eq", "regex"]

    @model_validator(mode="after")
    def _pattern_compiles(self) -> StringCheck:
        if self.operation == "regex" and not references(self.reference):
            try:
                user_patterns.compile_pattern(self.reference)
            except user_patterns.PatternError as exc:
                raise ValueError(f"reference: {exc}") from None
        return self

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        output, ref = _text(self.input, item, sample), _text(self.reference, item, sample)
        passed = {
            "eq": lambda: metrics.exact_match(output, ref),
            "ne": lambda: not metrics.exact_match(output, ref),
            "like": lambda: metrics.contains(output, ref),
            "ilike": lambda: metrics.contains(output, ref, case_sensitive=False),
            "normalized_eq": lambda: metrics.normalized_match(output, ref),
            "regex": lambda: metrics.regex_match(output, ref),
        }[self.operation]()
        return _result(self, float(passed), passed)


class TextSimilarity(_Grader):
    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: str
    pass_threshold: float

    @model_validator(mode="after")
    def _known_metric(self) -> TextSimilarity:
        if self.evaluation_metric == "meteor":
            raise ValueError("evaluation_metric 'meteor' needs WordNet data that this stack does not ship")
        if self.evaluation_metric not in SIMILARITY_METRICS:
            raise ValueError(f"evaluation_metric must be one of {', '.join(SIMILARITY_METRICS)}")
        return self

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        output, ref = _text(self.input, item, sample), _text(self.reference, item, sample)
        m = self.evaluation_metric
        if m in ROUGE:
            score = metrics.rouge(output, ref, ROUGE[m])
        elif m == "cosine":
            score = metrics.cosine(*scorer.embed([output, ref]))
        else:
            score = {"fuzzy_match": metrics.fuzzy_match, "bleu": metrics.bleu, "gleu": metrics.gleu}[m](
                output, ref
            )
        return _result(self, score, score >= self.pass_threshold)


class _ModelGrader(_Grader):
    model: str
    input: list[Message] = Field(min_length=1)
    sampling_params: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _sampling_the_judge_takes(self) -> _ModelGrader:
        check_sampling(self.sampling_params or {}, "sampling_params")  # a SamplingError is a ValueError
        return self

    def templates(self) -> list[str]:
        return [
            t
            for m in self.input
            for t in (
                [m.content] if isinstance(m.content, str) else [str(p.get("text", "")) for p in m.content]
            )
        ]

    def _judge(self, item: dict, sample: dict | None, scorer: Scorer) -> str:
        messages = render_messages([m.model_dump() for m in self.input], _context(item, sample))
        return scorer.chat(self.model, messages, {**JUDGE_SAMPLING, **(self.sampling_params or {})})


class LabelModel(_ModelGrader):
    """A judge model answers with one of `labels`; the item passes when it is one of `passing_labels`."""

    type: Literal["label_model"]
    labels: list[str] = Field(min_length=2)
    passing_labels: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _passing_are_labels(self) -> LabelModel:
        unknown = [label for label in self.passing_labels if label not in self.labels]
        if unknown:
            raise ValueError(f"passing_labels {unknown} are not among labels {self.labels}")
        return self

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        answer = self._judge(item, sample, scorer)
        label = metrics.parse_label(answer, self.labels)
        if label is None:
            raise GradingError(
                f"the judge's answer names none of the labels {self.labels}", sample={"output_text": answer}
            )
        passed = label in self.passing_labels
        return _result(self, float(passed), passed, sample={"output_text": answer, "label": label})


class ScoreModel(_ModelGrader):
    """A judge model gives a number in `range`; the item passes at `pass_threshold` or above (default: the
    middle of the range)."""

    type: Literal["score_model"]
    range: tuple[float, float] = (0.0, 1.0)
    pass_threshold: float | None = None

    @model_validator(mode="after")
    def _threshold_in_range(self) -> ScoreModel:
        low, high = self.range
        if low >= high:
            raise ValueError(f"range must be [low, high] with low < high, got {list(self.range)}")
        if self.pass_threshold is not None and not low <= self.pass_threshold <= high:
            raise ValueError(f"pass_threshold {self.pass_threshold} is outside range {list(self.range)}")
        return self

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        answer = self._judge(item, sample, scorer)
        low, high = self.range
        score = metrics.parse_score(answer, low, high)
        if score is None:
            raise GradingError(
                f"the judge's answer has no score in [{low:g}, {high:g}]", sample={"output_text": answer}
            )
        threshold = self.pass_threshold if self.pass_threshold is not None else (low + high) / 2
        return _result(self, score, score >= threshold, sample={"output_text": answer})


class JsonCheck(_Grader):
    """The input parses as JSON and, with `schema`, conforms to that JSON schema."""

    type: Literal["json_check"]
    input: str = "{{sample.output_text}}"
    json_schema: dict[str, Any] | None = Field(None, alias="schema")

    @model_validator(mode="after")
    def _schema_is_valid(self) -> JsonCheck:
        return _check_schema_field(self, "json_schema", "schema")

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        value, why = metrics.parse_json(_text(self.input, item, sample))
        if why is None and self.json_schema is not None:
            why = metrics.schema_violation(value, self.json_schema)
        return _result(self, float(why is None), why is None, **({"reason": why} if why else {}))


class MultipleChoice(_Grader):
    """Multiple choice by log-likelihood (no sampling): the run's model scores each choice after `context`
    through /v1/completions (echo + logprobs); it passes when the most likely choice is `answer` (an index
    or the choice's text). `normalize` divides by the choice's length (lm-eval-harness' acc_norm)."""

    type: Literal["multiple_choice"]
    context: str = "{{item.question}}"
    choices: str = "{{item.choices}}"
    answer: str = "{{item.answer}}"
    normalize: bool = False
    needs_sample: ClassVar[bool] = False

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        ctx = _context(item, sample)
        choices, answer = _value(self.choices, ctx), _value(self.answer, ctx)
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise GradingError(f"'{self.choices}' must be a list of at least two strings")
        gold = answer if isinstance(answer, int) else choices.index(answer) if answer in choices else None
        if gold is None or not 0 <= gold < len(choices):
            raise GradingError(f"answer {answer!r} is neither an index of the choices nor one of them")
        context = _text(self.context, item, sample)
        logliks = scorer.continuation_logliks(context, [" " + c.lstrip() for c in choices])
        best = metrics.best_choice(logliks, [len(c) for c in choices] if self.normalize else None)
        return _result(self, float(best == gold), best == gold, choice=best, logliks=logliks)


class TokenLoss(_Grader):
    """Mean token loss (nats) of the run's model on the last assistant message of held-out chats, and its
    perplexity. Lower is better: with `pass_threshold`, an item passes when its loss is at most that."""

    type: Literal["token_loss"]
    messages: str = "{{item.messages}}"
    pass_threshold: float | None = Field(None, gt=0)
    needs_sample: ClassVar[bool] = False

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        messages = _value(self.messages, _context(item, sample))
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
            raise GradingError(f"'{self.messages}' must be chat messages ending with an assistant message")
        loss = metrics.mean_token_loss(scorer.reply_logprobs(messages))
        passed = self.pass_threshold is None or loss <= self.pass_threshold
        return _result(self, loss, passed, perplexity=metrics.perplexity([-loss]))


class Retrieval(_Grader):
    """RAG retrieval quality from the sample's citations (a run with `retrieval`): `hit_rate` passes when a
    gold file (by filename or file id) is among the first k citations; `recall` scores the share found."""

    type: Literal["retrieval"]
    reference: str = "{{item.gold_files}}"
    k: int = Field(5, ge=1, le=50)
    metric: Literal["hit_rate", "recall"] = "hit_rate"
    pass_threshold: float = Field(1.0, ge=0, le=1)

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        gold = _value(self.reference, _context(item, sample))
        gold = [gold] if isinstance(gold, str) else list(gold or [])
        citations = (sample or {}).get("citations") or []
        retrieved = [c["filename"] if c["filename"] in gold else c["file_id"] for c in citations]
        if self.metric == "hit_rate":
            hit = metrics.hit_at_k(retrieved, gold, self.k)
            return _result(self, float(hit), hit)
        score = metrics.recall_at_k(retrieved, gold, self.k)
        return _result(self, score, score >= self.pass_threshold)


class ToolCall(_Grader):
    """The sample calls a tool (run with `tools` in the sampling params): its first call names `function`
    and has arguments that are a JSON object, conform to `arguments_schema` if given, and hold every value
    of `arguments` if given (a template or an object: the expected values)."""

    type: Literal["tool_call"]
    input: str = "{{sample.tool_calls}}"
    function: str = "{{item.function}}"
    arguments: str | dict[str, Any] | None = None
    arguments_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_is_valid(self) -> ToolCall:
        return _check_schema_field(self, "arguments_schema")

    def templates(self) -> list[str]:
        return [t for t in (self.input, self.function, self.arguments) if isinstance(t, str)]

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        ctx = _context(item, sample)
        calls, function = _value(self.input, ctx), _value(self.function, ctx)
        if not calls:
            return _result(self, 0.0, False, reason="no tool call")
        fn = calls[0].get("function", {})
        if fn.get("name") != function:
            return _result(self, 0.0, False, reason=f"called {fn.get('name')!r}, not {function!r}")
        value, why = metrics.parse_json(fn.get("arguments") or "")
        if why is None and not isinstance(value, dict):
            why = "the arguments are not a JSON object"
        if why is None and self.arguments_schema is not None:
            why = metrics.schema_violation(value, self.arguments_schema)
        expected = _value(self.arguments, ctx) if isinstance(self.arguments, str) else self.arguments
        if why is None and expected is not None:
            wrong = sorted(k for k, v in dict(expected).items() if value.get(k) != v)
            why = f"wrong or missing argument(s) {wrong}" if wrong else None
        return _result(self, float(why is None), why is None, **({"reason": why} if why else {}))


class Pairwise(_Grader):
    """Pairwise preference of the run's model against `baseline_model` on the same input (a fine-tune
    against its parent, a DPO run against the SFT model it started from): the baseline answers the
    sample's input with the run's sampling, then either a judge model says which answer is better
    (`judge`: messages with {{sample.output_text}} and {{baseline.output_text}}, answered "A" (the run's)
    or "B"), or `criterion`, any other grader, scores both answers and the higher score wins. Score: 1 a
    win, 0.5 a tie, 0 a loss; an item passes when the run's model wins."""

    type: Literal["pairwise"]
    baseline_model: str = Field(min_length=1)
    judge: _PairwiseJudge | None = None
    criterion: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_way_to_decide(self) -> Pairwise:
        if (self.judge is None) == (self.criterion is None):
            raise ValueError("give either judge (a model and its messages) or criterion (a grader)")
        if self.criterion is not None:
            [inner] = GRADERS.validate_python([{"name": self.name, **self.criterion}])
            if inner.type == "pairwise" or not inner.needs_sample:
                raise ValueError("criterion must be a grader of one sample (string_check, json_check, ...)")
        return self

    def templates(self) -> list[str]:
        if self.judge is not None:
            return [t for m in self.judge.input for t in ([m.content] if isinstance(m.content, str) else [])]
        return self._criterion().templates()

    def _criterion(self) -> _Grader:
        return GRADERS.validate_python([{"name": self.name, **(self.criterion or {})}])[0]

    def grade(self, item: dict, sample: dict | None, scorer: Scorer) -> dict:
        sample = sample or {}
        sampling = {
            k: sample[k]
            for k in ("temperature", "max_completion_tokens", "top_p", "seed")
            if sample.get(k) is not None
        }
        baseline_text = scorer.chat(self.baseline_model, sample.get("input") or [], sampling)
        baseline = {"output_text": baseline_text, "output_json": metrics.parse_json(baseline_text)[0]}
        if self.judge is not None:
            context = {**_context(item, sample), "baseline": baseline}
            messages = render_messages([m.model_dump() for m in self.judge.input], context)
            verdict = scorer.chat(self.judge.model, messages, JUDGE_SAMPLING)
            label = metrics.parse_label(verdict, ["A", "B", "tie"])
            if label is None:
                raise GradingError("the judge's answer is none of A, B, tie", sample={"output_text": verdict})
            score = {"A": 1.0, "B": 0.0, "tie": 0.5}[label]
        else:
            criterion = self._criterion()
            mine = criterion.grade(item, sample, scorer)["score"]
            theirs = criterion.grade(item, {**sample, **baseline}, scorer)["score"]
            score = 1.0 if mine > theirs else 0.5 if mine == theirs else 0.0
        return _result(self, score, score == 1.0, baseline_output_text=baseline_text)


class _PairwiseJudge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    input: list[Message] = Field(min_length=1)


Pairwise.model_rebuild()


def _check_schema_field(grader: _Grader, field: str, label: str | None = None) -> _Grader:
    """The grader, if its JSON schema `field` (called `label` in requests) is valid (RE2 patterns only)."""
    schema, label = getattr(grader, field), label or field
    if schema is not None:
        import jsonschema

        try:
            user_patterns.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"{label} is not a valid JSON schema: {exc.message}") from None
        except user_patterns.PatternError as exc:
            raise ValueError(f"{label}: {exc}") from None
    return grader


Grader = Annotated[
    StringCheck
    | TextSimilarity
    | LabelModel
    | ScoreModel
    | JsonCheck
    | MultipleChoice
    | TokenLoss
    | Retrieval
    | ToolCall
    | Pairwise,
    Field(discriminator="type"),
]
# Validates a list of testing criteria into graders.
GRADERS = TypeAdapter(list[Grader])
GRADER_TYPES = (
    "string_check",
    "text_similarity",
    "label_model",
    "score_model",
    "json_check",
    "multiple_choice",
    "token_loss",
    "retrieval",
    "tool_call",
    "pairwise",
)


def template_problems(grader: _Grader, item_fields: set[str] | None) -> list[str]:
    """What is wrong with a grader's templates: unknown namespaces, sample fields, or item fields (when the
    item schema lists its properties)."""
    problems = []
    for template in grader.templates():
        for ref in references(template):
            namespace, _, rest = ref.partition(".")
            field = rest.split(".")[0]
            if namespace == "baseline" and grader.type == "pairwise":
                continue
            if namespace not in NAMESPACES:
                problems.append(f"'{{{{{ref}}}}}' must start with item. or sample.")
            elif namespace == "sample" and field not in SAMPLE_FIELDS:
                problems.append(f"'{{{{{ref}}}}}': the sample has {', '.join(SAMPLE_FIELDS)}")
            elif namespace == "item" and item_fields is not None and field not in item_fields:
                problems.append(f"'{{{{{ref}}}}}': the item schema has no property '{field}'")
    return problems


def _context(item: dict, sample: dict | None) -> dict:
    return {"item": item, "sample": sample or {}}


def _value(template: str, context: dict) -> Any:
    try:
        return render(template, context)
    except ValueError as exc:
        raise GradingError(str(exc)) from None


def _text(template: str, item: dict, sample: dict | None) -> str:
    value = _value(template, _context(item, sample))
    return value if isinstance(value, str) else "" if value is None else json.dumps(value)


def _result(grader: _Grader, score: float, passed: bool, **extra: Any) -> dict:
    return {"name": grader.name, "type": grader.type, "score": score, "passed": bool(passed), **extra}
