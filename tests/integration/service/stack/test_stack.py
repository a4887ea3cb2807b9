"""The embedded stack end to end: real HTTP, the official openai client, the CLI."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from service.platform.settings import DEFAULT_BASE_MODEL, VISION_TEST_MODEL
from tests.integration.helpers import (
    DATA,
    REPO,
    RunningStack,
    make_stack,
    process_cmdlines,
    ray_auth_of,
    stack_pids,
    wait_until,
)


def test_openai_client_lists_the_base_model(stack: RunningStack) -> None:
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.admin_key)
    models = list(client.models.list())
    assert models[0].id == DEFAULT_BASE_MODEL and models[0].owned_by == "tuneserve"
    # Each model says what it takes: the test VLM (a base model of the test stack) takes images too.
    assert {m.id: m.model_extra["modalities"] for m in models[:2]} == {
        DEFAULT_BASE_MODEL: ["text"],
        VISION_TEST_MODEL: ["text", "image"],
    }
    # Then the embedder, which /v1/embeddings serves (`type` says which answers what).
    assert [(m.id, m.model_extra["type"]) for m in models[1:3]] == [
        (VISION_TEST_MODEL, "llm"),
        ("all-MiniLM-L6-v2", "embeddings"),
    ]


def test_openai_client_gets_401_in_openai_shape(stack: RunningStack) -> None:
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key="ts-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        client.models.list()
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"


def test_health_reports_every_component_ok(stack: RunningStack) -> None:
    body = stack.get("/health").json()
    assert body["status"] == "ok", body
    assert set(body["components"]) == {"db", "object_store", "ray", "serving", "engines", "jobs"}
    assert "1 node(s)" in body["components"]["ray"]["detail"]


def test_hundreds_of_open_requests_do_not_hold_up_the_next_one(stack: RunningStack) -> None:
    # Uploads whose bodies never come (a slow client, or a hostile one) each hold a request open in the API
    # replica. Ray Serve admits as many at once as the replica's max_ongoing_requests and queues the rest:
    # past that a health check or a chat would wait behind them, however light.
    held = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", stack.port))
            sock.sendall(_stalled_upload(stack.admin_key))
            held.append(sock)
        time.sleep(2)  # all of them in the API, waiting for their bodies
        assert stack.get("/health").json()["status"] == "ok"  # 30 s at most
        assert stack.get("/v1/models").status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_an_upload_whose_body_stops_coming_gets_a_408(stack: RunningStack) -> None:
    timeout_s = float(stack.env.get("TUNESERVE_REQUEST_BODY_TIMEOUT_S", 60))
    with socket.create_connection(("127.0.0.1", stack.port)) as sock:
        sock.sendall(_stalled_upload(stack.admin_key))
        sock.settimeout(timeout_s + 30)
        started = time.monotonic()
        answer = _read_response(sock)
    assert answer.startswith("HTTP/1.1 408"), answer
    assert (
        '"code":"request_timeout"' in answer.replace(" ", "") and "TUNESERVE_REQUEST_BODY_TIMEOUT_S" in answer
    )
    assert time.monotonic() - started >= timeout_s - 1


def _read_response(sock: socket.socket) -> str:
    """A whole response, however the network splits it (its head and body can come in two reads)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if sep and length and len(body) >= int(length.group(1)):
            break
    return data.decode()


def _stalled_upload(key: str) -> bytes:
    """The start of a file upload whose body never comes."""
    return (
        f"POST /v1/files HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n"
    ).encode()


def test_the_stack_runs_no_usage_telemetry_actor_and_no_model_download_task(stack: RunningStack) -> None:
    # Ray Serve LLM would start a telemetry actor per cluster, and a task per node to download the base
    # model, which is a local folder (deploy.llm's `_start_engine` and deploy.node_init say why not).
    import ray
    from ray.util.state import list_tasks

    from service.stack.supervisor import ray_auth_env

    def listed(name: str) -> bool:  # by name: the listing returns 100 tasks, and the stack has run more
        filters = [("func_or_class_name", "=", name)]
        return bool(list_tasks(address=stack.state["ray_dashboard_url"], filters=filters))

    # Proof that the listing shows tasks: one run by a driver of its own (a fresh process: this one's Ray
    # state after the earlier modules' clusters once kept its own task from being listed).
    probe = (
        "import ray\n"
        "def tuneserve_listing_probe():\n    return 1\n"
        f"ray.init(address={stack.state['ray_address']!r}, log_to_driver=False)\n"
        "ray.get(ray.remote(num_cpus=0)(tuneserve_listing_probe).remote())\n"
    )
    env = {**os.environ, **ray_auth_env(stack.data_dir)}
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, timeout=120)
    with ray_auth_of(stack):
        ray.init(address=stack.state["ray_address"], log_to_driver=False)
        try:  # from this stack's GCS (Ray's state API would look for "the" local cluster: tests run several)
            named = [f"{a['namespace']}/{a['name']}" for a in ray.util.list_named_actors(all_namespaces=True)]
            wait_until(lambda: listed("tuneserve_listing_probe"), 90, "the probe task listed")
            downloaded = listed("initialize_remote_node")
        finally:
            ray.shutdown()
    assert any("SERVE_REPLICA::tuneserve#vllm:" in name for name in named), named  # the listing works
    assert not any("telemetry" in name.lower() for name in named), named
    assert not downloaded


