"""Running evals in the API process with a fake task runner (no model, no Ray): batches, totals, cancel,
and a run that resumes after a restart with only the items it had not finished."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.platform.db import EvalRunRow
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, FakeEngine, MemoryStore, auth, offline_settings

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
EVAL = {
    "data_source_config": {"type": "custom", "item_schema": SCHEMA},
    "testing_criteria": [
        {
            "type": "string_check",
            "name": "even",
            "input": "{{sample.output_text}}",
            "reference": "even",
            "operation": "eq",
        }
    ],
}


class FakeTasks:
    """Grades an item `pass` when its n is even; after `hang_after` batches, never answers again. With a
    `gate`, each batch says it started (`started`) and waits for the gate to open."""

    def __init__(self, hang_after: int | None = None, gate: threading.Event | None = None) -> None:
        self.hang_after = hang_after
        self.gate = gate
        self.started = threading.Event()
        self.seen: list[int] = []

    async def run(self, fn, spec, batch, cpus: float = 1):
        if self.hang_after is not None and len(self.seen) >= self.hang_after * len(batch):
            await asyncio.Event().wait()
        self.seen += [i for i, _ in batch]
        if self.gate is not None:
            self.started.set()
            await asyncio.to_thread(self.gate.wait)
        return [
            {
                "datasource_item_id": i,
                "datasource_item": row["item"],
                "sample": {"model": spec.model, "output_text": "x", "usage": {"total_tokens": 1}},
                "results": [
                    {
                        "name": "even",
                        "type": "string_check",
                        "score": 1.0,
                        "passed": row["item"]["n"] % 2 == 0,
                    }
                ],
                "status": "pass" if row["item"]["n"] % 2 == 0 else "fail",
            }
            for i, row in batch
        ]


def make_client(tmp_path: Path, store: MemoryStore, tasks: FakeTasks) -> TestClient:
    app = create_app(
        offline_settings(tmp_path, eval_batch_size=2, eval_concurrency=2),
        engine=FakeEngine({DEFAULT_BASE_MODEL}),
        tasks=tasks,
        store=store,
    )
    return TestClient(app)


def run_body(n: int) -> dict:
    content = [{"item": {"n": i}} for i in range(n)]
    template = {"type": "template", "template": [{"role": "user", "content": "{{item.n}}"}]}
    return {
        "data_source": {
            "type": "completions",
            "model": DEFAULT_BASE_MODEL,
            "input_messages": template,
            "source": {"type": "file_content", "content": content},
        }
    }


def wait(client: TestClient, path: str, until: Callable[[dict], bool], timeout: float = 30) -> dict:
    """The run once `until(run)` holds; fails when it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not until(run := client.get(path, headers=auth(ADMIN)).json()):
        assert time.monotonic() < deadline, f"still {run}"
        time.sleep(0.02)
    return run


def test_a_run_grades_every_item_in_batches(tmp_path: Path) -> None:
    tasks = FakeTasks()
    with make_client(tmp_path, MemoryStore(), tasks) as client:
        ev = client.post("/v1/evals", json=EVAL, headers=auth(ADMIN)).json()
        run = client.post(f"/v1/evals/{ev['id']}/runs", json=run_body(7), headers=auth(ADMIN)).json()
        assert run["status"] == "queued" and run["progress"] == {"completed": 0, "total": 7}
        path = f"/v1/evals/{ev['id']}/runs/{run['id']}"
        run = wait(client, path, lambda r: r["status"] == "completed")
        items = client.get(path + "/output_items", params={"limit": 100}, headers=auth(ADMIN)).json()["data"]
        one = client.get(f"{path}/output_items/{items[3]['id']}", headers=auth(ADMIN)).json()
        missing = client.get(f"{path}/output_items/outputitem_nope", headers=auth(ADMIN))
    assert one == items[3] and one["datasource_item"] == {"n": 3} and one["status"] == "fail"
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "output_item_id"
    assert sorted(tasks.seen) == list(range(7))
    assert run["result_counts"] == {"total": 7, "passed": 4, "failed": 3, "errored": 0}
    assert run["per_testing_criteria_results"][0]["mean_score"] == 1.0
    assert run["per_model_usage"][0]["invocation_count"] == 7


