"""The Batch API: a batch file is checked line by line (400s naming the line) at upload and creation; a
batch answers its requests through the chat and embedding services into an output file and an error file
(a refused request's error beside the others' answers); it is cancelled, stopped by expiry or a revoked key
at its next part with what it answered kept, resumed after a restart without answering twice, and another
tenant's batch does not exist."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.batches.lines import BatchFileError, count_requests, jsonl
from service.batches.runner import PART_SIZE, parts_prefix
from service.models.registry import ResolvedModel
from service.platform.auth import ADMIN_TENANT
from service.platform.db import BatchRow, Database
from service.platform.errors import ApiError
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, FakeEngine, MemoryStore, assert_openai_error, auth, offline_settings

CHAT = "/v1/chat/completions"


class AnsweringEngine(FakeEngine):
    """Answers a chat with its last message's text, after `delay` seconds."""

    def __init__(self, served: set[str], delay: float = 0.0) -> None:
        super().__init__(served)
        self.delay = delay

    async def generate(self, endpoint: str, model: ResolvedModel, body: dict) -> dict | AsyncIterator[str]:
        self.calls.append((endpoint, model, body))
        await asyncio.sleep(self.delay)
        text = f"echo: {body['messages'][-1]['content']}"
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        return {"object": "chat.completion", "model": model.id, "choices": [choice], "usage": usage}


def _request(custom_id: str, text: str, model: str = DEFAULT_BASE_MODEL, **extra: object) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def _upload(client: TestClient, lines: list[dict] | bytes, headers: dict | None = None) -> dict:
    data = lines if isinstance(lines, bytes) else jsonl(lines)
    files = {"file": ("requests.jsonl", io.BytesIO(data))}
    return client.post("/v1/files", files=files, data={"purpose": "batch"}, headers=headers)


def _batch(client: TestClient, file_id: str, headers: dict | None = None, **fields: object) -> dict:
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **fields}
    resp = client.post("/v1/batches", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _ended(client: TestClient, batch_id: str, headers: dict | None = None) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        batch = client.get(f"/v1/batches/{batch_id}", headers=headers).json()
        if batch["status"] in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not end: {batch}")


def _lines(client: TestClient, file_id: str | None, headers: dict | None = None) -> list[dict]:
    if file_id is None:
        return []
    content = client.get(f"/v1/files/{file_id}/content", headers=headers).content
    return [json.loads(line) for line in content.decode().splitlines()]


def _app(tmp_path: Path, engine: FakeEngine, store: MemoryStore | None = None, **settings: object):
    return create_app(offline_settings(tmp_path, **settings), store=store or MemoryStore(), engine=engine)


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"{not json", "line 2: invalid JSON"),
        (json.dumps(_request("a", "dup")).encode(), "line 2: custom_id 'a' is also on line 1"),
        (json.dumps({**_request("b", "x"), "method": "GET"}).encode(), 'line 2: method must be "POST"'),
        (json.dumps({**_request("b", "x"), "url": "/v1/embeddings"}).encode(), "differs from the batch's"),
        (json.dumps(_request("b", "x", stream=True)).encode(), "line 2: body.stream"),
        (json.dumps({**_request("b", "x"), "body": "hi"}).encode(), "line 2: body must be a JSON object"),
        (json.dumps({**_request("b", "x"), "extra": 1}).encode(), "line 2: unknown key(s) ['extra']"),
        (json.dumps({**_request("", "x")}).encode(), "line 2: custom_id must be a string"),
    ],
)
def test_a_bad_line_is_named(line: bytes, reason: str) -> None:
    with pytest.raises(BatchFileError, match=re.escape(reason)):
        count_requests(io.BytesIO(json.dumps(_request("a", "first")).encode() + b"\n" + line))


def test_a_file_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = json.dumps(_request("a", "first")).encode() + b"\n"
    monkeypatch.setattr("service.batches.lines.MAX_FILE_BYTES", len(line))
    assert count_requests(io.BytesIO(line)) == 1
    with pytest.raises(BatchFileError, match="at most"):
        count_requests(io.BytesIO(line + b"\n"))


