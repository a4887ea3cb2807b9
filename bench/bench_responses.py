"""The Responses API against chat completions, on one stack: what the translation costs; with `--against
stored`, chat completions stored (`store: true`) against the same chats not stored.

`POST /v1/responses` is answered through the chat path, its chunks turned into the Responses events one by
one (`service.protocol.responses.ResponseStream`), so the engine does the same work for both; the
difference is the API's translation. One stack (`tuneserve up`, SmolLM2 only); bench_serving.py's 16
chats x 128 tokens (`ignore_eos`, greedy), streamed and not, chat and Responses alternating, the order of
each round's pair swapped every round (this machine drifts by up to 20 % within an hour). Ratio: Responses
over chat, the median of the rounds' pairs.

    .venv/bin/python bench/bench_responses.py [--rounds 6] [--against stored]    # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_serving import N_TOKENS, chat_bodies, summary  # noqa: E402
from bench.common import chat_burst, stack  # noqa: E402
from service.platform.settings import DEFAULT_BASE_MODEL  # noqa: E402


def responses_bodies(stream: bool) -> list[dict]:
    """The same 16 questions as Responses requests."""
    return [
        {
            "model": body["model"],
            "input": body["messages"][0]["content"],
            "max_output_tokens": N_TOKENS,
            "ignore_eos": True,
            "temperature": 0,
            "stream": stream,
        }
        for body in chat_bodies([DEFAULT_BASE_MODEL], stream)
    ]


def burst(url: str, headers: dict, api: str, stream: bool) -> dict:
    if api == "chat":
        wall, res = chat_burst(url, headers, chat_bodies([DEFAULT_BASE_MODEL], stream))
    elif api == "stored":  # kept with metadata: a streamed one added up from its chunks on the way
        bodies = [
            {**b, "store": True, "metadata": {"bench": "stored"}}
            for b in chat_bodies([DEFAULT_BASE_MODEL], stream)
        ]
        wall, res = chat_burst(url, headers, bodies)
    else:
        wall, res = chat_burst(url, headers, responses_bodies(stream), path="/v1/responses")
    return summary(wall, sum(n for _, n in res), [t for t, _ in res])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--against", choices=("responses", "stored"), default="responses")
    args = parser.parse_args()
    other, name = args.against, {"responses": "Responses", "stored": "stored chat"}[args.against]
    with stack() as (url, headers, _):  # serves SmolLM2 only
        for stream in (True, False):  # warm the engine and both paths
            burst(url, headers, "chat", stream)
            burst(url, headers, other, stream)
        rows: dict[tuple[str, bool], list[dict]] = {}
        for r in range(args.rounds):
            for stream in (True, False):
                for api in ("chat", other)[:: 1 if r % 2 == 0 else -1]:
                    rows.setdefault((api, stream), []).append(burst(url, headers, api, stream))
    print(f"| | chat tokens/s | {name} tokens/s | {name} / chat | TTFT p50 chat / {name} |")
    print("|---|---:|---:|---:|---:|")
    for stream in (True, False):
        chat, resp = rows[("chat", stream)], rows[(other, stream)]
        ratio = statistics.median(
            b["tokens_per_second"] / a["tokens_per_second"] for a, b in zip(chat, resp, strict=True)
        )
        ttft = (
            f"{statistics.median(a['ttft_p50'] * 1000 for a in chat):.0f} / "
            f"{statistics.median(b['ttft_p50'] * 1000 for b in resp):.0f} ms"
            if stream
            else ""
        )
        print(
            f"| {'streamed' if stream else 'not streamed'} | "
            f"{statistics.median(a['tokens_per_second'] for a in chat):.0f} | "
            f"{statistics.median(b['tokens_per_second'] for b in resp):.0f} | {ratio:.3f} | {ttft} |"
        )


if __name__ == "__main__":
    main()
