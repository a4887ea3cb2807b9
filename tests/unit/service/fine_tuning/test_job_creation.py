"""Creating fine-tuning jobs through the API (no Ray: nothing is launched), with the real base model's
tokenizer: what the job records."""

from __future__ import annotations

import io
import json
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app
from service.platform.db import FineTunedModelRow, JobRow
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, MemoryStore, auth, offline_settings

MODELS = Path(__file__).resolve().parents[4] / "data" / "models"
PARENT = f"{DEFAULT_BASE_MODEL}:parent-abc123"
DATA = Path(__file__).resolve().parents[3] / "data" / "codeword_train.jsonl"


def test_a_job_continues_from_a_fine_tuned_model_with_its_adapter(tmp_path: Path) -> None:
    store = MemoryStore()
    prefix = f"adapters/{DEFAULT_BASE_MODEL}/parent-abc123/"
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": ["v_proj", "q_proj"],
    }
    store.put_bytes(prefix + "adapter_config.json", json.dumps(config).encode())
    app = create_app(offline_settings(tmp_path, models_dir=MODELS), store=store)
    with TestClient(app, headers=auth(ADMIN)) as client:
        services = client.app.state.services
        with services.db.session() as s:
            s.add(
                FineTunedModelRow(
                    id=PARENT, tenant_id="default", base_model=DEFAULT_BASE_MODEL, adapter_prefix=prefix
                )
            )
        train = client.post(
            "/v1/files", data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", DATA.read_bytes())}
        )
        job = client.post(
            "/v1/fine_tuning/jobs", json={"model": PARENT, "training_file": train.json()["id"]}
        ).json()
        assert job["model"] == PARENT and job["status"] == "queued", job
        assert job["lora"] == {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
        with services.db.session() as s:
            spec = s.get(JobRow, job["id"]).spec
        assert (spec["parent_model"], spec["parent_adapter_prefix"], spec["base_model"]) == (
            PARENT,
            prefix,
            DEFAULT_BASE_MODEL,
        )
        assert spec["fine_tuned_model"].startswith(f"{DEFAULT_BASE_MODEL}:ft-")  # named under its base
        other = client.post("/v1/admin/api_keys", json={"tenant": "other"}).json()["key"]
        theirs = client.post(
            "/v1/fine_tuning/jobs",
            json={"model": PARENT, "training_file": train.json()["id"]},
            headers=auth(other),
        )
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "model_not_found"


def test_images_for_a_text_only_base_model_are_a_400_naming_the_line(tmp_path: Path) -> None:
    import base64
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(out, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    vision = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Colour?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            },
            {"role": "assistant", "content": "green"},
        ]
    }
    data = DATA.read_bytes().rstrip(b"\n") + b"\n" + json.dumps(vision).encode()
    line = data.count(b"\n") + 1
    app = create_app(offline_settings(tmp_path, models_dir=MODELS), store=MemoryStore())
    with TestClient(app, headers=auth(ADMIN)) as client:
        models = client.get("/v1/models").json()["data"]
        assert [m["modalities"] for m in models if m["type"] == "llm"] == [["text"]]
        train = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("v.jsonl", data)})
        assert train.status_code == 200, train.text  # a valid vision file
        resp = client.post(
            "/v1/fine_tuning/jobs", json={"model": DEFAULT_BASE_MODEL, "training_file": train.json()["id"]}
        )
        assert resp.status_code == 400
        message = resp.json()["error"]["message"]
        assert (
            f"line {line}: the example has images, but the base model {DEFAULT_BASE_MODEL} takes text only"
            in message
        )


