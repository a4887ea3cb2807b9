"""The embedded stack: object store, Ray head, Ray Serve application, supervised by one process.

`tuneserve up` runs `Stack.run()` in the foreground. The supervisor holds an exclusive lock on
DATA_DIR/run/stack.lock for as long as it lives, so a second stack on the same data dir is refused and a
stack killed with -9 leaves no stale "running" state (the kernel drops the lock). Its children (the S3
server, `ray start --block`) run in their own process groups, so Ctrl-C reaches only the supervisor, which
stops them in order; and they get SIGTERM from the kernel if the supervisor dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from deploy.app import HEAD_RESOURCE, SERVE_APP_NAME
from service.models.base_models import BaseModelError, prepare_base_models
from service.platform.auth import resolve_admin_key
from service.platform.db import Database, DatabaseError
from service.platform.net import free_port, free_ports, listening, port_is_free
from service.platform.secret_files import write_secret
from service.platform.settings import Settings
from service.platform.storage import (
    ObjectStore,
    StoreError,
    start_embedded_s3,
    store_credentials,
    wait_for_store,
)
from service.protocol.fine_tuning import ResourceOptions


class StackError(RuntimeError):
    """The stack cannot start or stop; the message is one line that says what to fix."""


@dataclass
class StackState:
    """What a running stack publishes in DATA_DIR/run/stack.json for `status`, `down` and tests."""

    pid: int
    base_url: str
    s3_endpoint_url: str
    ray_address: str
    ray_dashboard_url: str | None
    started_at: float
    ready: bool = False


def state_path(settings: Settings) -> Path:
    return settings.run_dir / "stack.json"


def log_path(settings: Settings) -> Path:
    return settings.run_dir / "stack.log"


def read_state(settings: Settings) -> StackState | None:
    """The state of the stack running on this data dir, or None if none is running."""
    path = state_path(settings)
    if not path.exists() or not is_locked(settings):
        return None
    try:
        return StackState(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None


def is_locked(settings: Settings) -> bool:
    lock = settings.run_dir / "stack.lock"
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def runtime_settings(
    settings: Settings, s3_endpoint_url: str, admin_key: str, ray_dashboard_url: str | None
) -> Settings:
    """Settings with everything resolved that the stack decides at start-up (store endpoint, keys),
    so that code running in Ray workers never needs the data dir's secret files."""
    creds = store_credentials(settings)
    return settings.model_copy(
        update={
            "s3_endpoint_url": s3_endpoint_url,
            "s3_access_key_id": creds.access_key_id,
            "s3_secret_access_key": _secret(creds.secret_access_key),
            "api_key": _secret(admin_key),
            "ray_dashboard_url": ray_dashboard_url or settings.ray_dashboard_url,
        }
    )


def _secret(value: str | None):
    from pydantic import SecretStr

    return SecretStr(value) if value is not None else None


def ray_auth_env(data_dir: Path) -> dict[str, str]:
    """The environment that turns on Ray's token authentication with the stack's token (made once, 0600),
    for the embedded head and whatever joins it."""
    path = data_dir / "ray_auth_token"
    if not path.exists():
        write_secret(path, secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}


def use_ray_auth(data_dir: Path) -> None:
    """Make this process (and what it starts) use the stack's Ray token. Ray reads its configuration when
    it is imported, so it is read again when Ray was imported before (as Ray's own token setup does)."""
    os.environ.update(ray_auth_env(data_dir))
    if "ray" in sys.modules:
        from ray._raylet import Config

        Config.initialize("")


