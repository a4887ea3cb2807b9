from pathlib import Path

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.platform.ids import new_id
from tests.helpers import ADMIN, MemoryStore, auth, offline_settings


def test_ids_keep_their_shape_and_sort_in_the_order_they_were_made() -> None:
    ids = [new_id("file-") for _ in range(1000)]
    assert all(len(i) == len("file-") + 24 and int(i[5:], 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)
    # ids made in the same microsecond may sort either way; later ones always sort after
    assert sorted(ids, key=lambda i: i[:18]) == ids


def test_lists_keep_creation_order_within_a_second(tmp_path: Path) -> None:
    """Lists order by `created_at` (seconds), then by id: ids made at random shuffled a script's uploads."""
    app = create_app(offline_settings(tmp_path), store=MemoryStore())
    with TestClient(app, headers=auth(ADMIN)) as client:
        made = [
            client.post(
                "/v1/files", data={"purpose": "assistants"}, files={"file": (f"{n}.txt", b"x")}
            ).json()
            for n in range(8)
        ]
        assert len({f["created_at"] for f in made}) < len(made)  # several in one second
        newest_first = [f["id"] for f in client.get("/v1/files").json()["data"]]
        oldest_first = [f["id"] for f in client.get("/v1/files?order=asc").json()["data"]]
    assert oldest_first == [f["id"] for f in made] == newest_first[::-1]
