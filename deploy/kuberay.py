"""The application a KubeRay RayService deploys (`serveConfigV2` imports `deploy.kuberay:application`): the
same API ingress and vLLM deployments as `tuneserve up`, built from the pods' TUNESERVE_* variables.

On a cluster nothing is embedded: the database, the object store, the admin key and the Ray Jobs API are
services of their own (deploy/kubernetes/), so the application refuses to start without them rather than
fall back to files on one pod's disk. The engine settings are written once, as TUNESERVE_* variables; the
Serve config names only the import path and the application's name."""

from __future__ import annotations

from deploy.app import SERVE_APP_NAME
from service.platform.settings import Settings, load_settings

IMPORT_PATH = "deploy.kuberay:application"


class ClusterConfigError(RuntimeError):
    """A setting the cluster deployment needs is missing or points at something embedded."""


def require_external_services(settings: Settings) -> None:
    """ClusterConfigError naming every setting a deployment on a cluster must have and lacks."""
    missing = []
    if not (settings.database_url or "").startswith("postgresql"):
        missing.append("TUNESERVE_DATABASE_URL (a postgresql:// URL: SQLite lives on one pod's disk)")
    if not settings.s3_endpoint_url:
        missing.append("TUNESERVE_S3_ENDPOINT_URL (the embedded S3 server is for one machine)")
    if not (settings.s3_access_key_id and settings.s3_secret_access_key):
        missing.append("TUNESERVE_S3_ACCESS_KEY_ID and TUNESERVE_S3_SECRET_ACCESS_KEY")
    if settings.api_key is None:
        missing.append("TUNESERVE_API_KEY (the admin key; no data dir holds a generated one)")
    if not settings.ray_dashboard_url:
        missing.append("TUNESERVE_RAY_DASHBOARD_URL (the head's Jobs API, where fine-tuning jobs go)")
    if missing:
        raise ClusterConfigError("a cluster deployment needs " + "; ".join(missing))


def serve_config(import_path: str = IMPORT_PATH) -> dict:
    """The RayService's `serveConfigV2`: one application at `/`, built by `application` on the cluster."""
    return {
        "applications": [{"name": SERVE_APP_NAME, "route_prefix": "/", "import_path": import_path}],
        "http_options": {"host": "0.0.0.0", "port": 8000},
    }


def application(args: dict | None = None):  # a Ray Serve Application
    """Called by Ray Serve on the head (`import_path`): the settings from the environment, checked; the
    database migrated and the bucket made where they are new; then the stack's own application."""
    from deploy.app import build_application
    from service.platform.db import Database
    from service.platform.storage import ObjectStore, store_credentials

    settings = load_settings()
    require_external_services(settings)
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
    finally:
        db.close()
    ObjectStore(store_credentials(settings), settings.s3_bucket).ensure_bucket()
    return build_application(settings)
