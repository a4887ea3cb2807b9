"""`tuneserve completions list | export`: the chat completions stored with `store: true`, and fine-tuning
data made of them (distillation: a stronger model's answers teach a smaller one)."""

from __future__ import annotations

import argparse
import json
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
        help="write stored chat completions as fine-tuning data (one chat a line: the request's messages "
        "and tools, then the stored answer)",
    )
    _filters(export)
    export.add_argument("-o", "--output", type=Path, required=True, help="the JSONL file to write")
    export.add_argument(
        "--upload", action="store_true", help="then upload it (purpose fine-tune) and print the file"
    )
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
    for pair in args.metadata:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--metadata {pair!r}: expected KEY=VALUE")
        params[f"metadata[{key}]"] = value
    return api.all(PATH, **params)


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
    from tqdm import tqdm

    completions = _stored(api, args)
    if not completions:
        raise CliError("no stored chat completions match (create them with store: true)")
    written = skipped = 0
    with args.output.open("w") as out:
        for completion in tqdm(completions, unit="chat", dynamic_ncols=True, desc=args.output.name):
            messages = api.all(f"{PATH}/{completion['id']}/messages", order="asc")
            example = training_example(completion, messages)
            if example is None:
                skipped += 1
                continue
            out.write(json.dumps(example, ensure_ascii=False) + "\n")
            written += 1
    print(
        f"wrote {written} chats to {args.output}" + (f"; skipped {skipped} (see --help)" if skipped else "")
    )
    if args.upload and written:
        with args.output.open("rb") as f:
            print_json(api.upload(args.output.name, f, "fine-tune"))
    return 0


def training_example(completion: dict, messages: list[dict]) -> dict | None:
    """One line of chat fine-tuning data: the messages as the client sent them, then the stored answer
    (its first choice); the tools it was asked with, if any. None for an answer that cannot teach: cut off
    by `max_tokens` (finish_reason "length"), or empty."""
    choices = completion.get("choices") or []
    if not choices or choices[0].get("finish_reason") == "length":
        return None
    answer = choices[0].get("message") or {}
    reply = {"role": "assistant"}
    if answer.get("content"):
        reply["content"] = answer["content"]
    if answer.get("tool_calls"):
        reply["tool_calls"] = answer["tool_calls"]
    if len(reply) == 1:
        return None
    sent = [_as_sent(m) for m in messages]
    return {"messages": [*sent, reply], **({"tools": completion["tools"]} if completion.get("tools") else {})}


def _as_sent(message: dict) -> dict:
    """A listed message as the client sent it: without the id the list adds, its parts as its content."""
    sent = {k: v for k, v in message.items() if k not in ("id", "content_parts")}
    if message.get("content_parts") is not None:
        sent["content"] = message["content_parts"]
    return sent
