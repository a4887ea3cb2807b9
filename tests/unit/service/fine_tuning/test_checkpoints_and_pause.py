"""A job's checkpoints as models (which are kept, who may use them) and pausing / resuming a job, through
the API with a real database and tokenizer (no Ray: nothing is launched)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.helpers import ADMIN, MemoryStore, assert_openai_error, auth, offline_settings

MODELS = Path(__file__).resolve().parents[4] / "data" / "models"
DATA = Path(__file__).resolve().parents[3] / "data" / "codeword_train.jsonl"


@pytest.fixture
def client(tmp_path: Path):
    app = create_app(offline_settings(tmp_path, models_dir=MODELS), store=MemoryStore())
    with TestClient(app, headers=auth(ADMIN)) as client:
        yield client


def new_job(client: TestClient) -> dict:
    train = client.post(
        "/v1/files", data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", DATA.read_bytes())}
    ).json()
    job = client.post(
        "/v1/fine_tuning/jobs", json={"model": "SmolLM2-135M-Instruct", "training_file": train["id"]}
    )
    assert job.status_code == 200, job.text
    return job.json()


def test_the_newest_three_checkpoints_and_the_best_are_kept_and_each_is_a_model(client: TestClient) -> None:
    job = new_job(client)
    store = client.app.state.services.jobs.store
    valid = {2: 0.2, 4: 0.5, 6: 0.4, 8: 0.6, 10: 0.7}  # step 2 has the lowest validation loss
    pruned = []
    for step, loss in valid.items():
        store.add_checkpoint(
            job["id"], step, f"jobs/{job['id']}/checkpoints/step-{step}/", {"valid_loss": loss}
        )
        pruned += [r.step for r in store.prune_checkpoints(job["id"], keep=3)]
    assert pruned == [4]
    store.add_checkpoint(job["id"], 10, "again/", {"valid_loss": 0.7})  # a resumed run saves step 10 again

    listed = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["step_number"] for c in listed] == [10, 8, 6, 2]
    model = listed[-1]["fine_tuned_model_checkpoint"]
    assert model.endswith(":ckpt-step-2") and listed[-1]["metrics"]["valid_loss"] == 0.2
    got = client.get(f"/v1/models/{model}").json()
    assert got["id"] == model and got["parent"] == model.rpartition(":ckpt-step-")[0]
    lineage = got["lineage"]  # a checkpoint's lineage is its job's
    assert (lineage["training_job"], lineage["training_file"]) == (job["id"], job["training_file"])
    assert lineage["training_file_sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest()
    assert lineage["hyperparameters"]["n_epochs"] == job["hyperparameters"]["n_epochs"]
    assert lineage["evals"] == [] and lineage["base_model"] == job["model"]
    base = client.get(f"/v1/models/{job['model']}").json()["lineage"]
    assert base["training_job"] is None and base["parent"] is None
    resolved = client.app.state.services.models.resolve("default", model)
    assert (resolved.base_model, resolved.adapter_prefix) == (
        job["model"],
        f"jobs/{job['id']}/checkpoints/step-2/",
    )

    other = client.post("/v1/admin/api_keys", json={"tenant": "other"}).json()["key"]
    assert_openai_error(client.get(f"/v1/models/{model}", headers=auth(other)), 404, "model_not_found")
    assert_openai_error(
        client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints", headers=auth(other)), 404, "job_not_found"
    )


def test_pause_and_resume_follow_the_state_machine(client: TestClient) -> None:
    job = new_job(client)
    url = f"/v1/fine_tuning/jobs/{job['id']}"
    paused = client.post(f"{url}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert_openai_error(client.post(f"{url}/pause"), 400, "job_not_pausable")
    resumed = client.post(f"{url}/resume").json()
    assert resumed["status"] == "queued"
    assert_openai_error(client.post(f"{url}/resume"), 400, "job_not_paused")
    events = [e["message"] for e in client.get(f"{url}/events").json()["data"]]
    assert "Job paused by the user" in events
    assert "Job resumed by the user; it continues from the start" in events

    client.post(f"{url}/pause")
    assert client.post(f"{url}/cancel").json()["status"] == "cancelled"  # a paused job can be cancelled
    assert_openai_error(client.post(f"{url}/pause"), 400, "job_not_pausable")
    assert_openai_error(client.post("/v1/fine_tuning/jobs/ftjob-nope/pause"), 404, "job_not_found")