def test_a_run_reads_its_items_from_an_uploaded_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    """The file starts with a byte order mark, and a string holds a raw U+2028: JSON allows it, and JSONL's
    lines end at "\n" only (str.splitlines would cut that line in two)."""
    tasks = FakeTasks()
    lines = "\ufeff" + "\n".join(f'{{"item": {{"n": {n}, "s": "one\u2028two"}}}}' for n in range(3))
    with make_client(tmp_path, MemoryStore(), tasks) as client:
        ev = client.post("/v1/evals", json=EVAL, headers=auth(ADMIN)).json()
        file = client.post(
            "/v1/files",
            data={"purpose": "evals"},
            files={"file": ("items.jsonl", lines.encode())},
            headers=auth(ADMIN),
        ).json()
        body = run_body(0)
        body["data_source"]["source"] = {"type": "file_id", "id": file["id"]}
        run = client.post(f"/v1/evals/{ev['id']}/runs", json=body, headers=auth(ADMIN)).json()
        run = wait(client, f"/v1/evals/{ev['id']}/runs/{run['id']}", lambda r: r["status"] == "completed")
    assert run["result_counts"]["total"] == 3 and sorted(tasks.seen) == [0, 1, 2]


def test_a_run_resumes_after_a_restart_with_what_is_left(tmp_path: Path) -> None:
    store = MemoryStore()
    first = FakeTasks(hang_after=1)  # one batch of 2, then the process "dies"
    with make_client(tmp_path, store, first) as client:
        ev = client.post("/v1/evals", json=EVAL, headers=auth(ADMIN)).json()
        run = client.post(f"/v1/evals/{ev['id']}/runs", json=run_body(6), headers=auth(ADMIN)).json()
        path = f"/v1/evals/{ev['id']}/runs/{run['id']}"
        wait(client, path, lambda r: r["progress"]["completed"] == 2)
        keys = [k for k in client.app.state.services.keys.list() if k.name and k.name.startswith("eval-run:")]
        assert len(keys) == 1 and keys[0].revoked_at is None  # the run's key, live while it runs
    second = FakeTasks()
    with make_client(tmp_path, store, second) as client:
        run = wait(client, path, lambda r: r["status"] == "completed")
        keys = [k for k in client.app.state.services.keys.list() if k.name and k.name.startswith("eval-run:")]
    assert sorted(second.seen) == [2, 3, 4, 5]  # only what the first process had not stored
    assert run["result_counts"]["total"] == 6 and run["progress"] == {"completed": 6, "total": 6}
    assert all(k.revoked_at is not None for k in keys)  # the dead run's key and the finished run's


def test_cancel_stops_at_the_next_batch(tmp_path: Path) -> None:
    gate = threading.Event()
    tasks = FakeTasks(gate=gate)  # batches of 2, one at a time
    with make_client(tmp_path, MemoryStore(), tasks) as client:
        ev = client.post("/v1/evals", json=EVAL, headers=auth(ADMIN)).json()
        run = client.post(f"/v1/evals/{ev['id']}/runs", json=run_body(6), headers=auth(ADMIN)).json()
        path = f"/v1/evals/{ev['id']}/runs/{run['id']}"
        assert tasks.started.wait(10)  # the first batch is being evaluated
        assert client.post(path, headers=auth(ADMIN)).json()["status"] == "canceled"
        gate.set()
        # The batch in flight finishes, its items are dropped; no other batch starts, and the run's driver ends.
        runner = client.app.state.services.eval_runs
        deadline = time.monotonic() + 10
        while runner.background.driven:
            assert time.monotonic() < deadline, "the canceled run is still being driven"
            time.sleep(0.02)
        stopped = client.get(path, headers=auth(ADMIN)).json()
        assert tasks.seen == [0, 1] and stopped["status"] == "canceled"
        assert stopped["progress"]["completed"] == 0
        items = client.get(path + "/output_items", headers=auth(ADMIN)).json()["data"]
        assert items == []
        again = client.post(path + "/cancel", headers=auth(ADMIN))
        assert again.status_code == 409 and again.json()["error"]["code"] == "run_not_cancellable"
        assert client.delete(path, headers=auth(ADMIN)).json() == {
            "object": "eval.run.deleted",
            "deleted": True,
            "run_id": run["id"],
        }
        assert client.get(path, headers=auth(ADMIN)).status_code == 404


