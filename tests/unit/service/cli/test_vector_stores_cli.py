"""`tuneserve vector-stores ...` and `tuneserve chat --vector-store` as a user runs them (conftest.py):
real loaders, splitter and embedder; the chat's engine echoes, so what is checked is the retrieval."""

from __future__ import annotations

import io
import json
from pathlib import Path

from service.platform.settings import DEFAULT_BASE_MODEL


def test_a_store_is_filled_searched_chatted_with_and_deleted(cli, tmp_path: Path, monkeypatch) -> None:
    laptops = tmp_path / "equipment.md"
    laptops.write_text("# Equipment\n\nLaptops are replaced every three years; ask the helpdesk for one.\n")
    travel = tmp_path / "travel.txt"
    travel.write_text("Employees book flights through the travel desk at least two weeks ahead.\n")
    code, out, err = cli("vector-stores", "create", "handbook", str(laptops), str(travel))
    assert code == 0, err
    lines = out.splitlines()
    store = json.loads(lines[0])["id"]
    assert json.loads(lines[-1])["file_counts"]["completed"] == 2

    code, out, _ = cli("vector-stores", "search", store, "how often do we get new laptops?")
    assert code == 0 and "equipment.md" in out.splitlines()[0] and "three years" in out.splitlines()[0]
    assert store in [s["id"] for s in json.loads(cli("vector-stores", "list")[1])]

    # A file that cannot be read: named with its error, the command fails, the store keeps the others.
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"not a pdf at all")
    code, out, _ = cli("vector-stores", "add", store, str(broken))
    assert (
        code == 1
        and out.startswith("file-")
        and json.loads(out.splitlines()[-1])["file_counts"]["failed"] == 1
    )
    code, _, err = cli("vector-stores", "add", store, str(tmp_path / "nowhere.md"))
    assert code == 1 and "no such file" in err

    # A chat that answers from the store prints the chunks it was given.
    monkeypatch.setattr("sys.stdin", io.StringIO("How often are laptops replaced?\n"))
    code, out, err = cli("chat", DEFAULT_BASE_MODEL, "--vector-store", store)
    assert code == 0, err
    cited = [line for line in out.splitlines() if line.startswith("  [1] ")]
    assert cited and "equipment.md" in cited[0] and "three years" in cited[0], out

    code, out, _ = cli("vector-stores", "delete", store)
    assert code == 0 and json.loads(out)["deleted"] is True
    code, _, err = cli("vector-stores", "search", store, "laptops")
    assert code == 1 and store in err


def test_a_store_whose_files_cannot_be_added_is_not_kept(cli) -> None:
    before = json.loads(cli("vector-stores", "list")[1])
    code, _, err = cli("vector-stores", "create", "orphan", "file-nope")
    assert code == 1 and "file-nope" in err  # the API's 404, in one line
    assert json.loads(cli("vector-stores", "list")[1]) == before
