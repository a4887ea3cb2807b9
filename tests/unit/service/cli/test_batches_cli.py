"""`tuneserve batches ...` as a user runs it (conftest.py: the API over real HTTP, an echoing engine)."""

from __future__ import annotations

import json
from pathlib import Path

from service.platform.settings import DEFAULT_BASE_MODEL


def _line(custom_id: str, model: str = DEFAULT_BASE_MODEL) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def test_a_batch_is_run_followed_and_its_answers_saved(cli, tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(_line("a") + "\n" + _line("b", model="no-such-model") + "\n")
    code, out, err = cli("batches", "run", str(requests))
    assert code == 0, err
    assert out.splitlines()[0].startswith("created batch_") and "2 requests" in out
    summary = json.loads(out[out.index("{") :])
    assert summary["status"] == "completed" and summary["request_counts"]["failed"] == 1
    answers = [json.loads(x) for x in (tmp_path / "requests.output.jsonl").read_text().splitlines()]
    errors = [json.loads(x) for x in (tmp_path / "requests.output.errors.jsonl").read_text().splitlines()]
    assert [a["custom_id"] for a in answers] == ["a"] and answers[0]["response"]["status_code"] == 200
    assert [e["custom_id"] for e in errors] == ["b"] and errors[0]["response"]["status_code"] == 404

    code, out, _ = cli("batches", "list")
    assert code == 0 and summary["id"] in [b["id"] for b in json.loads(out)]
    code, _, err = cli("batches", "cancel", summary["id"])
    assert code == 1 and "already completed" in err


def test_a_file_that_cannot_run_is_refused_naming_the_line(cli, tmp_path: Path) -> None:
    requests = tmp_path / "bad.jsonl"
    requests.write_text(_line("a") + "\n" + _line("a") + "\n")
    code, _, err = cli("batches", "run", str(requests))
    assert code == 1 and "line 2" in err and "custom_id 'a'" in err
    code, _, err = cli("batches", "run", str(tmp_path / "nowhere.jsonl"))
    assert code == 1 and "no such file" in err