def ray_worker_environ(stack: RunningStack, title: str) -> dict[str, str]:
    """The environment the stack's Ray worker whose process title has `title` started with."""

    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    cmdlines = process_cmdlines()
    [raylet] = [p for p in stack_pids(stack.data_dir) if "raylet/raylet" in cmdlines.get(p, "")]
    [worker] = [p for p, cmd in cmdlines.items() if title in cmd and parent(p) == raylet]
    environ = Path(f"/proc/{worker}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(line.split("=", 1) for line in environ if "=" in line)


def test_rays_background_loops_run_at_the_stacks_pace(stack: RunningStack) -> None:
    # Serve's controller is a worker of this stack's raylet: it inherits the head's environment, where the
    # supervisor slows Ray's 100 ms loops and puts Serve on its fast path (service.stack.supervisor says why).
    from service.stack.supervisor import QUIET_LOOPS_ENV, SERVE_FAST_PATH_ENV

    env = ray_worker_environ(stack, "ServeController")
    wanted = QUIET_LOOPS_ENV | SERVE_FAST_PATH_ENV
    assert {k: env.get(k) for k in wanted} == wanted


def test_the_apis_embedder_may_use_every_core(stack: RunningStack) -> None:
    # Ray gives a worker that holds no CPUs one OpenMP thread unless its environment says otherwise; the API
    # replica holds none, and embeds on every core (deploy.app.api_env).
    env = ray_worker_environ(stack, "ServeReplica:tuneserve:api")
    assert env.get("OMP_NUM_THREADS") == str(os.cpu_count())


def omp_threads() -> str:
    return os.environ["OMP_NUM_THREADS"]


def test_a_task_gets_as_many_threads_as_cpus_whatever_its_submitter_has(stack: RunningStack) -> None:
    # Tasks inherit their submitter's environment, and the API's allows every core (the test above): files
    # ingested in parallel would each run that many threads on the same cores (deploy.tasks).
    import asyncio

    import ray

    from deploy.tasks import RayTaskRunner

    submitter = {"env_vars": {"OMP_NUM_THREADS": "7"}}
    with ray_auth_of(stack):
        ray.init(address=stack.state["ray_address"], log_to_driver=False, runtime_env=submitter)
        try:
            threads = asyncio.run(RayTaskRunner().run(omp_threads, cpus=1))
        finally:
            ray.shutdown()
    assert threads == "1"


def test_status_command(stack: RunningStack) -> None:
    out = stack.cli("status").stdout
    assert '"running": true' in out and '"status": "ok"' in out


def test_cli_creates_a_tenant_key_that_works(stack: RunningStack) -> None:
    import json

    created = json.loads(stack.cli("keys", "create", "--tenant", "acme").stdout)
    assert stack.get("/v1/models", key=created["key"]).status_code == 200
    assert stack.get("/v1/admin/api_keys", key=created["key"]).status_code == 403


def test_docs_are_served(stack: RunningStack) -> None:
    spec = httpx.get(stack.base_url + "/openapi.json", timeout=30).json()
    assert spec["info"]["title"] == "tuneserve" and "/v1/models" in spec["paths"]
    # Every operation is documented with a summary (what /docs lists it by).
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
    docs = httpx.get(stack.base_url + "/docs", timeout=30)
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "/openapi.json" in docs.text


def test_second_stack_on_same_data_dir_is_refused(stack: RunningStack) -> None:
    twin = make_stack(stack.data_dir)
    proc = twin.cli("up", "--detach", check=False, timeout=60)
    assert proc.returncode == 1
    assert "already running" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    s = make_stack(tmp_path / "foreground")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "up"],
        env=s.env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: _healthy(s) or proc.poll() is not None, 180, "the foreground stack to be ready")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "tuneserve is up" in out and out.rstrip().endswith("stopped"), out
    wait_until(lambda: not stack_pids(s.data_dir), 30, "Ctrl-C to stop every process")


