"""Evaluation metrics, templates, graders and run totals: pure functions, with a fake scorer for the graders
that reach a model."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from evals import metrics, suites
from evals.graders import GRADERS, GradingError, template_problems
from evals.runner import RunSpec, evaluate_item, input_messages
from evals.summary import changed_items, criterion_results, empty_summary, fold
from evals.templates import TemplateError, render, render_messages


def grader(**spec):
    return GRADERS.validate_python([{"name": "g", **spec}])[0]


class FakeScorer:
    """Log-likelihood = minus the number of letters that are not in `liked`; fixed judge answers."""

    def __init__(self, liked: str = "", judge: str = "", reply: list[float] | None = None) -> None:
        self.liked, self.judge, self.reply = liked, judge, reply or [-1.0, -3.0]
        self.calls: list = []

    def chat(self, model: str, messages: list[dict], sampling: dict) -> str:
        self.calls.append((model, messages, sampling))
        return self.judge

    def continuation_logliks(self, context: str, continuations: list[str]) -> list[float]:
        return [-sum(ch not in self.liked for ch in c.strip()) for c in continuations]

    def reply_logprobs(self, messages: list[dict]) -> list[float]:
        return self.reply

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] if "cat" in t else [0.0, 1.0] for t in texts]


# Metrics ----------------------------------------------------------------------------------------------


def test_text_matching() -> None:
    assert metrics.normalize_text("  The Eiffel-Tower!  ") == "eiffeltower"
    assert metrics.normalized_match("Paris.", "paris") and not metrics.exact_match("Paris.", "Paris")
    assert metrics.contains("It is Paris.", "Paris") and not metrics.contains("paris", "Paris")
    assert metrics.contains("paris", "PARIS", case_sensitive=False)
    assert metrics.regex_match("order #123", r"#\d+") and not metrics.regex_match("order", r"#\d+")


def test_overlap_scores_order_candidates_as_expected() -> None:
    ref = "the cat sat on the mat"
    assert metrics.rouge(ref, ref) == pytest.approx(1.0)
    assert metrics.rouge("the cat sat", ref) > metrics.rouge("a dog ran", ref) == 0.0
    assert metrics.bleu(ref, ref) == pytest.approx(1.0)
    assert metrics.bleu("the cat sat on a mat", ref) > metrics.bleu("dogs bark loudly", ref)
    assert metrics.gleu(ref, ref) == pytest.approx(1.0)
    assert metrics.fuzzy_match("Paris", "Paris") == 1.0 and metrics.fuzzy_match("Paris", "Lima") < 0.5
    assert metrics.cosine([1, 0], [1, 0]) == 1.0 and metrics.cosine([1, 0], [0, 1]) == 0.0


def test_json_validity_and_schema() -> None:
    assert metrics.parse_json('{"a": 1}') == ({"a": 1}, None)
    assert metrics.parse_json('```json\n{"a": 1}\n```')[0] == {"a": 1}
    value, why = metrics.parse_json('{"a": }')
    assert value is None and "line 1 column 7" in why
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    assert metrics.schema_violation({"age": 3}, schema) is None
    assert metrics.schema_violation({"age": "x"}, schema) == "age: 'x' is not of type 'integer'"
    assert "'age' is a required property" in metrics.schema_violation({}, schema)


def test_choice_loss_and_retrieval_metrics() -> None:
    assert metrics.best_choice([-5.0, -2.0, -9.0]) == 1
    # Per character, the long choice wins: -6/12 > -2/2.
    assert metrics.best_choice([-6.0, -2.0], lengths=[12, 2]) == 0
    assert metrics.mean_token_loss([-1.0, -3.0]) == 2.0
    assert metrics.perplexity([-1.0, -3.0]) == pytest.approx(math.e**2)
    with pytest.raises(ValueError):
        metrics.mean_token_loss([])
    assert metrics.hit_at_k(["a", "b", "c"], ["c"], 3) and not metrics.hit_at_k(["a", "b", "c"], ["c"], 2)
    assert metrics.recall_at_k(["a", "b"], ["a", "z"], 2) == 0.5


def test_judge_answers_are_parsed() -> None:
    assert metrics.parse_score("Score: 7/10 because...", 0, 10) == 7  # the scale of a fraction is no score
    assert metrics.parse_score("I'd say 3 out of 5, maybe 4 / 5", 1, 5) == 4
    assert metrics.parse_score("Step 2: it earns 9", 0, 10) == 9  # the last number in range
    assert metrics.parse_score("I give it 0.8", 0, 1) == 0.8
    assert metrics.parse_score("no idea", 0, 1) is None
    assert metrics.parse_label("This is incorrect.", ["correct", "incorrect"]) == "incorrect"
    assert metrics.parse_label("Correct!", ["correct", "incorrect"]) == "correct"
    assert metrics.parse_label("maybe", ["yes", "no"]) is None
    assert metrics.parse_label("It is not known", ["yes", "no"]) is None  # "no" only inside words
    assert metrics.parse_label("No. Not at all", ["yes", "no"]) == "no"


# Templates --------------------------------------------------------------------------------------------


def test_templates_render_items_and_samples() -> None:
    ctx = {"item": {"q": "Why?", "choices": ["a", "b"], "meta": {"n": 2}}, "sample": {"output_text": "ok"}}
    assert render("{{item.q}} -> {{ sample.output_text }}", ctx) == "Why? -> ok"
    assert render("{{item.choices}}", ctx) == ["a", "b"]  # a whole reference keeps its type
    assert render("n={{item.meta.n}} {{item.choices.1}}", ctx) == "n=2 b"
    with pytest.raises(TemplateError, match="item.nope"):
        render("{{item.nope}}", ctx)
    messages = render_messages(
        [{"role": "user", "content": [{"type": "input_text", "text": "Q: {{item.q}}"}]}], ctx
    )
    assert messages == [{"role": "user", "content": [{"type": "text", "text": "Q: Why?"}]}]


def test_images_in_templates_come_from_the_item() -> None:
    ctx = {"item": {"picture": "data:image/png;base64,AAA", "file": "file-123"}}
    content = [
        {"type": "input_image", "image_url": "{{item.picture}}"},  # OpenAI's eval input part
        {"type": "image_url", "image_url": {"url": "{{item.file}}", "detail": "low"}},  # the chat API's
        {"type": "input_text", "text": "Colour?"},
    ]
    [message] = render_messages([{"role": "user", "content": content}], ctx)
    assert message["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
        {"type": "image_url", "image_url": {"url": "file-123", "detail": "low"}},
        {"type": "text", "text": "Colour?"},
    ]


def test_input_messages_template_or_item_reference() -> None:
    item = {"q": "Hi", "chat": [{"role": "user", "content": "Yo"}]}
    template = {"type": "template", "template": [{"role": "user", "content": "{{item.q}}!"}]}
    assert input_messages(template, item) == [{"role": "user", "content": "Hi!"}]
    assert input_messages({"type": "item_reference", "item_reference": "item.chat"}, item) == item["chat"]


# Graders ----------------------------------------------------------------------------------------------


def test_string_check_operations() -> None:
    item, sample = {"ref": "Paris"}, {"output_text": "It's paris."}
    passed = {
        op: grader(
            type="string_check", input="{{sample.output_text}}", reference="{{item.ref}}", operation=op
        ).grade(item, sample, FakeScorer())["passed"]
        for op in ("eq", "ne", "like", "ilike", "normalized_eq")
    }
    assert passed == {"eq": False, "ne": True, "like": False, "ilike": True, "normalized_eq": False}
    regex = grader(
        type="string_check", input="{{sample.output_text}}", reference=r"\bparis\b", operation="regex"
    )
    assert regex.grade(item, sample, FakeScorer())["passed"]


def test_text_similarity_thresholds_and_cosine() -> None:
    g = grader(
        type="text_similarity",
        input="{{sample.output_text}}",
        reference="{{item.ref}}",
        evaluation_metric="rouge_l",
        pass_threshold=0.5,
    )
    ok = g.grade({"ref": "the cat sat on the mat"}, {"output_text": "the cat sat on a mat"}, FakeScorer())
    bad = g.grade({"ref": "the cat sat on the mat"}, {"output_text": "dogs"}, FakeScorer())
    assert ok["passed"] and ok["score"] > 0.8 and not bad["passed"]
    cos = grader(
        type="text_similarity",
        input="{{sample.output_text}}",
        reference="{{item.ref}}",
        evaluation_metric="cosine",
        pass_threshold=0.9,
    )
    assert cos.grade({"ref": "a cat"}, {"output_text": "the cat"}, FakeScorer())["score"] == 1.0


def test_model_graders_parse_the_judge() -> None:
    judge_input = [{"role": "user", "content": "Is '{{sample.output_text}}' right for {{item.q}}?"}]
    label = grader(
        type="label_model",
        model="judge",
        input=judge_input,
        labels=["correct", "incorrect"],
        passing_labels=["correct"],
    )
    scorer = FakeScorer(judge="incorrect, sorry")
    result = label.grade({"q": "2+2"}, {"output_text": "5"}, scorer)
    assert not result["passed"] and result["sample"]["label"] == "incorrect"
    assert scorer.calls[0][1] == [{"role": "user", "content": "Is '5' right for 2+2?"}]
    score = grader(type="score_model", model="judge", input=judge_input, range=[1, 5], pass_threshold=4)
    assert score.grade({"q": "x"}, {"output_text": "y"}, FakeScorer(judge="4"))["passed"]
    with pytest.raises(GradingError, match="no score in") as err:
        score.grade({"q": "x"}, {"output_text": "y"}, FakeScorer(judge="great"))
    assert err.value.sample == {"output_text": "great"}  # what the judge said stays with the error


def test_json_check_reports_why() -> None:
    g = grader(type="json_check", schema={"type": "object", "required": ["answer"]})
    assert g.grade({}, {"output_text": '{"answer": 1}'}, FakeScorer())["passed"]
    result = g.grade({}, {"output_text": '{"other": 1}'}, FakeScorer())
    assert not result["passed"] and "'answer' is a required property" in result["reason"]


def test_multiple_choice_picks_the_most_likely_choice() -> None:
    g = grader(type="multiple_choice")
    item = {"question": "Sky?", "choices": ["blue", "green"], "answer": 0}
    assert g.grade(item, None, FakeScorer(liked="blue"))["passed"]
    assert not g.grade(item, None, FakeScorer(liked="gren"))["passed"]
    by_text = {**item, "answer": "green"}
    assert g.grade(by_text, None, FakeScorer(liked="gren"))["passed"]
    with pytest.raises(GradingError, match="neither an index"):
        g.grade({**item, "answer": 5}, None, FakeScorer())
    assert not g.needs_sample


def test_token_loss_and_retrieval_graders() -> None:
    loss = grader(type="token_loss", pass_threshold=1.5)
    chat = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    result = loss.grade(chat, None, FakeScorer(reply=[-1.0, -2.0]))
    assert result["score"] == 1.5 and result["passed"] and result["perplexity"] == pytest.approx(math.e**1.5)
    with pytest.raises(GradingError, match="ending with an assistant"):
        loss.grade({"messages": chat["messages"][:1]}, None, FakeScorer())
    hit = grader(type="retrieval", k=2)
    sample = {"citations": [{"filename": "a.txt", "file_id": "f1"}, {"filename": "b.txt", "file_id": "f2"}]}
    assert hit.grade({"gold_files": ["b.txt"]}, sample, FakeScorer())["passed"]
    assert not grader(type="retrieval", k=1).grade({"gold_files": "b.txt"}, sample, FakeScorer())["passed"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "string_check", "input": "x", "reference": "y", "operation": "same"}, "operation"),
        (
            {"type": "string_check", "input": "x", "reference": "(", "operation": "regex"},
            "regular expression",
        ),
        (
            {
                "type": "text_similarity",
                "input": "x",
                "reference": "y",
                "evaluation_metric": "meteor",
                "pass_threshold": 1,
            },
            "WordNet",
        ),
        (
            {
                "type": "label_model",
                "model": "m",
                "input": [{"role": "user", "content": "x"}],
                "labels": ["a", "b"],
                "passing_labels": ["c"],
            },
            "not among labels",
        ),
        (
            {
                "type": "score_model",
                "model": "m",
                "input": [{"role": "user", "content": "x"}],
                "range": [0, 1],
                "pass_threshold": 3,
            },
            "outside range",
        ),
        ({"type": "json_check", "schema": {"type": "nonsense"}}, "not a valid JSON schema"),
        ({"type": "token_loss", "pass_threshold": -1}, "greater than 0"),
    ],
)
def test_bad_grader_configs_are_refused(spec: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        grader(**spec)


def test_template_problems_name_the_reference() -> None:
    g = grader(type="string_check", input="{{sample.output}}", reference="{{item.capitol}}", operation="eq")
    problems = template_problems(g, {"capital"})
    assert any("'{{sample.output}}': the sample has output_text" in p for p in problems), problems
    assert any("the item schema has no property 'capitol'" in p for p in problems), problems
    assert template_problems(grader(type="multiple_choice"), {"question", "choices", "answer"}) == []


# Items and runs ---------------------------------------------------------------------------------------


def test_an_item_whose_model_call_fails_is_errored_and_others_pass() -> None:
    from evals.client import ModelCallError

    class Scorer(FakeScorer):
        def complete_chat(self, body: dict) -> dict:
            if "boom" in body["messages"][0]["content"]:
                raise ModelCallError(400, "prompt too long", "context_length_exceeded")
            return {
                "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {"total_tokens": 3},
            }

    spec = RunSpec(
        api_url="",
        api_key="",
        model="m",
        tokenizer_path="",
        testing_criteria=[],
        input_messages={"type": "template", "template": [{"role": "user", "content": "{{item.q}}"}]},
    )
    graders = GRADERS.validate_python(
        [
            {
                "type": "string_check",
                "name": "ok",
                "input": "{{sample.output_text}}",
                "reference": "ok",
                "operation": "eq",
            }
        ]
    )
    good = evaluate_item(spec, graders, Scorer(), 0, {"item": {"q": "hi"}})
    bad = evaluate_item(spec, graders, Scorer(), 1, {"item": {"q": "boom"}})
    assert good["status"] == "pass" and good["sample"]["output_text"] == "ok"
    assert bad["status"] == "error" and bad["sample"]["error"]["code"] == "context_length_exceeded"


def test_run_totals_fold_batches_and_compare() -> None:
    def item(status: str, passed: bool, score: float) -> dict:
        return {
            "status": status,
            "results": [{"name": "a", "passed": passed, "score": score}],
            "sample": {
                "model": "m",
                "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
            },
        }

    summary = empty_summary(["a"])
    summary = fold(summary, [item("pass", True, 1.0), item("fail", False, 0.0)])
    summary = fold(summary, [{"status": "error", "results": [], "sample": {"model": "m"}}])
    assert summary["result_counts"] == {"total": 3, "passed": 1, "failed": 1, "errored": 1}
    [a] = criterion_results(summary)
    assert (a["passed"], a["failed"], a["mean_score"]) == (1, 1, 0.5)
    assert summary["usage"]["m"] == {
        "invocation_count": 2,
        "prompt_tokens": 4,
        "completion_tokens": 2,
        "total_tokens": 6,
    }
    runs = [
        {0: {"status": "pass"}, 1: {"status": "fail"}},
        {0: {"status": "pass"}, 1: {"status": "pass"}, 2: {"status": "pass"}},
    ]
    assert changed_items(runs) == [1, 2]


def test_built_in_suites_are_complete_and_valid() -> None:
    import jsonschema

    assert {"world-capitals", "easy-choices", "json-answers"} <= set(suites.names())
    for name in suites.names():
        suite = suites.load(name)
        assert suite.source and suite.license and suite.description
        graders = GRADERS.validate_python(suite.testing_criteria)
        fields = set(suite.data_source_config["item_schema"]["properties"])
        assert all(template_problems(g, fields) == [] for g in graders)
        items = suite.items()
        assert len(items) >= 10
        for row in items:
            jsonschema.validate(row["item"], suite.data_source_config["item_schema"])
            if any(g.needs_sample for g in graders):
                assert input_messages(suite.input_messages, row["item"])


# Tool calls and pairwise preference ---------------------------------------------------------------------


def _calls(name: str, arguments: str) -> dict:
    return {
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}]
    }


def test_tool_call_grader_checks_function_schema_and_values() -> None:
    currency = {"type": "string", "enum": ["USD", "EUR", "JPY"]}
    schema = {
        "type": "object",
        "properties": {"amount": {"type": "number"}, "from": currency, "to": currency},
    }
    g = grader(type="tool_call", arguments="{{item.expected}}", arguments_schema=schema)
    item = {"function": "convert", "expected": {"amount": 30, "from": "JPY", "to": "EUR"}}
    scorer = FakeScorer()
    good = _calls("convert", '{"amount": 30, "from": "JPY", "to": "EUR"}')
    assert g.grade(item, good, scorer)["passed"]
    for sample, reason in [
        ({"tool_calls": []}, "no tool call"),
        (_calls("get_weather", '{"city": "Oslo"}'), "called 'get_weather', not 'convert'"),
        (_calls("convert", "{amount"), "not JSON"),
        (_calls("convert", '{"amount": 30, "from": "XYZ", "to": "EUR"}'), "XYZ"),  # not in the schema's enum
        (
            _calls("convert", '{"amount": 40, "from": "JPY", "to": "EUR"}'),
            "wrong or missing argument(s) ['amount']",
        ),
    ]:
        result = g.grade(item, sample, scorer)
        assert not result["passed"] and reason in result["reason"], result
    with pytest.raises(ValueError, match="arguments_schema is not a valid JSON schema"):
        grader(type="tool_call", arguments_schema={"type": 5})


def test_pairwise_by_criterion_wins_ties_and_losses() -> None:
    g = grader(
        type="pairwise",
        baseline_model="parent",
        criterion={
            "type": "string_check",
            "input": "{{sample.output_text}}",
            "reference": "-- Ada",
            "operation": "like",
        },
    )
    sample = {"input": [{"role": "user", "content": "q"}], "output_text": "yes\n\n-- Ada", "temperature": 0}
    for baseline, score in [("no", 1.0), ("fine -- Ada", 0.5)]:
        scorer = FakeScorer(judge=baseline)
        result = g.grade({}, sample, scorer)
        assert (result["score"], result["passed"], result["baseline_output_text"]) == (
            score,
            score == 1.0,
            baseline,
        )
        assert scorer.calls[0] == ("parent", sample["input"], {"temperature": 0})  # same input and sampling
    assert g.grade({}, {**sample, "output_text": "no"}, FakeScorer(judge="x -- Ada"))["score"] == 0.0


def test_pairwise_by_judge_and_its_validation() -> None:
    g = grader(
        type="pairwise",
        baseline_model="parent",
        judge={
            "model": "judge",
            "input": [{"role": "user", "content": "A: {{sample.output_text}} B: {{baseline.output_text}}"}],
        },
    )
    assert template_problems(g, None) == []
    scorer = FakeScorer(judge="A")
    assert g.grade({}, {"input": [], "output_text": "mine"}, scorer)["score"] == 1.0
    assert scorer.calls[-1][1][0]["content"] == "A: mine B: A"  # the judge saw both answers
    with pytest.raises(ValueError, match="either judge"):
        grader(type="pairwise", baseline_model="parent")
    with pytest.raises(ValueError, match="criterion must be a grader of one sample"):
        grader(type="pairwise", baseline_model="p", criterion={"type": "token_loss"})
