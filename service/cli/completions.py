"""`tuneserve completions list | export`: the chat completions stored with `store: true`, and a fine-tuning
file made of them (distillation: a stronger model's answers teach a smaller one)."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.cli.client import ApiClient, CliError, command, print_json

PATH = "/v1/chat/completions"


def register(sub: argparse._SubParsersAction) -> None:
    completions = sub.add_parser(
        "completions", help="chat completions stored with store: true, and training data of them"
    ).add_subparsers(required=True, metavar="ACTION")
    listing = completions.add_parser("list", help="list your stored chat completions, oldest first")
    _filters(listing)
    listing.set_defaults(func=command(lambda api, a: print_json([_summary(c) for c in _stored(api, a)])))
    export = completions.add_parser(
        "export",
        help="make a fine-tuning file of stored chat completions (one chat a line: the request's messages "
        "and tools, then the stored answer; cut-off answers left out) and print it",
    )
    _filters(export)
    export.add_argument("--filename", default="stored-chats.jsonl", help="the file's name in the service")
    export.add_argument("-o", "--output", type=Path, help="also save it here")
    export.set_defaults(func=command(_export))


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="only the completions of this model")
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only those with this metadata (repeatable: every pair must match)",
    )


def _stored(api: ApiClient, args: argparse.Namespace) -> list[dict]:
    params = {"order": "asc", **({"model": args.model} if args.model else {})}
    params |= {f"metadata[{k}]": v for k, v in _metadata(args).items()}
    return api.all(PATH, **params)


def _metadata(args: argparse.Namespace) -> dict[str, str]:
    pairs = {}
    for pair in args.metadata:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--metadata {pair!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def _summary(completion: dict) -> dict:
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    return {
        "id": completion["id"],
        "model": completion.get("model"),
        "created": completion.get("created"),
        "metadata": completion.get("metadata"),
        "finish_reason": choice.get("finish_reason"),
        "answer": (message.get("content") or "")[:80] or message.get("tool_calls"),
    }


def _export(api: ApiClient, args: argparse.Namespace) -> int:
    body = {"filename": args.filename, "model": args.model, "metadata": _metadata(args) or None}
    made = api.call("POST", f"{PATH}/export", json={k: v for k, v in body.items() if v is not None})
    if args.output is not None:
        api.download(f"/v1/files/{made['file_id']}/content", args.output)
        print(f"saved {args.output}")
    print_json(made)
    return 0
