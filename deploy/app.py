"""The Ray Serve application of a stack: the API ingress (`service.api.app.create_app`) and vLLM
deployments."""

from __future__ import annotations

import os

from service.platform.settings import Settings

INGRESS_NAME = "api"
SERVE_APP_NAME = "tuneserve"  # the Serve application of a stack, on one machine and on a cluster
HEAD_RESOURCE = "tuneserve_head"  # a custom resource only the stack's own Ray head has
# Requests the API replica runs at once. Ray Serve queues the rest before they reach the app, a health
# check as much as a chat, so a small number let open requests (long chats, slow or stalled uploads) hold
# up every other caller (300 held a limit of 256: tests/integration/service/stack/test_stack.py). The API
# is asynchronous and bounds what matters itself: the engines' queues (a 503), tenants' rates and streams
# (429s), bodies (413). Ray Serve LLM's own ingress has no practical limit either.
INGRESS_MAX_ONGOING_REQUESTS = 1_000_000


def ray_probe() -> str:
    """Alive nodes and CPUs of the Ray cluster this replica runs in."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
    return f"{len(nodes)} node(s), {cpus:g} CPUs"


def serving_probe() -> str:
    """Status of every Serve application; raises if one is unhealthy."""
    from ray import serve

    apps = serve.status().applications
    bad = {
        name: str(app.status.value)
        for name, app in apps.items()
        if app.status not in ("RUNNING", "DEPLOYING")
    }
    if bad:
        raise RuntimeError(f"unhealthy applications: {bad}")
    return ", ".join(f"{name}: {app.status.value}" for name, app in apps.items())


def cluster_metrics() -> list[str]:
    """The Prometheus text each alive node of the Ray cluster exports (Ray Serve's and vLLM's metrics among
    them); a node that does not answer in 5 s is left out."""
    import urllib.request

    import ray

    texts = []
    for node in ray.nodes():
        port = node.get("MetricsExportPort")
        if not node.get("Alive") or not port:
            continue
        try:
            url = f"http://{node['NodeManagerAddress']}:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as resp:
                texts.append(resp.read().decode())
        except OSError:
            continue
    return texts


def api_env(settings: Settings) -> dict[str, str]:
    """The API replica's environment: responses over gRPC (deploy.llm.serve_transport_env), and torch on
    every core for the embedder (POST /v1/embeddings, vector store queries, retrieval). Ray caps a worker
    that holds no CPUs (the API's num_cpus is 0) at one OpenMP thread, which ran the embeddings API at 0.40x
    of the same embedder alone (bench/RESULTS.md, embeddings)."""
    from deploy.llm import serve_transport_env

    return {**serve_transport_env(settings), "OMP_NUM_THREADS": str(os.cpu_count() or 1)}


def build_application(settings: Settings):  # a Ray Serve Application
    """The application bound with fully resolved settings: the API ingress and, for every served base model,
    a vLLM deployment (deploy.llm) whose handle the ingress gets. The FastAPI app is built on the replica."""
    from ray import serve
    from ray.serve.llm import build_llm_deployment

    from deploy.llm import llm_config, server_class

    llms = {
        name: build_llm_deployment(
            llm_config(settings, name, str(path)), name_prefix="vllm:", deployment_cls=server_class()
        )
        for name, path in settings.resolved_served_models.items()
    }

    @serve.ingress()
    class Ingress:
        def __init__(self, llm_handles: dict) -> None:
            self.llm_handles = llm_handles
            if settings.api_serves_http:
                from deploy.direct_ingress import rebindable_after_crash

                rebindable_after_crash()

        def __serve_build_asgi_app__(self):  # evaluated in the replica process
            from deploy.llm import ServeLLMEngine
            from deploy.tasks import RayTaskRunner
            from service.api.app import create_app
            from service.fine_tuning.launcher import RayJobLauncher

            launcher = None
            if settings.ray_dashboard_url:
                secrets = settings.run_dir / "job-secrets.json"
                launcher = RayJobLauncher(settings.ray_dashboard_url, secrets)
            engine = ServeLLMEngine(self.llm_handles)
            return create_app(
                settings,
                probes={"ray": ray_probe, "serving": serving_probe, "engines": engine.probe},
                launcher=launcher,
                engine=engine,
                tasks=RayTaskRunner(),
                cluster_metrics=cluster_metrics,
            )

    # With direct ingress the API replica serves the stack's address, so it must run on the head.
    pinned = {"resources": {HEAD_RESOURCE: 0.01}} if settings.api_serves_http else {}
    ingress = serve.deployment(
        Ingress,
        name=INGRESS_NAME,
        num_replicas=1,
        ray_actor_options={
            "num_cpus": 0,
            "runtime_env": {"env_vars": api_env(settings)},
            **pinned,
        },
        max_ongoing_requests=INGRESS_MAX_ONGOING_REQUESTS,
    )
    return ingress.bind(llms)
