"""`tuneserve batches ...`: answer a file of requests in the background (the Batch API) with a progress bar,
and save the answers."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from service.cli.client import ApiClient, CliError, command, print_json

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
SHOWN = ("id", "status", "endpoint", "request_counts", "usage", "output_file_id", "error_file_id", "errors")


def register(sub: argparse._SubParsersAction) -> None:
    batches = sub.add_parser("batches", help="answer files of requests in the background").add_subparsers(
        required=True, metavar="ACTION"
    )
    run = batches.add_parser("run", help="run a JSONL file of requests as a batch and save the answers")
    run.add_argument(
        "file", type=Path, help='one request a line: {"custom_id", "method": "POST", "url", "body"}'
    )
    run.add_argument(
        "--output",
        type=Path,
        help="where the answers go (default: FILE.output.jsonl); failed requests go beside it in "
        "*.errors.jsonl",
    )
    run.add_argument("--detach", action="store_true", help="return once the batch is created")
    run.set_defaults(func=command(_run))
    batches.add_parser("list", help="list your batches, newest first").set_defaults(
        func=command(lambda api, a: print_json([_summary(b) for b in api.all("/v1/batches")]))
    )
    show = batches.add_parser("show", help="show a batch")
    show.add_argument("batch_id")
    show.set_defaults(func=command(lambda api, a: print_json(api.call("GET", f"/v1/batches/{a.batch_id}"))))
    cancel = batches.add_parser("cancel", help="stop a batch, keeping what it answered")
    cancel.add_argument("batch_id")
    cancel.set_defaults(
        func=command(
            lambda api, a: print_json(_summary(api.call("POST", f"/v1/batches/{a.batch_id}/cancel")))
        )
    )


def _run(api: ApiClient, args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    with path.open("rb") as f:
        file = api.upload(path.name, f, "batch")  # every line is checked here: a 400 names a bad one
    body = {"input_file_id": file["id"], "endpoint": _endpoint(path), "completion_window": "24h"}
    batch = api.call("POST", "/v1/batches", json=body)
    print(f"created {batch['id']} ({batch['request_counts']['total']} requests to {batch['endpoint']})")
    if args.detach:
        return 0
    batch = _follow(api, batch)
    output = args.output or path.with_suffix(".output.jsonl")
    for file_id, dest in (
        (batch["output_file_id"], output),
        (batch["error_file_id"], output.with_name(output.name.removesuffix(".jsonl") + ".errors.jsonl")),
    ):
        if file_id is not None:
            api.download(f"/v1/files/{file_id}/content", dest)
            print(f"saved {dest}")
    print_json(_summary(batch))
    return 0 if batch["status"] == "completed" else 1


def _endpoint(path: Path) -> str:
    """The `url` of the file's first request (the API checks that every line has it)."""
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                try:
                    return str(json.loads(line).get("url"))
                except (ValueError, AttributeError):
                    break
    return "/v1/chat/completions"  # the upload's check names what is wrong with the file


def _follow(api: ApiClient, batch: dict) -> dict:
    from tqdm import tqdm

    with tqdm(total=batch["request_counts"]["total"], unit="request", dynamic_ncols=True) as bar:
        while batch["status"] in ACTIVE:
            time.sleep(1)
            batch = api.call("GET", f"/v1/batches/{batch['id']}")
            counts = batch["request_counts"]
            bar.update(counts["completed"] + counts["failed"] - bar.n)
            bar.set_postfix(status=batch["status"], failed=counts["failed"])
    return batch


def _summary(batch: dict) -> dict:
    return {k: batch.get(k) for k in SHOWN}
