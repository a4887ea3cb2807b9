"""What a request handler may use: settings, database, object store, keys, engines. Built once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.adapters import AdapterChecker
from service.auth import KeyStore
from service.db import Database
from service.inference import InferenceEngine
from service.jobs.launcher import Launcher
from service.settings import Settings
from service.storage import ObjectStore

if TYPE_CHECKING:
    from service.eval_runs import EvalRunner
    from service.vector_stores import VectorStores

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
    # Answers chat and completions (deploy.llm.ServeLLMEngine); None where nothing is served.
    engine: InferenceEngine | None = None
    adapters: AdapterChecker = field(init=False)
    # Vector stores of this process (their indexes are cached here); set by create_app.
    vector_stores: VectorStores = field(init=False)
    # Runs evaluations in the background; set by create_app.
    eval_runs: EvalRunner = field(init=False)

    def __post_init__(self) -> None:
        self.adapters = AdapterChecker(self.store, self.settings.serving_max_lora_rank)
