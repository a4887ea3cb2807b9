"""What a request handler may use: settings, database, object store, keys. Built once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from service.auth import KeyStore
from service.db import Database
from service.jobs.launcher import Launcher
from service.settings import Settings
from service.storage import ObjectStore

# A health probe returns a short status detail, or raises to say the component is down.
HealthProbe = Callable[[], str]


@dataclass
class AppContext:
    settings: Settings
    db: Database
    store: ObjectStore
    keys: KeyStore
    # Extra probes for components only the runtime knows (Ray, serving); name -> probe.
    probes: dict[str, HealthProbe] = field(default_factory=dict)
    # Runs training jobs (service.jobs.launcher); None where nothing may train (unit tests).
    launcher: Launcher | None = None
