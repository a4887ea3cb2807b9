"""Importing a PEFT adapter as a model and downloading a model's adapter, through the API with the real
base model's weights (their shapes decide whether an adapter fits) and an in-memory object store."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save_file

from service.api.app import create_app
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, MemoryStore, assert_openai_error, auth, offline_settings

MODELS = Path(__file__).resolve().parents[4] / "data" / "models"
HIDDEN, KV = 576, 192  # SmolLM2-135M: q_proj 576 -> 576, v_proj 576 -> 192


def adapter(folder: Path, rank: int = 8, v_inputs: int = HIDDEN, module: str = "v_proj") -> Path:
    """A LoRA adapter on layer 0's q_proj and `module`, saved as peft saves one."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": ["q_proj", module]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    layer = "base_model.model.model.layers.0.self_attn"
    save_file(
        {
            f"{layer}.q_proj.lora_A.weight": rng.standard_normal((rank, HIDDEN), dtype=np.float32),
            f"{layer}.q_proj.lora_B.weight": np.zeros((HIDDEN, rank), dtype=np.float32),
            f"{layer}.{module}.lora_A.weight": rng.standard_normal((rank, v_inputs), dtype=np.float32),
            f"{layer}.{module}.lora_B.weight": np.zeros((KV, rank), dtype=np.float32),
        },
        str(folder / "adapter_model.safetensors"),
    )
    return folder


def tar_gz(folder: Path, inside: str = "my-adapter/") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for path in folder.iterdir():
            archive.add(path, arcname=inside + path.name)
    return out.getvalue()


SHARED = "s3://shared-adapters/team-a/"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def client(tmp_path: Path, store: MemoryStore):
    settings = offline_settings(tmp_path, models_dir=MODELS, adapter_import_sources=[SHARED])
    app = create_app(settings, store=store)
    with TestClient(app, headers=auth(ADMIN)) as client:
        yield client


def upload(client: TestClient, data: bytes, name: str = "adapter.tar.gz") -> str:
    resp = client.post("/v1/files", data={"purpose": "adapter"}, files={"file": (name, data)})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def import_(client: TestClient, data: bytes, **body: object):
    return client.post(
        "/v1/models", json={"file": upload(client, data), "base_model": DEFAULT_BASE_MODEL, **body}
    )


def test_an_imported_adapter_is_a_model_that_downloads_as_it_came(client: TestClient, tmp_path: Path) -> None:
    folder = adapter(tmp_path / "a")
    resp = import_(client, tar_gz(folder), suffix="mine")
    assert resp.status_code == 200, resp.text
    model = resp.json()
    assert model["id"].startswith(f"{DEFAULT_BASE_MODEL}:mine-") and model["root"] == DEFAULT_BASE_MODEL
    assert model["lineage"]["training_job"] is None
    assert model["id"] in [m["id"] for m in client.get("/v1/models").json()["data"]]

    got = client.get(f"/v1/models/{model['id']}/content")
    assert got.status_code == 200 and got.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(got.content)) as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert files[name] == (folder / name).read_bytes()

    # A zip of the bare files works too; another tenant sees neither model nor adapter.
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        for path in folder.iterdir():
            z.write(path, path.name)
    assert import_(client, zipped.getvalue()).json()["id"].startswith(f"{DEFAULT_BASE_MODEL}:imported-")
    other = client.post("/v1/admin/api_keys", json={"tenant": "other"}).json()["key"]
    assert_openai_error(client.get(f"/v1/models/{model['id']}/content", headers=auth(other)), 404)
    assert_openai_error(client.get(f"/v1/models/{DEFAULT_BASE_MODEL}/content"), 400, "invalid_model")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: adapter(d, v_inputs=1024), "'model.layers.0.self_attn.v_proj' has 1024 inputs where"),
        (lambda d: adapter(d, module="w_proj"), "module 'model.layers.0.self_attn.w_proj' is not a module"),
        (lambda d: adapter(d, rank=64), "rank 64 is above the served maximum 16"),
        (
            lambda d: (adapter(d) / "adapter_model.safetensors").unlink() or d,
            "has no adapter_model.safetensors",
        ),
    ],
)
def test_a_broken_import_is_a_precise_400(client: TestClient, tmp_path: Path, make, words: str) -> None:
    error = assert_openai_error(import_(client, tar_gz(make(tmp_path / "a"))), 400, "invalid_adapter")
    assert words in error["message"] and error["param"] == "file"
    assert _language_models(client) == [DEFAULT_BASE_MODEL]