def test_a_vision_job_takes_the_tenants_own_images_and_names_the_line_of_any_other(tmp_path: Path) -> None:
    from bench import vision_task
    from service.platform.settings import VISION_TEST_MODEL

    bases = {m: MODELS / m for m in (DEFAULT_BASE_MODEL, VISION_TEST_MODEL)}
    app = create_app(offline_settings(tmp_path, models_dir=MODELS, base_models=bases), store=MemoryStore())
    [(png, colour), (png2, colour2)] = vision_task.pictures(2, seed=3)
    with TestClient(app, headers=auth(ADMIN)) as client:
        models = client.get("/v1/models").json()["data"]
        listed = {m["id"]: m["modalities"] for m in models if m["type"] == "llm"}
        assert listed == {DEFAULT_BASE_MODEL: ["text"], VISION_TEST_MODEL: ["text", "image"]}
        mine = client.post("/v1/files", data={"purpose": "vision"}, files={"file": ("a.png", png)}).json()[
            "id"
        ]
        other = client.post("/v1/admin/api_keys", json={"tenant": "other"}).json()["key"]
        theirs = client.post(
            "/v1/files", headers=auth(other), data={"purpose": "vision"}, files={"file": ("b.png", png2)}
        ).json()["id"]

        def job_with(*image_urls: str):
            lines = [
                {"messages": [vision_task.user_message(url), {"role": "assistant", "content": colour}]}
                for url in image_urls
            ]
            data = "".join(json.dumps(e) + "\n" for e in lines).encode()
            train = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("v.jsonl", data)})
            return client.post(
                "/v1/fine_tuning/jobs", json={"model": VISION_TEST_MODEL, "training_file": train.json()["id"]}
            )

        refused = job_with(mine, theirs)
        assert refused.status_code == 400
        assert f"line 2: image {theirs}: no such file (or not yours)" in refused.json()["error"]["message"]
        job = job_with(mine, vision_task.data_url(png2)).json()
        assert job["status"] == "queued", job
        with client.app.state.services.db.session() as s:
            spec = s.get(JobRow, job["id"]).spec
        assert spec["vision"] is True and list(spec["image_files"]) == [mine]