def _die_with_parent() -> None:
    """preexec_fn: new process group (Ctrl-C is ours to forward) and SIGTERM when the supervisor dies."""
    os.setpgrp()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Stack:
    """Starts, supervises and stops one stack. Use `run()` for the foreground CLI."""

    def __init__(self, settings: Settings, log=print) -> None:
        self.settings = settings
        self.log = log
        self._lock_file = None
        self._children: list[tuple[str, subprocess.Popen]] = []
        self._owns_ray_head = False
        self._stop = threading.Event()
        self.state: StackState | None = None

    # Lifecycle -------------------------------------------------------------------------------------
    def run(self) -> None:
        """Start everything, block until SIGINT/SIGTERM or a child dies, then stop everything."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        try:
            self.start()
            self.log(f"tuneserve is up: {self.state.base_url}/v1  (docs: {self.state.base_url}/docs)")
            while not self._stop.wait(1.0):
                for name, proc in self._children:
                    if proc.poll() is not None:
                        raise StackError(
                            f"{name} exited with code {proc.returncode}; see {log_path(self.settings)}"
                        )
        finally:
            self.log("stopping: serving, Ray, object store")
            self.stop()
            self.log("stopped")

    def start(self) -> StackState:
        s = self.settings
        self._acquire_lock()
        if not port_is_free(s.host, s.port):
            raise StackError(f"port {s.port} on {s.host} is in use; set TUNESERVE_PORT to a free port")
        t0 = time.monotonic()
        admin_key = resolve_admin_key(s, create=True)
        self._prepare_database()
        try:
            prepare_base_models(s, log=self.log)
        except BaseModelError as exc:
            raise StackError(str(exc)) from None
        s3_url = self._start_object_store()
        ray_address, dashboard = self._start_ray()
        self.state = StackState(os.getpid(), s.base_url, s3_url, ray_address, dashboard, time.time())
        self._write_state()
        self._deploy(runtime_settings(s, s3_url, admin_key, dashboard))
        self.state.ready = True
        self._write_state()
        self.log(f"stack ready in {time.monotonic() - t0:.1f} s")
        return self.state

    def stop(self) -> None:
        """Stop the Serve app, the Ray head we started and the S3 server; idempotent."""
        if self._owns_ray_head or self.state is not None:
            with contextlib.suppress(Exception):
                import ray
                from ray import serve

                if ray.is_initialized():
                    if self._owns_ray_head:
                        serve.shutdown()
                    else:
                        serve.delete(SERVE_APP_NAME)
                    ray.shutdown()
        for name, proc in reversed(self._children):
            _terminate(proc, name, self.log)
        self._children.clear()
        with contextlib.suppress(FileNotFoundError):
            state_path(self.settings).unlink()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # Steps -----------------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        run_dir = self.settings.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(run_dir / "stack.lock", "a")  # noqa: SIM115 - held for the stack's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            running = read_state(self.settings)
            where = f" at {running.base_url} (pid {running.pid})" if running else ""
            raise StackError(
                f"a stack is already running on {self.settings.resolved_data_dir}{where}; "
                "run `tuneserve down` first or set TUNESERVE_DATA_DIR"
            ) from None

    def _prepare_database(self) -> None:
        db = Database(self.settings.resolved_database_url)
        try:
            db.migrate()
        except DatabaseError as exc:
            raise StackError(f"{exc}; check TUNESERVE_DATABASE_URL") from None
        finally:
            db.close()

    def _start_object_store(self) -> str:
        s = self.settings
        if not s.uses_embedded_s3:
            store = ObjectStore(store_credentials(s), s.s3_bucket)
            try:
                store.ensure_bucket()
            except StoreError as exc:
                raise StackError(str(exc)) from None
            return s.s3_endpoint_url  # type: ignore[return-value]
        port = s.embedded_s3_port or free_port(avoid=(s.port,))
        if not port_is_free("127.0.0.1", port):
            raise StackError(
                f"port {port} for the embedded S3 server is in use; set TUNESERVE_EMBEDDED_S3_PORT"
            )
        creds = store_credentials(s, create=True)
        proc = start_embedded_s3(s, creds, port, log_path(s), preexec_fn=_die_with_parent)
        self._children.append(("embedded S3 server (rclone)", proc))
        url = f"http://127.0.0.1:{port}"
        store = ObjectStore(
            store_credentials(
                s.model_copy(
                    update={
                        "s3_endpoint_url": url,
                        "s3_access_key_id": creds.access_key_id,
                        "s3_secret_access_key": _secret(creds.secret_access_key),
                    }
                )
            ),
            s.s3_bucket,
        )
        try:
            wait_for_store(store, proc)
        except StoreError as exc:
            raise StackError(f"{exc}; see {log_path(s)}") from None
        self.log(f"object store: {url} over {s.resolved_data_dir / 'objects'}")
        return url

    def _start_ray(self) -> tuple[str, str | None]:
        s = self.settings
        if not s.ray_address:
            # Token authentication for the head, this process and everything started from them (Serve
            # replicas, job drivers): nothing reaches the cluster without the data dir's token.
            use_ray_auth(s.resolved_data_dir)
        import ray

        if s.ray_address:  # the cluster's own authentication, from this process's environment
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            try:
                ray.init(address=s.ray_address, log_to_driver=False)
            except Exception as exc:  # Ray raises several types for an unreachable cluster
                raise StackError(
                    f"cannot connect to Ray at {s.ray_address} ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); check TUNESERVE_RAY_ADDRESS"
                ) from None
            host = s.ray_address.removeprefix("ray://").split(":")[0]
            return s.ray_address, s.ray_dashboard_url or f"http://{host}:8265"
        gcs, dashboard, agent, client, metrics, runtime_env = free_ports(6, avoid=(s.port,))
        cmd = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(gcs),
            "--num-cpus",
            str(s.ray_num_cpus or head_cpus(s, os.cpu_count() or 1)),
            "--temp-dir",
            ray_temp_dir(s),
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard),
            "--dashboard-agent-listen-port",
            str(agent),
            "--ray-client-server-port",
            str(client),
            "--metrics-export-port",
            str(metrics),
            "--runtime-env-agent-port",
            str(runtime_env),
            "--disable-usage-stats",
            # The API replica is placed on the head: with direct ingress the stack's address is its own.
            "--resources",
            json.dumps({HEAD_RESOURCE: 1}),
        ]
        if s.api_serves_http:
            os.environ.update(direct_ingress_env(s.port))  # Serve reads them here too (serve.start)
        env = ray_head_env(os.environ)
        with open(log_path(s), "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
            )
        self._children.append(("ray head", proc))
        self._owns_ray_head = True
        address = f"127.0.0.1:{gcs}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise StackError(f"the Ray head exited with code {proc.returncode}; see {log_path(s)}")
            if not listening("127.0.0.1", gcs):  # not up yet: ray.init would wait for minutes
                if time.monotonic() > deadline:
                    raise StackError(f"the Ray head did not come up in 90 s; see {log_path(s)}")
                time.sleep(0.5)
                continue
            try:
                ray.init(address=address, log_to_driver=False)
                break
            except Exception:  # not up yet: GCS refuses or the node is not registered
                if time.monotonic() > deadline:
                    raise StackError(f"the Ray head did not come up in 90 s; see {log_path(s)}") from None
                time.sleep(1)
        self.log(f"ray: {address} (dashboard http://127.0.0.1:{dashboard})")
        return address, f"http://127.0.0.1:{dashboard}"

    def _deploy(self, settings: Settings) -> None:
        from ray import serve

        from deploy.app import build_application

        # The proxy on the head only: the stack's address is the head's. With Serve's default (a proxy on
        # every node with a replica), nodes sharing a machine (tests, `ray start` beside the stack) would
        # each try to bind the same host:port.
        # With direct ingress the API replica listens on the stack's port itself, and Serve's proxy (which
        # Serve needs running for direct ingress) gets a port of its own that nothing uses.
        port = free_port(avoid=(settings.port,)) if settings.api_serves_http else settings.port
        serve.start(
            proxy_location="HeadOnly",
            http_options={"host": settings.host, "port": port},
            logging_config={"log_level": "WARNING"},
        )
        try:
            serve.run(build_application(settings), name=SERVE_APP_NAME, route_prefix="/")
        except RuntimeError:  # "Failed to update the deployments ['vllm:X']": the why is in Ray's logs
            reasons = deployment_failures(serve.status().applications.get(SERVE_APP_NAME))
            if not reasons:
                raise
            raise StackError(f"a deployment failed to start: {'; '.join(reasons)}") from None

    def _write_state(self) -> None:
        path = state_path(self.settings)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2))
        tmp.replace(path)


def deployment_failures(app) -> list[str]:  # app: a ray.serve ApplicationStatusOverview, or None
    """Why each deployment of the application failed, from the exception that ends its status message (a
    replica's traceback): `vllm:X: RuntimeError: Failed to create vLLM engine config: ... Value error,
    User-specified max_model_len (4096) is greater than ...`."""
    reasons = []
    for name, deployment in (app.deployments if app is not None else {}).items():
        if str(deployment.status).rsplit(".", 1)[-1] not in ("DEPLOY_FAILED", "UNHEALTHY"):
            continue
        lines = (deployment.message or "").splitlines()
        last = max((i for i, line in enumerate(lines) if EXCEPTION_LINE.match(line)), default=0)
        words = [line.strip() for line in lines[last:] if line.strip()]
        words = [w for w in words if not w.startswith("For further information")]
        reasons.append(f"{name}: {' '.join(words)[:1000]}")
    return reasons


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*:")

# No idle Ray workers kept beyond a minute (Ray keeps up to one per CPU for ever): each Ray worker process
# wakes ~150 times a second (its main thread checks for signals every 10 ms), and on a small machine every
# wakeup preempts one of the busy engine's OpenMP threads while the other spins at a barrier. The minute
# keeps a batch of ingestion or evaluation tasks on warm workers. Measured in bench/RESULTS.md (serving).
IDLE_WORKERS_ENV = {"RAY_num_workers_soft_limit": "0", "RAY_idle_worker_killing_time_threshold_ms": "60000"}

# Ray's and Ray Serve's background loops that run every 100 ms, at a pace nobody using the stack sees.
# Idle, the stack took 120 ms of CPU a second (Serve's controller 28, the GCS 14); with these 85 (9 and 6),
# and on 2 cores every millisecond is one the engine's pinned threads lose: images through the service
# +4-13 % in three runs against the same stacks without (bench/compare_frozen.py, bench/RESULTS.md).
QUIET_LOOPS_ENV = {
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",  # Serve's controller: deployments, replicas' health
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",  # replicas' and routers' metrics, to Ray's exporter
    "RAY_raylet_report_resources_period_milliseconds": "1000",  # a node's resource use, to the GCS
    "RAY_raylet_check_gc_period_milliseconds": "1000",  # whether the cluster's objects need a GC
}


# Ray Serve's throughput-optimized mode (`RAY_SERVE_THROUGHPUT_OPTIMIZED`), less the direct ingress it
# would also turn on (the stack decides that: `TUNESERVE_DIRECT_INGRESS`): the replicas run our code and
# their handles' routers on their main event loop instead of a thread and a loop of their own (no
# cross-thread hop per request and per streamed message), and handles call replicas over gRPC (the
# API's handles only because deploy.llm.ServeLLMEngine tells them to). Images
# through the service +1-12 % in two runs (bench/compare_frozen.py, bench/RESULTS.md). Our code must
# not block its loop (blocking work goes to threads) nor wait on a handle synchronously (`.result()`).
SERVE_FAST_PATH_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}


def head_cpus(settings: Settings, cores: int) -> int:
    """Logical CPUs of the stack's own Ray head: its cores, or more where the served engines, a fine-tuning
    job of the default layout and the vector stores' ingestion tasks would not all fit at once. Ray's CPUs
    are reservations, not cores: with `make run VISION=1` on a 4-CPU head the two engines held all four,
    and every job waited in `queued` and every file in `in_progress` for as long as the stack ran."""
    # Ray Serve LLM places a replica with one CPU for itself and one per engine worker (a GPU each).
    engines = len(settings.resolved_served_models) * settings.serving_replicas
    engine_cpus = engines * (settings.serving_tensor_parallel_size + 1)
    job = ResourceOptions()
    return max(cores, engine_cpus + job.num_workers * job.cpus_per_worker + settings.ingest_tasks_in_flight)


def ray_head_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the stack's Ray head (every Ray process inherits it): the defaults above unless
    `environ` (this process's) sets them otherwise (bench/compare_stacks.py does), then what must hold."""
    return {
        **IDLE_WORKERS_ENV,
        **QUIET_LOOPS_ENV,
        **SERVE_FAST_PATH_ENV,
        **environ,
        # Ray starts workers at nice 15; serving and training must not starve behind other processes.
        "RAY_worker_niceness": "0",
        # On SIGTERM a node waits up to 30 s for Serve to drain it; one node has nowhere to drain to, and
        # we stop Serve ourselves first.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }


def direct_ingress_env(port: int) -> dict[str, str]:
    """Ray Serve settings for a head whose API replica serves HTTP on `port` itself ("direct ingress"):
    no Ray hop between the HTTP server and the API, and no proxy process on a request's path
    (bench/bench_request_cpu.py measures what each costs a request). The replica binds the stack's host."""
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),  # exclusive: the range is [min, max)
        # A replica being replaced waits this long for its open requests; `down` would wait 30 s.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
    }


def ray_temp_dir(settings: Settings) -> str:
    """A short per-data-dir Ray temp dir: Ray's socket paths must stay under ~107 characters."""
    digest = hashlib.sha256(str(settings.resolved_data_dir).encode()).hexdigest()[:10]
    return str(Path(tempfile.gettempdir()) / f"tuneserve-ray-{digest}")


def _terminate(proc: subprocess.Popen, name: str, log, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop in {timeout:.0f} s; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
