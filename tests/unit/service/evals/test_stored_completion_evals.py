"""Evals of stored chat completions: an eval made with data_source_config `stored_completions` grades the
stored answers of the chats a run's source picks (a `jsonl` data source, graded for real in threads), or
asks another model the stored chats (a `completions` one with `item_reference` `item.input`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.evals.service import items_key
from service.platform.settings import DEFAULT_BASE_MODEL
from service.platform.tasks import ThreadRunner
from tests.helpers import ADMIN, EchoEngine, MemoryStore, assert_openai_error, auth, offline_settings

EVAL = {
    "data_source_config": {"type": "stored_completions", "metadata": {"task": "a"}},
    "testing_criteria": [
        {
            "type": "string_check",
            "name": "asked about q",
            "input": "{{sample.output_text}}",
            "reference": "the last: q",
            "operation": "like",
        }
    ],
}


def _chat(client: TestClient, text: str, **fields: object) -> dict:
    body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": text}], **fields}
    return client.post("/v1/chat/completions", json=body).json()


def test_an_eval_grades_the_stored_answers_of_the_chats_its_run_picks(tmp_path: Path) -> None:
    store = MemoryStore()
    app = create_app(
        offline_settings(tmp_path), engine=EchoEngine({DEFAULT_BASE_MODEL}), tasks=ThreadRunner(), store=store
    )
    with TestClient(app, headers=auth(ADMIN)) as client:
        picked = [_chat(client, text, store=True, metadata={"task": "a"}) for text in ("q0", "zz", "q1")]
        _chat(client, "q2", store=True, metadata={"task": "b"})
        ev = client.post("/v1/evals", json=EVAL).json()
        assert ev["data_source_config"]["type"] == "stored_completions"
        assert ev["data_source_config"]["schema"]["required"] == ["item", "sample"]

        source = {"type": "stored_completions", "metadata": {"task": "a"}}
        run = client.post(
            f"/v1/evals/{ev['id']}/runs", json={"data_source": {"type": "jsonl", "source": source}}
        ).json()
        path = f"/v1/evals/{ev['id']}/runs/{run['id']}"
        deadline = time.monotonic() + 30
        while (run := client.get(path).json())["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, run
            time.sleep(0.05)
        assert run["status"] == "completed" and run["result_counts"]["total"] == 3
        assert (run["result_counts"]["passed"], run["result_counts"]["failed"]) == (2, 1)  # "zz" fails
        items = client.get(f"{path}/output_items", params={"order": "asc"}).json()["data"]
        by_chat = {i["datasource_item"]["completion_id"]: i for i in items}
        assert sorted(by_chat) == sorted(c["id"] for c in picked)
        zz = by_chat[picked[1]["id"]]
        assert zz["status"] == "fail" and zz["datasource_item"]["input"] == [
            {"role": "user", "content": "zz"}
        ]
        assert zz["sample"]["output_text"] == picked[1]["choices"][0]["message"]["content"]

        # Asking another model the same chats: the items carry no sample, their input is the stored messages.
        asked = {
            "type": "completions",
            "model": DEFAULT_BASE_MODEL,
            "source": {**source, "limit": 2},
            "input_messages": {"type": "item_reference", "item_reference": "item.input"},
        }
        run = client.post(f"/v1/evals/{ev['id']}/runs", json={"data_source": asked}).json()
        rows = [json.loads(line) for line in store.get_bytes(items_key(run["id"])).decode().splitlines()]
        assert [r["item"]["input"][0]["content"] for r in rows] == ["q0", "zz"] and "sample" not in rows[0]

        none = {"type": "jsonl", "source": {"type": "stored_completions", "metadata": {"task": "nothing"}}}
        refused = client.post(f"/v1/evals/{ev['id']}/runs", json={"data_source": none})
        assert "No stored chat completions match" in assert_openai_error(refused, 400)["message"]