@pytest.mark.parametrize("model", ["no-such-model", f"{DEFAULT_BASE_MODEL}:someone-elses"])
def test_unknown_models_are_404_before_anything_is_queued(tmp_path: Path, model: str) -> None:
    with make_client(tmp_path, MemoryStore(), FakeTasks()) as client:
        ev = client.post("/v1/evals", json=EVAL, headers=auth(ADMIN)).json()
        body = run_body(2)
        body["data_source"]["model"] = model
        resp = client.post(f"/v1/evals/{ev['id']}/runs", json=body, headers=auth(ADMIN))
        assert resp.status_code == 404 and resp.json()["error"]["param"] == "data_source.model"
        assert client.get(f"/v1/evals/{ev['id']}/runs", headers=auth(ADMIN)).json()["data"] == []


def test_the_built_in_suites_are_listed_with_their_licences(tmp_path: Path) -> None:
    with make_client(tmp_path, MemoryStore(), FakeTasks()) as client:
        suites = client.get("/v1/evals/suites", headers=auth(ADMIN)).json()["data"]
    by_name = {s["name"]: s for s in suites}
    assert "world-capitals" in by_name
    assert all(s["license"] and s["source"] and s["items"] > 0 and s["testing_criteria"] for s in suites)


def test_two_runs_are_compared_item_by_item(tmp_path: Path) -> None:
    with make_client(tmp_path, MemoryStore(), FakeTasks()) as client:
        ev = client.post("/v1/evals", json=EVAL, headers=auth(ADMIN)).json()
        runs = []
        for shift in (0, 1):  # the second run's items are n+1: every item's result flips
            body = run_body(4)
            body["data_source"]["source"]["content"] = [{"item": {"n": i + shift}} for i in range(4)]
            run = client.post(f"/v1/evals/{ev['id']}/runs", json=body, headers=auth(ADMIN)).json()
            runs.append(
                wait(client, f"/v1/evals/{ev['id']}/runs/{run['id']}", lambda r: r["status"] == "completed")
            )
        params = {"run_ids": [r["id"] for r in runs]}
        cmp = client.get(f"/v1/evals/{ev['id']}/compare", params=params, headers=auth(ADMIN)).json()
        one = client.get(
            f"/v1/evals/{ev['id']}/compare", params={"run_ids": runs[0]["id"]}, headers=auth(ADMIN)
        )
    assert [r["id"] for r in cmp["runs"]] == params["run_ids"]
    assert cmp["criteria"] == [
        {"testing_criteria": "even", "pass_rate": [0.5, 0.5], "mean_score": [1.0, 1.0]}
    ]
    assert [c["datasource_item_id"] for c in cmp["changed_items"]] == [0, 1, 2, 3]
    assert cmp["changed_items"][0]["status"] == ["pass", "fail"]
    assert one.status_code == 400 and one.json()["error"]["param"] == "run_ids"


