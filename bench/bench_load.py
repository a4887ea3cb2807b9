"""Load and tenant isolation: a quiet tenant's mixed traffic alone, then while another tenant floods chat.

One stack (loopback only) with limits low enough to reach on 2 cores. The quiet tenant runs one client in a
loop: a streamed chat on the base model, a vector store search, a small upload and a model listing. Phases,
each `--seconds` long, back to back on the same stack:

- `alone`: the quiet tenant only (the baseline);
- `flood`: plus a tenant with `--flooders` concurrent clients streaming chats as fast as they can, far
  past its requests-per-minute and open-stream limits;
- `flood+training`: the same, while a fine-tuning job of the flooding tenant trains.

Prints, per phase and route: requests, 429s, failures (5xx, errors, timeouts), p50/p99 latency (time to
the whole answer), and the quiet tenant's p99 against its own `alone` p99. The expected outcome: no
failures anywhere, the flooder's excess refused with 429s, and the quiet tenant slowed only by the share
of the engine that the flooder's admitted requests take.

    .venv/bin/python bench/bench_load.py                 # ~6 min on 2 cores
    .venv/bin/python bench/bench_load.py --seconds 30    # quicker
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import percentile, stack  # noqa: E402
from service.platform.settings import DEFAULT_BASE_MODEL  # noqa: E402

LIMITS = {"rate_limit_requests_per_minute": "240", "max_concurrent_streams_per_tenant": "4"}
TIMEOUT_S = 120


class Recorder:
    """Latencies and outcomes per (tenant, route), from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.outcomes: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, tenant: str, route: str, outcome: str, seconds: float) -> None:
        with self.lock:
            self.outcomes[(tenant, route)][outcome] += 1
            if outcome == "ok":
                self.latencies[(tenant, route)].append(seconds)


def call(
    url: str, key: str, method: str = "GET", body: bytes | None = None, ctype: str = ""
) -> tuple[str, bytes]:
    """One request; its outcome (`ok`, `429`, `fail`) and body. A 4xx other than 429 is a failure here:
    every request the bench sends is valid."""
    headers = {"Authorization": f"Bearer {key}"}
    if ctype:
        headers["Content-Type"] = ctype
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            return "ok", resp.read()
    except urllib.error.HTTPError as err:
        return ("429" if err.code == 429 else "fail"), err.read()
    except OSError:  # timeouts, resets
        return "fail", b""


def chat_body(i: int) -> bytes:
    return json.dumps(
        {
            "model": DEFAULT_BASE_MODEL,
            "messages": [{"role": "user", "content": f"Name a colour (request {i})."}],
            "max_tokens": 16,
            "stream": True,
        }
    ).encode()


def multipart(content: bytes) -> tuple[bytes, str]:
    boundary = "tuneserve-bench-boundary"
    out = io.BytesIO()
    for name, value in (("purpose", b"assistants"),):
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value
            + b"\r\n"
        )
    out.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="note.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n".encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def quiet_client(base: str, key: str, store_id: str, rec: Recorder, stop: threading.Event) -> None:
    i = 0
    upload, ctype = multipart(b"A note about owls, which hunt at night. " * 20)
    search = json.dumps({"query": "When do owls hunt?", "max_num_results": 3}).encode()
    routes = [
        (
            "chat (stream)",
            lambda: call(f"{base}/v1/chat/completions", key, "POST", chat_body(i), "application/json"),
        ),
        (
            "search",
            lambda: call(
                f"{base}/v1/vector_stores/{store_id}/search", key, "POST", search, "application/json"
            ),
        ),
        ("upload", lambda: call(f"{base}/v1/files", key, "POST", upload, ctype)),
        ("list models", lambda: call(f"{base}/v1/models", key)),
    ]
    while not stop.is_set():
        route, send = routes[i % len(routes)]
        start = time.perf_counter()
        outcome, _ = send()
        rec.add("quiet", route, outcome, time.perf_counter() - start)
        i += 1


def flood_client(base: str, key: str, rec: Recorder, stop: threading.Event, seed: int) -> None:
    i = seed * 100_000
    while not stop.is_set():
        start = time.perf_counter()
        outcome, _ = call(f"{base}/v1/chat/completions", key, "POST", chat_body(i), "application/json")
        rec.add("flood", "chat (stream)", outcome, time.perf_counter() - start)
        if outcome == "429":
            time.sleep(
                0.05
            )  # a hostile client ignores Retry-After; a little pause keeps the bench's own CPU low
        i += 1