def test_what_is_not_an_adapter_archive_is_refused(client: TestClient, tmp_path: Path) -> None:
    error = assert_openai_error(import_(client, b"just text"), 400, "invalid_adapter")
    assert "not a .tar.gz" in error["message"]
    twice = adapter(tmp_path / "a")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for inside in ("one/", "two/"):
            for path in twice.iterdir():
                archive.add(path, arcname=inside + path.name)
    assert "more than one" in assert_openai_error(import_(client, out.getvalue()), 400)["message"]
    # A link in the archive is never followed: the adapter's files are read by name, as regular files.
    linked = io.BytesIO()
    with tarfile.open(fileobj=linked, mode="w:gz") as archive:
        link = tarfile.TarInfo("adapter_config.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        archive.add(twice / "adapter_model.safetensors", arcname="adapter_model.safetensors")
    assert (
        "has no adapter_config.json"
        in assert_openai_error(import_(client, linked.getvalue()), 400)["message"]
    )
    bad_base = client.post("/v1/models", json={"file": upload(client, tar_gz(twice)), "base_model": "nope"})
    assert_openai_error(bad_base, 404, "model_not_found")


def share(store: MemoryStore, folder: Path, prefix: str = "team-a/bot/") -> str:
    """Put the adapter `folder` into the shared bucket under `prefix`; its s3:// URI."""
    shared = store.bucket_store("shared-adapters")
    for path in folder.iterdir():
        shared.put_bytes(prefix + path.name, path.read_bytes())
    return f"s3://shared-adapters/{prefix}"


def from_source(client: TestClient, source: str, **body: object):
    return client.post("/v1/models", json={"source": source, "base_model": DEFAULT_BASE_MODEL, **body})


def test_an_adapter_is_imported_from_an_allowed_s3_folder(
    client: TestClient, store: MemoryStore, tmp_path: Path
) -> None:
    folder = adapter(tmp_path / "a")
    resp = from_source(client, share(store, folder), suffix="shared")
    assert resp.status_code == 200, resp.text
    model = resp.json()["id"]
    assert model.startswith(f"{DEFAULT_BASE_MODEL}:shared-")
    # A copy in the service's own store: the model stays when the shared folder changes.
    store.bucket_store("shared-adapters").delete_prefix("team-a/")
    got = client.get(f"/v1/models/{model}/content")
    with tarfile.open(fileobj=io.BytesIO(got.content)) as archive:
        weights = archive.extractfile("adapter_model.safetensors").read()
    assert weights == (folder / "adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize(
    ("source", "code", "words"),
    [
        ("s3://shared-adapters/team-b/bot/", "source_not_allowed", "not under a prefix the admin allows"),
        ("s3://shared-adapters/team-a/../team-b/bot/", "source_not_allowed", "'..' path segment"),
        ("s3://tuneserve/adapters/x/", "source_not_allowed", "own bucket"),
        ("https://example.com/adapter/", "source_not_allowed", "not an s3:// URI"),
        ("s3://shared-adapters/team-a/missing/", "invalid_adapter", "has no adapter_config.json"),
    ],
)
def test_a_source_that_is_not_allowed_or_not_an_adapter_is_a_400(
    client: TestClient, store: MemoryStore, tmp_path: Path, source: str, code: str, words: str
) -> None:
    share(store, adapter(tmp_path / "a"), "team-b/bot/")  # there, but not allowed
    error = assert_openai_error(from_source(client, source), 400, code)
    assert words in error["message"] and error["param"] == "source"
    assert _language_models(client) == [DEFAULT_BASE_MODEL]


def test_an_adapter_from_a_source_gets_the_same_checks(
    client: TestClient, store: MemoryStore, tmp_path: Path
) -> None:
    source = share(store, adapter(tmp_path / "a", rank=64))
    error = assert_openai_error(from_source(client, source), 400, "invalid_adapter")
    assert "rank 64 is above the served maximum 16" in error["message"] and error["param"] == "source"


def test_exactly_one_of_file_and_source(client: TestClient, store: MemoryStore, tmp_path: Path) -> None:
    folder = adapter(tmp_path / "a")
    both = {"file": upload(client, tar_gz(folder)), "source": share(store, folder)}
    for body in (both, {}):
        resp = client.post("/v1/models", json={"base_model": DEFAULT_BASE_MODEL, **body})
        assert "exactly one of `file` and `source`" in assert_openai_error(resp, 400)["message"]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_an_adapter_with_nan_or_infinite_weights_is_refused(
    client: TestClient, tmp_path: Path, dtype: str, bad: float
) -> None:
    """One such adapter in a batch turned every tenant's answers empty (adapters._nonfinite_tensors)."""
    import torch
    from safetensors.torch import save_file as save_torch

    folder = adapter(tmp_path / "a")
    weights = folder / "adapter_model.safetensors"
    tensors = {
        name: torch.from_numpy(array).to(getattr(torch, dtype)) for name, array in load(weights).items()
    }
    name = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
    tensors[name][0, 0] = torch.finfo(tensors[name].dtype).max  # the largest finite value is finite
    save_torch(tensors, str(weights))
    assert import_(client, tar_gz(folder)).status_code == 200
    tensors[name][3, 1] = bad
    save_torch(tensors, str(weights))
    error = assert_openai_error(import_(client, tar_gz(folder)), 400, "invalid_adapter")
    assert "NaN or infinite values" in error["message"] and name in error["message"]


def load(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _language_models(client: TestClient) -> list[str]:
    return [m["id"] for m in client.get("/v1/models").json()["data"] if m["type"] == "llm"]
