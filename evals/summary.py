"""A run's running totals, folded from its output items batch by batch (pure), and comparisons of runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def empty_summary(criteria: Sequence[str]) -> dict:
    return {
        "result_counts": {"total": 0, "passed": 0, "failed": 0, "errored": 0},
        "criteria": {
            name: {"passed": 0, "failed": 0, "errored": 0, "score_sum": 0.0, "scored": 0} for name in criteria
        },
        "usage": {},
    }


def fold(summary: dict, items: Iterable[dict]) -> dict:
    """`summary` with `items` (output items: status, results, sample) added; the input is not changed."""
    out = {
        "result_counts": dict(summary["result_counts"]),
        "criteria": {k: dict(v) for k, v in summary["criteria"].items()},
        "usage": {k: dict(v) for k, v in summary["usage"].items()},
    }
    counts = out["result_counts"]
    for item in items:
        counts["total"] += 1
        counts[{"pass": "passed", "fail": "failed", "error": "errored"}[item["status"]]] += 1
        for result in item["results"]:
            c = out["criteria"].setdefault(
                result["name"], {"passed": 0, "failed": 0, "errored": 0, "score_sum": 0.0, "scored": 0}
            )
            if "error" in result:
                c["errored"] += 1
                continue
            c["passed" if result["passed"] else "failed"] += 1
            c["score_sum"] += float(result["score"])
            c["scored"] += 1
        usage = (item.get("sample") or {}).get("usage")
        if usage:
            u = out["usage"].setdefault(
                item["sample"].get("model") or "?",
                {"invocation_count": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            )
            u["invocation_count"] += 1
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                u[key] += int(usage.get(key) or 0)
    return out


def criterion_results(summary: dict) -> list[dict]:
    """OpenAI's per_testing_criteria_results, with this product's mean score."""
    return [
        {
            "testing_criteria": name,
            "passed": c["passed"],
            "failed": c["failed"],
            "errored": c["errored"],
            "mean_score": c["score_sum"] / c["scored"] if c["scored"] else None,
        }
        for name, c in summary["criteria"].items()
    ]


def pass_rate(c: dict) -> float | None:
    graded = c["passed"] + c["failed"]
    return c["passed"] / graded if graded else None


def changed_items(runs_items: Sequence[dict[int, dict]]) -> list[int]:
    """Indexes of the items whose status is not the same in every run (missing counts as different)."""
    indexes = sorted(set().union(*runs_items))
    return [i for i in indexes if len({(items.get(i) or {}).get("status") for items in runs_items}) > 1]