def tenant_key(base: str, admin: str, tenant: str) -> str:
    body = json.dumps({"tenant": tenant}).encode()
    return json.loads(call(f"{base}/v1/admin/api_keys", admin, "POST", body, "application/json")[1])["key"]


def start_training(base: str, key: str) -> str:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Say item {i}."},
                    {"role": "assistant", "content": f"Item {i}."},
                ]
            }
        )
        for i in range(64)
    ]
    data, ctype = multipart(("\n".join(lines) + "\n").encode())
    data = data.replace(b"assistants", b"fine-tune")
    file_id = json.loads(call(f"{base}/v1/files", key, "POST", data, ctype)[1])["id"]
    job = {"model": DEFAULT_BASE_MODEL, "training_file": file_id, "hyperparameters": {"n_epochs": 10}}
    return json.loads(
        call(f"{base}/v1/fine_tuning/jobs", key, "POST", json.dumps(job).encode(), "application/json")[1]
    )["id"]


def run_phase(base: str, keys: dict[str, str], store_id: str, seconds: float, flooders: int) -> Recorder:
    rec, stop = Recorder(), threading.Event()
    threads = [threading.Thread(target=quiet_client, args=(base, keys["quiet"], store_id, rec, stop))]
    threads += [
        threading.Thread(target=flood_client, args=(base, keys["flood"], rec, stop, n))
        for n in range(flooders)
    ]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(TIMEOUT_S + 5)
    return rec


def report(phases: dict[str, Recorder]) -> None:
    header = ("phase", "tenant", "route", "requests", "429", "failed", "p50 s", "p99 s", "p99 / alone")
    print("\n" + "{:<16} {:<6} {:<14} {:>8} {:>5} {:>6} {:>7} {:>7} {:>11}".format(*header))
    alone = phases["alone"]
    for name, rec in phases.items():
        for (tenant, route), outcomes in sorted(rec.outcomes.items()):
            lat = rec.latencies[(tenant, route)]
            p50 = percentile(lat, 0.5) if lat else float("nan")
            p99 = percentile(lat, 0.99) if lat else float("nan")
            base = alone.latencies.get((tenant, route))
            ratio = f"{p99 / percentile(base, 0.99):.2f}x" if base and lat else ""
            total = sum(outcomes.values())
            print(
                f"{name:<16} {tenant:<6} {route:<14} {total:>8} {outcomes.get('429', 0):>5} "
                f"{outcomes.get('fail', 0):>6} {p50:>7.3f} {p99:>7.3f} {ratio:>11}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--flooders", type=int, default=12)
    args = parser.parse_args()
    with stack(**LIMITS) as (base, headers, _):
        admin = headers["Authorization"].removeprefix("Bearer ")
        keys = {t: tenant_key(base, admin, t) for t in ("quiet", "flood")}
        data, ctype = multipart(b"Owls hunt at night and sleep by day. Bats eat insects. " * 10)
        file_id = json.loads(call(f"{base}/v1/files", keys["quiet"], "POST", data, ctype)[1])["id"]
        store = {"name": "bench", "file_ids": [file_id]}
        store_id = json.loads(
            call(
                f"{base}/v1/vector_stores",
                keys["quiet"],
                "POST",
                json.dumps(store).encode(),
                "application/json",
            )[1]
        )["id"]
        time.sleep(5)  # ingestion
        run_phase(base, keys, store_id, 10, 0)  # warm-up: compiled graphs, caches
        phases = {
            "alone": run_phase(base, keys, store_id, args.seconds, 0),
            "flood": run_phase(base, keys, store_id, args.seconds, args.flooders),
        }
        job_id = start_training(base, keys["flood"])
        time.sleep(20)  # the run starts
        phases["flood+training"] = run_phase(base, keys, store_id, args.seconds, args.flooders)
        status = json.loads(call(f"{base}/v1/fine_tuning/jobs/{job_id}", keys["flood"])[1])["status"]
        call(f"{base}/v1/fine_tuning/jobs/{job_id}/cancel", keys["flood"], "POST", b"{}", "application/json")
    print(
        f"limits: {LIMITS}; {args.flooders} flooding clients; {args.seconds:g} s per phase; job was {status}"
    )
    report(phases)


if __name__ == "__main__":
    main()