def test_a_batch_answers_every_request_into_its_output_and_error_files(tmp_path: Path) -> None:
    engine = AnsweringEngine({DEFAULT_BASE_MODEL})
    with TestClient(_app(tmp_path, engine), headers=auth(ADMIN)) as client:
        requests = [_request(f"r{i}", f"question {i}") for i in range(3)]
        requests.append(_request("unknown", "x", model="no-such-model"))
        requests.append({**_request("bad", "x"), "body": {"model": DEFAULT_BASE_MODEL, "messages": "hi"}})
        upload = _upload(client, requests).json()
        created = _batch(client, upload["id"], metadata={"run": "nightly"})
        assert created["status"] == "validating" and created["request_counts"]["total"] == 5
        assert created["expires_at"] == created["created_at"] + 24 * 3600
        batch = _ended(client, created["id"])
        assert batch["status"] == "completed" and batch["metadata"] == {"run": "nightly"}
        assert batch["request_counts"] == {"total": 5, "completed": 3, "failed": 2}
        assert batch["usage"] == {"input_tokens": 15, "output_tokens": 9, "total_tokens": 24}
        assert batch["in_progress_at"] and batch["finalizing_at"] and batch["completed_at"]
        output = {line["custom_id"]: line for line in _lines(client, batch["output_file_id"])}
        assert sorted(output) == ["r0", "r1", "r2"]
        answer = output["r1"]["response"]
        assert answer["status_code"] == 200 and answer["body"]["choices"][0]["message"]["content"] == (
            "echo: question 1"
        )
        errors = {line["custom_id"]: line["response"] for line in _lines(client, batch["error_file_id"])}
        assert errors["unknown"]["status_code"] == 404
        assert errors["unknown"]["body"]["error"]["code"] == "model_not_found"
        assert errors["bad"]["status_code"] == 400 and errors["bad"]["body"]["error"]["param"] == "messages"
        # Counted in /metrics, a made-up model or a body that failed its schema under "-".
        metrics = client.get("/metrics").text
        for model, status, n in ((DEFAULT_BASE_MODEL, 200, 3), ("-", 404, 1), ("-", 400, 1)):
            series = f'tuneserve_requests_total{{endpoint="batch",model="{model}",status="{status}"'
            assert f'{series},tenant="{ADMIN_TENANT}"}} {n}.0' in metrics, metrics
        files = client.get("/v1/files", params={"purpose": "batch_output"}).json()["data"]
        assert {f["id"] for f in files} == {batch["output_file_id"], batch["error_file_id"]}
        listed = client.get("/v1/batches").json()
        assert [b["id"] for b in listed["data"]] == [batch["id"]] and listed["data"][0] == batch
        err = assert_openai_error(client.post(f"/v1/batches/{batch['id']}/cancel"), 409, "batch_not_active")
        assert "completed" in err["message"]


