"""Metrics as pure functions: text in, number (or verdict) out. Graders (evals.graders) put them together.

Text overlap uses the reference implementations (rouge-score, sacrebleu, NLTK's GLEU), imported where used.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import string
from collections.abc import Sequence
from typing import Any

from evals import user_patterns

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def exact_match(output: str, reference: str) -> bool:
    return output == reference


def normalized_match(output: str, reference: str) -> bool:
    return normalize_text(output) == normalize_text(reference)


def contains(output: str, reference: str, case_sensitive: bool = True) -> bool:
    if case_sensitive:
        return reference in output
    return reference.casefold() in output.casefold()


def regex_match(output: str, pattern: str) -> bool:
    return user_patterns.search(pattern, output)


def fuzzy_match(output: str, reference: str) -> float:
    """Similarity ratio of the two strings in [0, 1] (difflib's Ratcliff/Obershelp)."""
    return difflib.SequenceMatcher(None, output, reference).ratio()


def rouge(output: str, reference: str, variant: str = "rougeL") -> float:
    """ROUGE F1 (`rouge1`..`rouge5`, `rougeL`) with Porter stemming, in [0, 1]."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer([variant], use_stemmer=True)
    return scorer.score(reference, output)[variant].fmeasure


def bleu(output: str, reference: str) -> float:
    """sacreBLEU sentence BLEU (smoothed, as sacrebleu does by default for sentences), in [0, 1]."""
    import sacrebleu

    return sacrebleu.sentence_bleu(output, [reference]).score / 100


def gleu(output: str, reference: str) -> float:
    """Google-BLEU (Wu et al. 2016), NLTK's implementation, in [0, 1]."""
    from nltk.translate.gleu_score import sentence_gleu

    return sentence_gleu([reference.split()], output.split())


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def parse_json(text: str) -> tuple[Any, str | None]:
    """(value, None) when `text` is JSON (a ```json fence around it is allowed), else (None, why)."""
    stripped = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, flags=re.DOTALL)
    try:
        return json.loads(fence.group(1) if fence else stripped), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def schema_violation(value: Any, schema: dict) -> str | None:
    """None when `value` conforms to the JSON schema, else the first violation with its path."""
    errors = sorted(user_patterns.schema_validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return None
    where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
    return f"{where}: {errors[0].message}"


def best_choice(logliks: Sequence[float], lengths: Sequence[int] | None = None) -> int:
    """Index of the most likely choice; with `lengths` (characters), by log-likelihood per character
    (lm-eval-harness' `acc_norm`), so that longer choices are not penalised for their length."""
    if lengths is not None:
        logliks = [ll / max(n, 1) for ll, n in zip(logliks, lengths, strict=True)]
    return max(range(len(logliks)), key=lambda i: logliks[i])


def mean_token_loss(token_logprobs: Sequence[float]) -> float:
    """Mean negative log-likelihood per token (nats)."""
    if not token_logprobs:
        raise ValueError("no tokens to score")
    return -sum(token_logprobs) / len(token_logprobs)


def perplexity(token_logprobs: Sequence[float]) -> float:
    return math.exp(mean_token_loss(token_logprobs))


def hit_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> bool:
    """Whether any gold passage is among the first k retrieved."""
    return bool(set(retrieved[:k]) & set(gold))


def recall_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> float:
    """The share of gold passages among the first k retrieved."""
    if not gold:
        raise ValueError("no gold passages")
    return len(set(retrieved[:k]) & set(gold)) / len(set(gold))


def parse_score(text: str, low: float, high: float) -> float | None:
    """The judge's score: the last number in its answer within [low, high], or None. The scale of a fraction
    is not a score: "7/10" and "7 out of 10" are 7."""
    for match in reversed(re.findall(r"(?<![\d.])(?<!/)(?<!/ )(?<!out of )-?\d+(?:\.\d+)?", text)):
        value = float(match)
        if low <= value <= high:
            return value
    return None


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """The judge's label: the label its answer names first, as a word of its own ("no" is not in "not"),
    or None."""
    found = []
    for label in labels:
        match = re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text, flags=re.IGNORECASE)
        if match:
            found.append((match.start(), -len(label), label))
    return min(found)[2] if found else None
