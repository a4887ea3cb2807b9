"""`tuneserve chat MODEL`: an interactive chat in the terminal that streams the model's tokens.

Each line read is a user turn (a terminal gets a `you>` prompt; piped input works too); an empty line or
end of input ends the chat. The conversation so far is sent with every turn. `--image PATH` (repeatable)
attaches images to the first turn, as data URLs, for a vision-language model. `--vector-store ID`
(repeatable) answers from the store's documents and prints the chunks it was given as citations.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.cli.client import ApiClient, CliError, command
from service.cli.images import data_url


def register(sub: argparse._SubParsersAction) -> None:
    chat = sub.add_parser("chat", help="chat with a model; streams its answers")
    chat.add_argument("model", help="a base or fine-tuned model id (`GET /v1/models`)")
    chat.add_argument("--system", help="a system message")
    chat.add_argument("--temperature", type=float, default=0.7)
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument(
        "--vector-store",
        action="append",
        default=[],
        metavar="ID",
        help="answer from this vector store's documents, with citations (repeatable)",
    )
    chat.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="an image for the first turn (repeatable)",
    )
    chat.set_defaults(func=command(_chat))


def image_part(path: Path) -> dict:
    """An image file as a chat content part (a data URL; the service checks it)."""
    if not path.is_file():
        raise CliError(f"--image {path}: no such file")
    return {"type": "image_url", "image_url": {"url": data_url(path)}}


def _chat(api: ApiClient, args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    messages = [{"role": "system", "content": args.system}] if args.system else []
    images = [image_part(Path(p)) for p in args.image]
    while True:
        try:
            line = input("you> " if interactive else "").strip()
        except EOFError:
            break
        if not line:
            break
        if images:
            messages.append({"role": "user", "content": [*images, {"type": "text", "text": line}]})
            images = []
        else:
            messages.append({"role": "user", "content": line})
        body = {
            "model": args.model,
            "messages": messages,
            "temperature": args.temperature,
            "max_tokens": args.max_tokens,
            "stream": True,
        }
        if args.vector_store:
            body["retrieval"] = {"vector_store_ids": args.vector_store}
        if interactive:
            print(f"{args.model}> ", end="", flush=True)
        answer, citations = [], []
        for event in api.events("POST", "/v1/chat/completions", json=body):
            citations += event.get("citations") or []  # retrieval's, in the first chunk
            for choice in event.get("choices", []):
                piece = choice.get("delta", {}).get("content") or ""
                answer.append(piece)
                print(piece, end="", flush=True)
        print(flush=True)
        for c in citations:
            print(f"  [{c['index']}] {c['filename']} ({c['score']:.2f}): {' '.join(c['text'].split())[:120]}")
        messages.append({"role": "assistant", "content": "".join(answer)})
    return 0