def _healthy(s: RunningStack) -> bool:
    try:
        return httpx.get(s.base_url + "/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_cli_keys_files_models_and_jobs(stack: RunningStack, tmp_path: Path) -> None:
    import json

    created = json.loads(stack.cli("keys", "create", "--tenant", "cli-user").stdout)
    assert created["id"] in [k["id"] for k in json.loads(stack.cli("keys", "list").stdout)]
    assert json.loads(stack.cli("keys", "revoke", created["id"]).stdout)["revoked_at"]
    assert stack.get("/v1/models", key=created["key"]).status_code == 401

    data = tmp_path / "codeword.jsonl"
    data.write_bytes(b"\n".join((DATA / "codeword_train.jsonl").read_bytes().splitlines()[:8]) + b"\n")
    uploaded = json.loads(stack.cli("files", "upload", str(data)).stdout)
    assert uploaded["purpose"] == "fine-tune" and uploaded["bytes"] == data.stat().st_size
    assert uploaded["id"] in [f["id"] for f in json.loads(stack.cli("files", "list").stdout)]

    # `finetune` uploads a local file itself; following a job's progress bar: test_fine_tuning.py.
    detached = stack.cli("finetune", "--model", DEFAULT_BASE_MODEL, "--training-file", str(data), "--detach")
    job_id = detached.stdout.split()[1]  # "created ftjob-... (queued)"
    assert job_id.startswith("ftjob-") and "(queued)" in detached.stdout
    assert json.loads(stack.cli("jobs", "pause", job_id).stdout)["status"] == "paused"
    # At once: a run still stopping is replaced once it has stopped (the scheduler's unit tests).
    assert json.loads(stack.cli("jobs", "resume", job_id).stdout)["status"] == "queued"
    assert json.loads(stack.cli("jobs", "cancel", job_id).stdout)["status"] == "cancelled"
    shown = json.loads(stack.cli("jobs", "show", job_id).stdout)
    assert shown["status"] == "cancelled" and shown["training_file"].startswith("file-")
    followed = stack.cli("jobs", "follow", job_id, check=False)
    assert followed.returncode == 1 and "Job cancelled by the user" in followed.stdout, followed.stdout
    # Every run the job had on Ray ends, the one submitted by the resume too, however the cancel raced it.
    from ray.job_submission import JobSubmissionClient

    with ray_auth_of(stack):
        ray_jobs = JobSubmissionClient(stack.state["ray_dashboard_url"])

        def active_runs() -> list[str]:
            runs = [j for j in ray_jobs.list_jobs() if (j.metadata or {}).get("tuneserve_job_id") == job_id]
            return [j.submission_id for j in runs if not j.status.is_terminal()]

        wait_until(lambda: not active_runs(), 60, f"no run of {job_id} left on Ray")
    events = [e.message for e in stack.client().fine_tuning.jobs.list_events(job_id, limit=100)][::-1]
    after_cancel = events[events.index("Job cancelled by the user") :]
    assert not any(m.startswith("Step ") for m in after_cancel), after_cancel

    prepared = stack.cli("models", "prepare")
    assert f"base models ready: {DEFAULT_BASE_MODEL}" in prepared.stdout


def test_unreachable_object_store_fails_start_in_one_line(tmp_path: Path) -> None:
    s = make_stack(
        tmp_path / "bad-s3",
        TUNESERVE_S3_ENDPOINT_URL="http://127.0.0.1:9",
        TUNESERVE_S3_ACCESS_KEY_ID="x",
        TUNESERVE_S3_SECRET_ACCESS_KEY="y",
    )
    proc = s.cli("up", "--detach", check=False, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and "TUNESERVE_S3_ENDPOINT_URL" in lines[0], (
        proc.stderr
    )


def test_bad_setting_fails_start_in_one_line(tmp_path: Path) -> None:
    s = make_stack(tmp_path / "bad-setting", TUNESERVE_RAY_NUM_CPUS="zero")
    proc = s.cli("up", "--detach", check=False, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "tuneserve: error: invalid setting TUNESERVE_RAY_NUM_CPUS='zero': "
        "Input should be a valid integer, unable to parse string as an integer"
    )


def test_missing_base_model_fails_start_with_what_to_do(tmp_path: Path) -> None:
    s = make_stack(tmp_path / "no-model", TUNESERVE_BASE_MODELS=f'{{"mine": "{tmp_path}/absent"}}')
    proc = s.cli("up", "--detach", check=False, timeout=120)
    assert proc.returncode == 1
    assert "base model 'mine' not found" in proc.stderr and "TUNESERVE_BASE_MODELS" in proc.stderr