def test_a_file_that_cannot_run_is_refused_naming_the_line(tmp_path: Path) -> None:
    with TestClient(_app(tmp_path, AnsweringEngine({DEFAULT_BASE_MODEL})), headers=auth(ADMIN)) as client:
        bad = jsonl([_request("a", "x")]) + b'{"custom_id": "a"}\n'
        err = assert_openai_error(_upload(client, bad), 400, "invalid_file")
        assert "line 2" in err["message"] and err["param"] == "file"
        upload = _upload(client, [_request("a", "x")]).json()
        body = {"input_file_id": upload["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
        err = assert_openai_error(client.post("/v1/batches", json=body), 400, "invalid_file")
        assert "line 1: url '/v1/chat/completions' differs" in err["message"]
        assert err["param"] == "input_file_id"
        for fields, param in (
            ({"completion_window": "1h"}, "completion_window"),
            ({"endpoint": "/v1/images"}, "endpoint"),
        ):
            body = {"input_file_id": upload["id"], "endpoint": CHAT, "completion_window": "24h", **fields}
            assert assert_openai_error(client.post("/v1/batches", json=body), 400)["param"] == param
        training = client.post(
            "/v1/files",
            files={
                "file": (
                    "t.jsonl",
                    io.BytesIO(
                        b'{"messages": [{"role": "user", "content": "a"}, '
                        b'{"role": "assistant", "content": "b"}]}\n'
                    ),
                )
            },
            data={"purpose": "fine-tune"},
        ).json()
        body = {"input_file_id": training["id"], "endpoint": CHAT, "completion_window": "24h"}
        assert_openai_error(client.post("/v1/batches", json=body), 400, "invalid_file_purpose")
        assert client.get("/v1/batches").json()["data"] == []


def test_a_cancelled_batch_keeps_its_answers_and_lists_the_rest_as_cancelled(tmp_path: Path) -> None:
    engine = AnsweringEngine({DEFAULT_BASE_MODEL}, delay=0.02)
    with TestClient(_app(tmp_path, engine, batch_requests_in_flight=2), headers=auth(ADMIN)) as client:
        total = 3 * PART_SIZE
        upload = _upload(client, [_request(f"r{i}", str(i)) for i in range(total)]).json()
        created = _batch(client, upload["id"])
        while not engine.calls:
            time.sleep(0.01)
        # The input file may go: the batch still reads it.
        assert client.delete(f"/v1/files/{upload['id']}").status_code == 200
        cancelling = client.post(f"/v1/batches/{created['id']}/cancel").json()
        assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"]
        batch = _ended(client, created["id"])
        assert batch["status"] == "cancelled" and batch["cancelled_at"]
        output, errors = _lines(client, batch["output_file_id"]), _lines(client, batch["error_file_id"])
        assert 0 < len(output) < total and len(output) + len(errors) == total
        assert len(engine.calls) == len(output)  # nothing was asked after the part it was cancelled in
        assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
        assert batch["request_counts"] == {"total": total, "completed": len(output), "failed": len(errors)}


def test_a_running_batch_reads_its_requests_from_a_local_copy_as_it_starts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running batch holds a part of its requests in memory, not its file (up to 200 MB): it reads them
    from a local copy as it starts them, and the copy is gone once the batch has ended. Lines end at "\n"
    only, so a request whose text holds a raw U+2028 (a line break to `str.splitlines`) is one request,
    and so is its answer."""
    copies = tmp_path / "tmp"
    copies.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(copies))
    engine = AnsweringEngine({DEFAULT_BASE_MODEL}, delay=0.02)
    with TestClient(_app(tmp_path, engine, batch_requests_in_flight=2), headers=auth(ADMIN)) as client:
        total = 3 * PART_SIZE
        requests = [_request(f"r{i}", f"question {i}") for i in range(total)]
        requests[1] = _request("r1", "one\u2028two")
        created = _batch(client, _upload(client, jsonl(requests)).json()["id"])
        while not engine.calls:
            time.sleep(0.01)
        assert _open_files_in(copies) == 1
        batch = _ended(client, created["id"])
        assert batch["request_counts"] == {"total": total, "completed": total, "failed": 0}
        content = client.get(f"/v1/files/{batch['output_file_id']}/content").content.decode()
        output = {line["custom_id"]: line for line in map(json.loads, content.split("\n")[:-1])}
        assert output["r1"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: one\u2028two"
        assert _open_files_in(copies) == 0


def _open_files_in(folder: Path) -> int:
    """The files this process has open in `folder`, named or not (/proc lists a nameless temporary file
    under its folder)."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd).startswith(f"{folder}/")
    return count


@pytest.mark.parametrize("how", ["revoke the key", "pass the window"])
def test_a_revoked_key_or_the_end_of_the_window_stops_a_batch(tmp_path: Path, how: str) -> None:
    engine = AnsweringEngine({DEFAULT_BASE_MODEL}, delay=0.02)
    with TestClient(_app(tmp_path, engine, batch_requests_in_flight=2)) as client:
        created_key = client.post("/v1/admin/api_keys", json={"tenant": "acme"}, headers=auth(ADMIN)).json()
        tenant = auth(created_key["key"])
        upload = _upload(client, [_request(f"r{i}", str(i)) for i in range(3 * PART_SIZE)], tenant).json()
        created = _batch(client, upload["id"], tenant)
        while not engine.calls:
            time.sleep(0.01)
        services = client.app.state.services
        if how == "revoke the key":
            client.delete(f"/v1/admin/api_keys/{created_key['id']}", headers=auth(ADMIN))
            ending, code = "failed", "api_key_revoked"
        else:
            with services.db.session() as s:
                s.get(BatchRow, created["id"]).expires_at = int(time.time()) - 1
            ending, code = "expired", "batch_expired"
        deadline = time.monotonic() + 30
        while services.batches.get("acme", created["id"]).status != ending and time.monotonic() < deadline:
            time.sleep(0.05)
        batch = services.batches.to_api(services.batches.get("acme", created["id"])).model_dump()
        assert batch["status"] == ending and batch[f"{ending}_at"]
        if ending == "failed":
            assert batch["errors"]["data"][0]["code"] == "api_key_revoked"
        assert 0 < batch["request_counts"]["completed"] < 3 * PART_SIZE
        errors = services.store.get_bytes(services.files.get("acme", batch["error_file_id"]).key)
        assert {json.loads(line)["error"]["code"] for line in errors.decode().splitlines()} == {code}


def _crashed(
    tmp_path: Path,
    batch_id: str,
    status: str,
    file_id: str,
    key: str,
    total: int,
    completed: int,
    failed: int = 0,
) -> None:
    """A batch row as a crash leaves it (one part of answers written), in the app's database."""
    db = Database(offline_settings(tmp_path).resolved_database_url)
    with db.session() as s:
        s.add(
            BatchRow(
                id=batch_id,
                tenant_id=ADMIN_TENANT,
                endpoint=CHAT,
                input_file_id=file_id,
                input_key=key,
                completion_window="24h",
                status=status,
                request_counts={"total": total, "completed": completed, "failed": failed},
                usage={"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
                parts=1,
                expires_at=int(time.time()) + 3600,
            )
        )


def test_a_batch_resumes_after_a_restart_without_answering_twice(tmp_path: Path) -> None:
    store = MemoryStore()
    engine = AnsweringEngine({DEFAULT_BASE_MODEL})
    with TestClient(_app(tmp_path, engine, store), headers=auth(ADMIN)) as client:
        upload = _upload(client, [_request(f"r{i}", str(i)) for i in range(4)]).json()
        key = client.app.state.services.files.get(ADMIN_TENANT, upload["id"]).key
    # As a crash leaves it: in progress, its first request answered in a part.
    first = {"id": "batch_req_1", "custom_id": "r0", "error": None}
    first["response"] = {"status_code": 200, "request_id": "req_1", "body": {"answered": "before"}}
    _crashed(tmp_path, "batch_crashed", "in_progress", upload["id"], key, total=4, completed=1)
    store.put_bytes(f"{parts_prefix('batch_crashed')}part-000000.jsonl", jsonl([first]))
    engine = AnsweringEngine({DEFAULT_BASE_MODEL})
    with TestClient(_app(tmp_path, engine, store), headers=auth(ADMIN)) as client:
        batch = _ended(client, "batch_crashed")
        assert batch["status"] == "completed"
        assert batch["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
        output = {
            line["custom_id"]: line["response"]["body"] for line in _lines(client, batch["output_file_id"])
        }
        assert output["r0"] == {"answered": "before"} and sorted(output) == ["r0", "r1", "r2", "r3"]
        assert sorted(call[2]["messages"][0]["content"] for call in engine.calls) == ["1", "2", "3"]
        assert store.list(parts_prefix("batch_crashed")) == []


def test_a_batch_cut_off_while_making_its_files_makes_each_once(tmp_path: Path) -> None:
    store = MemoryStore()
    with TestClient(
        _app(tmp_path, AnsweringEngine({DEFAULT_BASE_MODEL}), store), headers=auth(ADMIN)
    ) as client:
        upload = _upload(client, [_request("r0", "0"), _request("r1", "1")]).json()
        files = client.app.state.services.files
        key = files.get(ADMIN_TENANT, upload["id"]).key
        # As a crash leaves it: finalizing, both answered (one refused), its output file made, no error file.
        ok = {"id": "batch_req_1", "custom_id": "r0", "error": None}
        ok["response"] = {"status_code": 200, "request_id": "req_1", "body": {"answered": "yes"}}
        refused = {"id": "batch_req_2", "custom_id": "r1", "error": None}
        refused["response"] = {"status_code": 400, "request_id": "req_2", "body": {"error": {"code": "x"}}}
        made = files.create(
            ADMIN_TENANT, "batch_cut_output.jsonl", "batch_output", jsonl([ok]), "application/jsonl"
        )
    _crashed(tmp_path, "batch_cut", "finalizing", upload["id"], key, total=2, completed=1, failed=1)
    store.put_bytes(f"{parts_prefix('batch_cut')}part-000000.jsonl", jsonl([ok, refused]))
    with TestClient(
        _app(tmp_path, AnsweringEngine({DEFAULT_BASE_MODEL}), store), headers=auth(ADMIN)
    ) as client:
        batch = _ended(client, "batch_cut")
        assert batch["status"] == "completed" and batch["output_file_id"] == made.id
        assert [line["custom_id"] for line in _lines(client, batch["error_file_id"])] == ["r1"]
        names = [
            f["filename"] for f in client.get("/v1/files", params={"purpose": "batch_output"}).json()["data"]
        ]
        assert sorted(names) == ["batch_cut_error.jsonl", "batch_cut_output.jsonl"]


def test_another_tenants_batch_does_not_exist(tmp_path: Path) -> None:
    with TestClient(_app(tmp_path, AnsweringEngine({DEFAULT_BASE_MODEL})), headers=auth(ADMIN)) as client:
        upload = _upload(client, [_request("a", "x")]).json()
        batch = _batch(client, upload["id"])
        other = auth(client.post("/v1/admin/api_keys", json={"tenant": "acme"}).json()["key"])
        assert_openai_error(client.get(f"/v1/batches/{batch['id']}", headers=other), 404, "batch_not_found")
        assert_openai_error(client.post(f"/v1/batches/{batch['id']}/cancel", headers=other), 404)
        assert client.get("/v1/batches", headers=other).json()["data"] == []
        body = {"input_file_id": upload["id"], "endpoint": CHAT, "completion_window": "24h"}
        assert_openai_error(client.post("/v1/batches", json=body, headers=other), 404, "file_not_found")
        _ended(client, batch["id"])


def test_a_tenant_has_at_most_its_limit_of_unfinished_batches(tmp_path: Path) -> None:
    engine = AnsweringEngine({DEFAULT_BASE_MODEL}, delay=0.05)
    app = _app(tmp_path, engine, max_active_batches_per_tenant=1, batch_requests_in_flight=1)
    with TestClient(app, headers=auth(ADMIN)) as client:
        upload = _upload(client, [_request(f"r{i}", str(i)) for i in range(PART_SIZE + 1)]).json()
        first = _batch(client, upload["id"])
        body = {"input_file_id": upload["id"], "endpoint": CHAT, "completion_window": "24h"}
        err = assert_openai_error(client.post("/v1/batches", json=body), 429, "quota_exceeded")
        assert "TUNESERVE_MAX_ACTIVE_BATCHES_PER_TENANT" in err["message"]
        client.post(f"/v1/batches/{first['id']}/cancel")
        _ended(client, first["id"])
        _batch(client, upload["id"])  # the finished one no longer counts


def test_a_batch_of_responses_requests_continues_and_stores_them(tmp_path: Path) -> None:
    engine = AnsweringEngine({DEFAULT_BASE_MODEL})
    with TestClient(_app(tmp_path, engine), headers=auth(ADMIN)) as client:
        earlier = client.post("/v1/responses", json={"model": DEFAULT_BASE_MODEL, "input": "My name is Ada."})
        lines = [
            {
                "custom_id": "next",
                "method": "POST",
                "url": "/v1/responses",
                "body": {
                    "model": DEFAULT_BASE_MODEL,
                    "input": "Who am I?",
                    "previous_response_id": earlier.json()["id"],
                },
            },
            {
                "custom_id": "unstored",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": DEFAULT_BASE_MODEL, "input": "Hi", "store": False},
            },
            {
                "custom_id": "gone",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": DEFAULT_BASE_MODEL, "input": "Hi", "previous_response_id": "resp_gone"},
            },
        ]
        upload = _upload(client, lines).json()
        created = _batch(client, upload["id"], endpoint="/v1/responses")
        batch = _ended(client, created["id"])
        assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        assert batch["usage"] == {"input_tokens": 10, "output_tokens": 6, "total_tokens": 16}
        output = {
            line["custom_id"]: line["response"]["body"] for line in _lines(client, batch["output_file_id"])
        }
        answer = output["next"]
        assert (
            answer["object"] == "response" and answer["output"][0]["content"][0]["text"] == "echo: Who am I?"
        )
        (continued,) = [
            c[2]["messages"] for c in engine.calls if c[2]["messages"][-1]["content"] == "Who am I?"
        ]
        assert [m["content"] for m in continued] == [
            "My name is Ada.",
            "echo: My name is Ada.",
            "Who am I?",
        ]
        assert client.get(f"/v1/responses/{answer['id']}").json() == answer  # stored, as over HTTP
        assert_openai_error(client.get(f"/v1/responses/{output['unstored']['id']}"), 404)
        (gone,) = _lines(client, batch["error_file_id"])
        assert gone["response"]["status_code"] == 404
        assert gone["response"]["body"]["error"]["param"] == "previous_response_id"


class BusyEngine(AnsweringEngine):
    """Has no room (a 503, as a full engine queue answers) for the first `busy` requests it is asked."""

    def __init__(self, served: set[str], busy: int) -> None:
        super().__init__(served)
        self.busy = busy

    async def generate(self, endpoint: str, model: ResolvedModel, body: dict) -> dict | AsyncIterator[str]:
        if self.busy > 0:
            self.busy -= 1
            raise ApiError(503, "The engine's queue is full; retry shortly.", code="engine_overloaded")
        return await super().generate(endpoint, model, body)


def test_a_request_the_engine_has_no_room_for_is_asked_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("service.batches.runner.RETRY_DELAYS_S", (0.01, 0.01))
    engine = BusyEngine({DEFAULT_BASE_MODEL}, busy=2)
    with TestClient(_app(tmp_path, engine, batch_requests_in_flight=1), headers=auth(ADMIN)) as client:
        batch = _ended(client, _batch(client, _upload(client, [_request("a", "x")]).json()["id"])["id"])
        assert batch["request_counts"] == {"total": 1, "completed": 1, "failed": 0}
        engine.busy = 3  # past the retries: the 503 is the answer
        batch = _ended(client, _batch(client, _upload(client, [_request("b", "x")]).json()["id"])["id"])
        (line,) = _lines(client, batch["error_file_id"])
        assert line["response"]["status_code"] == 503 and engine.busy == 0


class SlowFirstEngine(AnsweringEngine):
    """Takes a second over the chat whose message is "slow", no time over the others; notes when each
    chat started and ended."""

    def __init__(self, served: set[str]) -> None:
        super().__init__(served)
        self.spans: dict[str, tuple[float, float]] = {}

    async def generate(self, endpoint: str, model: ResolvedModel, body: dict) -> dict | AsyncIterator[str]:
        text, start = body["messages"][-1]["content"], time.monotonic()
        await asyncio.sleep(1.0 if text == "slow" else 0.0)
        answer = await super().generate(endpoint, model, body)
        self.spans[text] = (start, time.monotonic())
        return answer


def test_a_long_request_does_not_hold_back_the_requests_after_its_part(tmp_path: Path) -> None:
    engine = SlowFirstEngine({DEFAULT_BASE_MODEL})
    with TestClient(_app(tmp_path, engine, batch_requests_in_flight=2), headers=auth(ADMIN)) as client:
        requests = [_request("r0", "slow")] + [_request(f"r{i}", str(i)) for i in range(1, PART_SIZE + 16)]
        batch = _ended(client, _batch(client, _upload(client, requests).json()["id"])["id"])
        assert batch["request_counts"]["completed"] == PART_SIZE + 16
        # Requests of the next part took the free slot while the long one of the first part still ran.
        slow_end = engine.spans["slow"][1]
        assert engine.spans[str(PART_SIZE + 8)][0] < slow_end, "the next part waited for the long request"