def test_revoking_the_key_that_started_a_run_stops_it(tmp_path: Path) -> None:
    gate = threading.Event()
    tasks = FakeTasks(gate=gate)  # batches of 2, one at a time
    with make_client(tmp_path, MemoryStore(), tasks) as client:
        created = client.post("/v1/admin/api_keys", json={"tenant": "acme"}, headers=auth(ADMIN)).json()
        tenant = auth(created["key"])
        ev = client.post("/v1/evals", json=EVAL, headers=tenant).json()
        run = client.post(f"/v1/evals/{ev['id']}/runs", json=run_body(6), headers=tenant).json()
        assert tasks.started.wait(10)  # the first batch is being evaluated
        client.delete(f"/v1/admin/api_keys/{created['id']}", headers=auth(ADMIN))
        gate.set()
        services = client.app.state.services
        deadline = time.monotonic() + 10
        while services.eval_runs.background.driven:  # the revoked key cannot look: the database can
            assert time.monotonic() < deadline, "the run is still being driven"
            time.sleep(0.02)
        with services.db.session() as s:
            stopped = s.get(EvalRunRow, run["id"])
        keys = [k for k in services.keys.list() if k.name == f"eval-run:{run['id']}"]
    assert stopped.status == "failed" and stopped.error["code"] == "api_key_revoked", stopped.error
    assert tasks.seen == [0, 1]  # no batch started after the revocation
    assert len(keys) == 1 and keys[0].revoked_at is not None  # nor does the run's own key live on


def test_runs_in_flight_are_a_quota_per_tenant(tmp_path: Path) -> None:
    gate = threading.Event()
    tasks = FakeTasks(gate=gate)
    app = create_app(
        offline_settings(tmp_path, max_active_eval_runs_per_tenant=1),
        engine=FakeEngine({DEFAULT_BASE_MODEL}),
        tasks=tasks,
        store=MemoryStore(),
    )
    with TestClient(app, headers=auth(ADMIN)) as client:
        ev = client.post("/v1/evals", json=EVAL).json()
        first = client.post(f"/v1/evals/{ev['id']}/runs", json=run_body(2)).json()
        refused = client.post(f"/v1/evals/{ev['id']}/runs", json=run_body(2))
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
        assert refused.json()["error"]["code"] == "quota_exceeded"
        gate.set()
        wait(client, f"/v1/evals/{ev['id']}/runs/{first['id']}", lambda r: r["status"] == "completed")
        assert client.post(f"/v1/evals/{ev['id']}/runs", json=run_body(2)).status_code == 200


def test_disabling_a_tenant_refuses_its_keys_and_stops_its_work(tmp_path: Path) -> None:
    from service.fine_tuning.state import JobStatus
    from tests.helpers import add_job

    gate = threading.Event()
    tasks = FakeTasks(gate=gate)
    with make_client(tmp_path, MemoryStore(), tasks) as client:
        services = client.app.state.services
        acme = auth(
            client.post("/v1/admin/api_keys", json={"tenant": "acme"}, headers=auth(ADMIN)).json()["key"]
        )
        other = auth(
            client.post("/v1/admin/api_keys", json={"tenant": "other"}, headers=auth(ADMIN)).json()["key"]
        )
        ev = client.post("/v1/evals", json=EVAL, headers=acme).json()
        run = client.post(f"/v1/evals/{ev['id']}/runs", json=run_body(6), headers=acme).json()
        assert tasks.started.wait(10)
        add_job(services.jobs.store, "ftjob-acme", "acme", 1)  # a queued job of each tenant
        add_job(services.jobs.store, "ftjob-other", "other", 1)
        disabled = client.post("/v1/admin/tenants/acme/disable", headers=auth(ADMIN))
        assert disabled.status_code == 200 and disabled.json()["disabled_at"], disabled.text
        gate.set()
        refused = client.get("/v1/models", headers=acme)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "tenant_disabled"
        assert client.get("/v1/models", headers=other).status_code == 200
        assert services.jobs.store.get("ftjob-acme").status == JobStatus.CANCELLED
        assert services.jobs.store.get("ftjob-other").status == JobStatus.QUEUED  # not another tenant's
        with services.db.session() as s:
            assert s.get(EvalRunRow, run["id"]).status == "canceled"
        assert client.post("/v1/admin/tenants/default/disable", headers=auth(ADMIN)).status_code == 400
        assert client.post("/v1/admin/tenants/nobody/disable", headers=auth(ADMIN)).status_code == 404
        assert client.post("/v1/admin/tenants/acme/disable", headers=other).status_code == 403
        enabled = client.post("/v1/admin/tenants/acme/enable", headers=auth(ADMIN)).json()
        assert enabled["disabled_at"] is None and client.get("/v1/models", headers=acme).status_code == 200
