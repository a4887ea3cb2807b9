"""Listing fine-tuning jobs with OpenAI's metadata filter, through the API on a real SQLite database."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from service.api.app import create_app
from service.platform.settings import DEFAULT_BASE_MODEL
from service.protocol.common import MetadataFilter
from tests.helpers import ADMIN, MemoryStore, assert_openai_error, auth, offline_settings

MODELS = Path(__file__).resolve().parents[4] / "data" / "models"
DATA = Path(__file__).resolve().parents[3] / "data" / "codeword_train.jsonl"
JOBS: dict[str, str] = {}  # job id -> the name the fixture gave it


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Jobs made through the API (nothing launches them): with and without metadata, and another tenant's."""
    settings = offline_settings(tmp_path_factory.mktemp("jobs"), models_dir=MODELS)
    with TestClient(create_app(settings, store=MemoryStore()), headers=auth(ADMIN)) as client:
        other = auth(client.post("/v1/admin/api_keys", json={"tenant": "other"}).json()["key"])
        for name, metadata, headers in [
            ("none", None, None),
            ("empty", {}, None),
            ("a", {"team": "a", "env": "prod"}, None),
            ("b", {"team": "b", "env": "prod"}, None),
            ("other", {"team": "a", "env": "prod"}, other),
        ]:
            upload = {"purpose": "fine-tune"}, {"file": ("t.jsonl", DATA.read_bytes())}
            train = client.post("/v1/files", data=upload[0], files=upload[1], headers=headers).json()["id"]
            body = {"model": DEFAULT_BASE_MODEL, "training_file": train}
            if metadata is not None:
                body["metadata"] = metadata
            JOBS[client.post("/v1/fine_tuning/jobs", json=body, headers=headers).json()["id"]] = name
        yield client


def listed(client: TestClient, query: str) -> set[str]:
    """The names of the jobs the admin's tenant gets for `query`."""
    resp = client.get(f"/v1/fine_tuning/jobs?{query}")
    assert resp.status_code == 200, resp.text
    return {JOBS[job["id"]] for job in resp.json()["data"]}


def test_jobs_are_filtered_by_metadata_as_openai_does(client: TestClient) -> None:
    assert listed(client, "") == {"none", "empty", "a", "b"}
    assert listed(client, "metadata[team]=a") == {"a"}  # not the other tenant's
    assert listed(client, "metadata[env]=prod") == {"a", "b"}
    assert listed(client, "metadata[env]=prod&metadata[team]=b") == {"b"}
    assert listed(client, "metadata[team]=c") == set()
    assert listed(client, "metadata[nokey]=a") == set()
    assert listed(client, "metadata=null") == {"none", "empty"}
    # the pages of a filtered list hold only matching jobs
    first = client.get("/v1/fine_tuning/jobs?metadata[env]=prod&limit=1").json()
    assert first["has_more"] and len(first["data"]) == 1
    after = first["data"][0]["id"]
    rest = client.get(f"/v1/fine_tuning/jobs?metadata[env]=prod&limit=1&after={after}").json()
    assert not rest["has_more"] and {JOBS[first["data"][0]["id"]], JOBS[rest["data"][0]["id"]]} == {"a", "b"}


def test_the_official_client_sends_the_filter_this_way(client: TestClient) -> None:
    openai = OpenAI(base_url="http://testserver/v1", api_key=ADMIN, http_client=client)
    assert [job.metadata for job in openai.fine_tuning.jobs.list(metadata={"team": "b"})] == [
        {"team": "b", "env": "prod"}
    ]


@pytest.mark.parametrize(
    "query, says",
    [
        ("metadata=x", "metadata=null"),
        ("metadata[]=x", "key of 1 to 64 characters"),
        ("metadata[a][b]=x", "key of 1 to 64 characters"),
        ("metadata=null&metadata[team]=a", "cannot be combined"),
    ],
)
def test_a_malformed_filter_is_a_400_saying_how(client: TestClient, query: str, says: str) -> None:
    err = assert_openai_error(client.get(f"/v1/fine_tuning/jobs?{query}"), 400)
    assert err["param"] == "metadata" and says in err["message"]


def test_no_metadata_parameters_mean_no_filter() -> None:
    assert MetadataFilter.from_query([("after", "x"), ("limit", "2")]) is None