def test_a_dpo_job_takes_preference_pairs_and_only_them(tmp_path: Path) -> None:
    from bench.preference_task import jsonl, pairs

    lines = jsonl(pairs([(f"Question {i}?", f"Answer {i}.") for i in range(16)]))
    app = create_app(offline_settings(tmp_path, models_dir=MODELS), store=MemoryStore())
    with TestClient(app, headers=auth(ADMIN)) as client:

        def upload(data: bytes) -> str:
            return client.post(
                "/v1/files", data={"purpose": "fine-tune"}, files={"file": ("d.jsonl", data)}
            ).json()["id"]

        preferences, chats = upload(lines), upload(DATA.read_bytes())
        dpo = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}
        job = client.post(
            "/v1/fine_tuning/jobs",
            json={"model": DEFAULT_BASE_MODEL, "training_file": preferences, "method": dpo},
        ).json()
        assert job["status"] == "queued", job
        assert job["method"]["type"] == "dpo" and job["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
        assert job["hyperparameters"]["sft_weight"] == 1.0
        wrong = client.post(
            "/v1/fine_tuning/jobs", json={"model": DEFAULT_BASE_MODEL, "training_file": chats, "method": dpo}
        )
        assert (
            wrong.status_code == 400
            and "line 1: a DPO job needs preference examples" in wrong.json()["error"]["message"]
        )
        wrong = client.post(
            "/v1/fine_tuning/jobs", json={"model": DEFAULT_BASE_MODEL, "training_file": preferences}
        )
        assert wrong.status_code == 400 and "line 1: a preference example" in wrong.json()["error"]["message"]


def test_auto_epochs_may_stop_once_converged_and_epochs_a_user_sets_are_all_trained(tmp_path: Path) -> None:
    app = create_app(offline_settings(tmp_path, models_dir=MODELS), store=MemoryStore())
    with TestClient(app, headers=auth(ADMIN)) as client:
        train = client.post(
            "/v1/files", data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", DATA.read_bytes())}
        ).json()["id"]
        stops = []
        for hyperparameters in ({}, {"n_epochs": "auto", "batch_size": 2}, {"n_epochs": 15}):
            job = client.post(
                "/v1/fine_tuning/jobs",
                json={
                    "model": DEFAULT_BASE_MODEL,
                    "training_file": train,
                    "hyperparameters": hyperparameters,
                },
            ).json()
            with client.app.state.services.db.session() as s:
                spec = s.get(JobRow, job["id"]).spec
            stops.append((spec["hyperparameters"]["n_epochs"], spec["stop_when_converged"]))
    assert stops == [(15, True), (10, True), (15, False)]  # 24 examples: batches of 3, then 2


def test_a_jobs_files_deleted_while_it_runs_stay_readable_until_it_ends(tmp_path: Path) -> None:
    """Deleting the training file right after creating the job failed the job when it started
    ("ObjectNotFound ... does not exist"). The file is gone for the tenant at once; its object stays
    until the job ends, and is swept then."""
    objects = MemoryStore()
    app = create_app(offline_settings(tmp_path, models_dir=MODELS), store=objects)
    with TestClient(app, headers=auth(ADMIN)) as client:

        def upload() -> str:
            form = {"purpose": "fine-tune"}
            return client.post("/v1/files", data=form, files={"file": ("t.jsonl", DATA.read_bytes())}).json()[
                "id"
            ]

        train, valid, unused = upload(), upload(), upload()
        files = app.state.services.files
        keys = {name: files.get("default", name).key for name in (train, valid, unused)}
        job = client.post(
            "/v1/fine_tuning/jobs",
            json={"model": DEFAULT_BASE_MODEL, "training_file": train, "validation_file": valid},
        ).json()
        for file_id in (train, valid, unused):
            assert client.delete(f"/v1/files/{file_id}").json()["deleted"] is True
            assert client.get(f"/v1/files/{file_id}").status_code == 404
        assert keys[train] in objects.objects and keys[valid] in objects.objects  # the queued job reads them
        assert keys[unused] not in objects.objects  # nothing reads it: gone at once
        assert files.sweep_orphans() == 0  # still read
        assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        assert files.sweep_orphans() == 2
        assert keys[train] not in objects.objects and keys[valid] not in objects.objects


def test_a_job_for_an_idefics3_base_counts_its_crops_and_targets_its_text_model(tmp_path: Path) -> None:
    """A VLM family besides LLaVA, as a user's base model (tests/tiny_vlms.py): the picture's shape decides
    its crops (a square one is split 2x2, a wide one 2x1, each kept whole too), so its tokens; LoRA targets
    are the language model's (`text_model`) layers."""
    from bench import vision_task
    from tests.tiny_vlms import build_idefics3

    folder = build_idefics3(tmp_path / "Tiny-Idefics3")
    bases = {DEFAULT_BASE_MODEL: MODELS / DEFAULT_BASE_MODEL, "Tiny-Idefics3": folder}
    app = create_app(offline_settings(tmp_path, models_dir=MODELS, base_models=bases), store=MemoryStore())
    with TestClient(app, headers=auth(ADMIN)) as client:
        models = {m["id"]: m["modalities"] for m in client.get("/v1/models").json()["data"]}
        assert models["Tiny-Idefics3"] == ["text", "image"]

        def job_with(width: int, **fields):
            png = io.BytesIO()
            Image.new("RGB", (width, 64), "red").save(png, "PNG")
            example = {
                "messages": [
                    vision_task.user_message(vision_task.data_url(png.getvalue())),
                    {"role": "assistant", "content": "red"},
                ]
            }
            data = (json.dumps(example) + "\n").encode()
            train = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("v.jsonl", data)})
            body = {"model": "Tiny-Idefics3", "training_file": train.json()["id"], **fields}
            return client.post("/v1/fine_tuning/jobs", json=body)

        tokens = {}
        for width in (64, 128):
            job = job_with(width).json()
            assert job["status"] == "queued", job
            with client.app.state.services.db.session() as s:
                tokens[width] = s.get(JobRow, job["id"]).spec["n_train_tokens"]
        assert tokens[64] > tokens[128] > 20  # five crops of 4 tokens, and three
        refused = job_with(64, lora={"target_modules": ["fc1"]})  # the vision tower's, not the text model's
        assert refused.status_code == 400 and "fc1" in refused.json()["error"]["message"]
        assert job_with(64, lora={"target_modules": ["q_proj", "down_proj"]}).status_code == 200
