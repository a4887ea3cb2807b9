"""What the benchmark scripts share: running one configuration per process, percentiles, and a stack of
their own on a fresh data dir."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "data" / "models"


def child(script: str, name: str, *args: str, env: dict | None = None) -> dict | list:
    """Run `script --one name args...` in a fresh process; its last stdout line is the JSON result."""
    out = subprocess.run(
        [sys.executable, script, "--one", name, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


@contextlib.contextmanager
def stack(extra_env: dict[str, str] | None = None, **settings: str) -> Iterator[tuple[str, dict, Path]]:
    """A stack on a fresh data dir and a free port: (base URL, auth headers, data dir); stopped after.
    `extra_env` (Ray's RAY_ settings, say) is added to the environment `tuneserve up` runs in."""
    from service.platform.net import free_port

    data_dir = Path(tempfile.mkdtemp(prefix="ts-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESERVE_")} | (extra_env or {})
    port = free_port()
    env.update(
        TUNESERVE_DATA_DIR=str(data_dir),
        TUNESERVE_PORT=str(port),
        TUNESERVE_MODELS_DIR=str(MODELS_DIR),
        **{f"TUNESERVE_{k.upper()}": v for k, v in settings.items()},
    )
    cli = [sys.executable, "-m", "service.cli"]
    subprocess.run([*cli, "up", "--detach"], env=env, check=True, capture_output=True)
    try:
        headers = {"Authorization": f"Bearer {(data_dir / 'api_key').read_text().strip()}"}
        yield f"http://127.0.0.1:{port}", headers, data_dir
    finally:
        subprocess.run([*cli, "down"], env=env, capture_output=True)


def wait_until_answers(url: str, what: str, alive=lambda: True, timeout: float = 300) -> None:
    """Polls `url` until it answers; a RuntimeError naming `what` once `alive()` is false or at `timeout`."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if not alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(1)


@contextlib.contextmanager
def vllm_server(
    model: Path, adapters: dict[str, Path] | None = None, cpu_threads: str = "all"
) -> Iterator[str]:
    """vLLM's own OpenAI server (`vllm.entrypoints.openai.api_server`) alone, with the service's engine
    arguments (`deploy.llm.engine_kwargs`, as command-line flags) and CPU binding (`cpu_threads`, as
    TUNESERVE_SERVING_CPU_THREADS): what a user would run without the service. `adapters` (served name ->
    PEFT folder) are served too. Yields the base URL."""
    from deploy.llm import cpu_binding_env, engine_kwargs
    from service.platform.net import free_port
    from service.platform.settings import Settings

    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    cmd += ["--served-model-name", model.name, "--port", str(port), "--host", "127.0.0.1"]
    cmd += ["--disable-uvicorn-access-log"]
    if adapters:
        cmd += ["--lora-modules", *(f"{name}={folder}" for name, folder in adapters.items())]
    for key, value in engine_kwargs(Settings(), model.name, str(model)).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is not False:
            cmd += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    env = {**os.environ, **cpu_binding_env(cpu_threads, os.cpu_count() or 1), "VLLM_LOGGING_LEVEL": "WARNING"}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_answers(f"{url}/health", "vLLM's server", alive=lambda: proc.poll() is None)
            except RuntimeError as exc:
                proc.kill()
                log.seek(0)
                raise RuntimeError(f"{exc}:\n{log.read()[-3000:]}") from None
            yield url
        finally:
            proc.terminate()
            proc.wait(60)


@contextlib.contextmanager
def serve_llm_direct(model: Path) -> Iterator[str]:
    """Ray Serve LLM's leanest path, for reference: its direct streaming mode (the LLMServer replica is the
    ingress and serves vLLM's own OpenAI app; HAProxy forwards HTTP straight to it), on a bare local Ray
    without the service (no dashboard, object store or API), with the service's engine settings: what any
    Ray Serve deployment of this engine reaches on this machine. Yields the base URL; one per process (Ray
    Serve reads these settings at import)."""
    from service.platform.net import free_port, free_ports

    haproxy_dir = tempfile.mkdtemp(prefix="haproxy-")
    metrics_port, stats_port = free_ports(2)
    os.environ.update(  # read by Ray Serve at import, and by the processes ray.init starts
        RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING="1",
        RAY_SERVE_ENABLE_HA_PROXY="1",
        # HAProxy's defaults: fixed ports on every interface and files under /tmp/haproxy-serve
        RAY_SERVE_HAPROXY_METRICS_PORT=str(metrics_port),
        RAY_SERVE_HAPROXY_STATS_PORT=str(stats_port),
        RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=f"{haproxy_dir}/haproxy.cfg",
        RAY_SERVE_HAPROXY_SOCKET_PATH=f"{haproxy_dir}/admin.sock",
        RAY_SERVE_HAPROXY_SERVER_STATE_BASE=haproxy_dir,
        RAY_SERVE_HAPROXY_SERVER_STATE_FILE=f"{haproxy_dir}/server-state",
    )
    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    from deploy.llm import cpu_binding_env, engine_kwargs
    from service.platform.settings import Settings

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        config = LLMConfig(  # deploy.llm.llm_config's, less the object store (no adapters here)
            model_loading_config={"model_id": model.name, "model_source": str(model)},
            accelerator_config={"kind": "cpu"},
            engine_kwargs=engine_kwargs(Settings(), model.name, str(model)),
            runtime_env={
                "env_vars": {**cpu_binding_env("all", os.cpu_count() or 1), "VLLM_LOGGING_LEVEL": "WARNING"}
            },
        )
        serve.run(build_openai_app({"llm_configs": [config]}), blocking=False)
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{url}/v1/models", "Ray Serve LLM")
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


class FolderStore:
    """The two object-store calls training makes, on a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_bytes(self, key: str, sha256: str | None = None) -> bytes:
        data = (self.root / key).read_bytes()
        assert sha256 is None or hashlib.sha256(data).hexdigest() == sha256
        return data

    def put_folder(self, prefix: str, folder: str, unchecked=()) -> None:
        shutil.copytree(folder, self.root / prefix, dirs_exist_ok=True)


# Training baselines: a plain HF Trainer, timed per step ---------------------------------------------


def plain_trainer(
    model, examples: list, collate, batch: int, epochs: int, lr: float, bf16: bool
) -> list[float]:
    """Train `model` with a plain transformers `Trainer` on CPU; the duration of each step."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t0)

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=batch,
        num_train_epochs=epochs,
        learning_rate=lr,
        bf16=bf16,
        use_cpu=True,
        report_to=[],
        logging_steps=10**9,
        save_strategy="no",
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    Trainer(
        model=model, args=args, train_dataset=examples, data_collator=collate, callbacks=[Timer()]
    ).train()
    return step_times


# Processes ----------------------------------------------------------------------------------------


def read_proc(path: str) -> str:
    """A /proc file as text (NULs as spaces); empty if the process is gone."""
    try:
        return Path(path).read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stack_root(data_dir: Path) -> int:
    """The supervisor of the stack on `data_dir`: every process of the stack is below it."""
    return json.loads((data_dir / "run" / "stack.json").read_text())["pid"]


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := read_proc(f"/proc/{entry}/stat")):
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        found += frontier
    return found


# Serving: one streamed chat over HTTP ----------------------------------------------------------------


def chat_burst(
    base_url: str, headers: dict, bodies: list[dict], path: str = "/v1/chat/completions"
) -> tuple[float, list[tuple[float, int]]]:
    """POST every chat at once, each from its own thread with the standard library's HTTP client (a thin
    client: an asyncio client in one process lagged behind 16 streams by seconds on 2 cores and blamed the
    server). The burst's wall time, and per chat: time to the first content (the whole answer when not
    streamed) and completion tokens (counted as content events when streamed without usage). `path`
    /v1/responses reads the Responses API's answers and events instead."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    results: list = [None] * len(bodies)

    def one(i: int, body: dict) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        conn.request(
            "POST",
            path,
            json.dumps(body),
            {**headers, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        if resp.status != 200:
            results[i] = RuntimeError(f"{resp.status} {resp.read()[:500]!r}")
            return
        responses = path.endswith("/responses")
        if not body.get("stream"):
            usage = json.loads(resp.read())["usage"]
            results[i] = (
                time.perf_counter() - start,
                usage["output_tokens" if responses else "completion_tokens"],
            )
            return
        first, events, usage = None, 0, None
        while (line := resp.readline()) and not line.startswith(b"data: [DONE]"):
            if not line.startswith(b"data: {"):
                continue
            event = json.loads(line[6:])
            if responses:
                done = event["type"] in ("response.completed", "response.incomplete")
                usage = event["response"]["usage"]["output_tokens"] if done else usage
                content = event["type"] == "response.output_text.delta"
            else:
                usage = event["usage"]["completion_tokens"] if event.get("usage") else usage
                content = any(c["delta"].get("content") for c in event.get("choices", []))
            if content:
                first = first or time.perf_counter() - start
                events += 1
        results[i] = (first, usage if usage is not None else events)

    threads = [threading.Thread(target=one, args=(i, b)) for i, b in enumerate(bodies)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise errors[0]
    return wall, results


def run_job(base: str, headers: dict, body: dict) -> tuple[float, list[dict], list[dict]]:
    """POST a fine-tuning job, wait for it to succeed (polling gently: on 2 cores a busy poller slows the
    job it measures); when it was posted, its step-metric events in step order, and all its events."""
    import httpx

    posted = time.time()
    job = httpx.post(f"{base}/fine_tuning/jobs", headers=headers, json=body, timeout=300).json()
    while (
        status := httpx.get(f"{base}/fine_tuning/jobs/{job['id']}", headers=headers, timeout=30).json()[
            "status"
        ]
    ) not in ("succeeded", "failed", "cancelled"):
        time.sleep(3)
    assert status == "succeeded", status
    events = httpx.get(
        f"{base}/fine_tuning/jobs/{job['id']}/events?limit=1000", headers=headers, timeout=30
    ).json()["data"]
    steps = sorted(
        (e for e in events if e["type"] == "metrics" and "tokens_per_second" in e["data"]),
        key=lambda e: e["data"]["step"],
    )
    return posted, steps, events
