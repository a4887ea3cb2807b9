"""`tuneserve vector-stores create | add | list | search | delete`: documents for retrieval from the shell.

`create NAME FILE...` and `add STORE_ID FILE...` upload local files (or take uploaded file ids), add them as
one file batch and follow its ingestion with a progress bar; a file that could not be read is named with
its error and the command exits 1. `tuneserve chat MODEL --vector-store ID` answers from a store."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from service.cli.client import ApiClient, CliError, command, print_json

POLL_S = 0.5


def register(sub: argparse._SubParsersAction) -> None:
    actions = sub.add_parser("vector-stores", help="vector stores for retrieval (RAG)").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = actions.add_parser("create", help="create a store, add files and follow their ingestion")
    create.add_argument("name")
    create.add_argument(
        "files", nargs="*", help="local files (.txt .md .html .pdf .json .jsonl .docx) or file ids"
    )
    create.set_defaults(func=command(_create))

    add = actions.add_parser("add", help="add files to a store and follow their ingestion")
    add.add_argument("store_id")
    add.add_argument("files", nargs="+", help="local files or file ids")
    add.set_defaults(func=command(_add))

    actions.add_parser("list", help="list the stores").set_defaults(func=command(_list))

    search = actions.add_parser("search", help="the chunks nearest to a query")
    search.add_argument("store_id")
    search.add_argument("query")
    search.add_argument("--max-results", type=int, default=5)
    search.set_defaults(func=command(_search))

    delete = actions.add_parser("delete", help="delete a store (its files stay in `files list`)")
    delete.add_argument("store_id")
    delete.set_defaults(func=command(_delete))


def _create(api: ApiClient, args: argparse.Namespace) -> int:
    """The store is only kept if its files could be added (an unknown file id deletes it again)."""
    ids = _file_ids(api, args.files)
    store = api.call("POST", "/v1/vector_stores", json={"name": args.name})
    print(json.dumps({"id": store["id"], "name": store["name"]}))
    if not ids:
        return 0
    try:
        batch = api.call("POST", f"/v1/vector_stores/{store['id']}/file_batches", json={"file_ids": ids})
    except CliError:
        api.call("DELETE", f"/v1/vector_stores/{store['id']}")
        raise
    return _follow(api, batch)


def _add(api: ApiClient, args: argparse.Namespace) -> int:
    ids = _file_ids(api, args.files)
    return _follow(
        api, api.call("POST", f"/v1/vector_stores/{args.store_id}/file_batches", json={"file_ids": ids})
    )


def _file_ids(api: ApiClient, files: list[str]) -> list[str]:
    """File ids as given, local files uploaded (every local path checked before the first upload)."""
    for f in files:
        if not f.startswith("file-") and not Path(f).is_file():
            raise CliError(f"{f}: no such file")
    return [f if f.startswith("file-") else _upload(api, Path(f)) for f in files]


def _follow(api: ApiClient, batch: dict) -> int:
    """Follow a file batch's ingestion with a progress bar; 0 when every file was ingested."""
    from tqdm import tqdm

    store_id = batch["vector_store_id"]
    path = f"/v1/vector_stores/{store_id}/file_batches/{batch['id']}"
    with tqdm(total=batch["file_counts"]["total"], unit="file", dynamic_ncols=True, desc="ingesting") as bar:
        while True:
            counts = batch["file_counts"]
            bar.update(counts["completed"] + counts["failed"] + counts["cancelled"] - bar.n)
            if batch["status"] != "in_progress":
                break
            time.sleep(POLL_S)
            batch = api.call("GET", path)
    failed = api.all(f"{path}/files", filter="failed")
    for file in failed:
        print(f"{file['id']}: {(file.get('last_error') or {}).get('message', 'failed')}")
    print(
        json.dumps(
            {"vector_store_id": store_id, "status": batch["status"], "file_counts": batch["file_counts"]}
        )
    )
    return 0 if batch["status"] == "completed" and not failed else 1


def _upload(api: ApiClient, path: Path) -> str:
    with path.open("rb") as f:
        return api.upload(path.name, f, "assistants")["id"]


def _list(api: ApiClient, args: argparse.Namespace) -> int:
    stores = api.all("/v1/vector_stores")
    rows = [{k: s.get(k) for k in ("id", "name", "status", "file_counts", "usage_bytes")} for s in stores]
    return print_json(rows)


def _search(api: ApiClient, args: argparse.Namespace) -> int:
    body = {"query": args.query, "max_num_results": args.max_results}
    for hit in api.call("POST", f"/v1/vector_stores/{args.store_id}/search", json=body)["data"]:
        text = " ".join(part["text"] for part in hit["content"])
        print(f"{hit['score']:.3f}  {hit['filename']}  {' '.join(text.split())[:300]}")
    return 0


def _delete(api: ApiClient, args: argparse.Namespace) -> int:
    return print_json(api.call("DELETE", f"/v1/vector_stores/{args.store_id}"))
