"""The check that every API operation is called by some test (tests/route_coverage.py) can fail."""

from tests import route_coverage


def test_an_operation_without_calls_is_named_and_static_paths_win() -> None:
    every = route_coverage.operations()
    assert ("GET", "/v1/evals/{eval_id}") in every and ("GET", "/v1/evals/suites") in every
    calls = {(m, p.replace("{", "x").replace("}", "")) for m, p in every}
    assert route_coverage.uncovered(calls) == []
    calls.discard(("GET", "/v1/evals/xeval_id"))
    calls.add(("GET", "/v1/evals/suites"))  # reaches the suites, not an eval
    assert route_coverage.uncovered(calls) == ["GET /v1/evals/{eval_id}"]
