"""The driver of one fine-tuning run: the entry point of its Ray job (`python -m trainers.run_job`).

It reads its JobContext from the environment, starts the reporter actor on its own node, runs Ray
Train's TorchTrainer with the LoRA recipe on every worker, and records the outcome: the model registered
and the job succeeded, or the job failed with the reason. Cancelling stops this Ray job, which takes its
workers with it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback

from service.jobs.launcher import JOB_CONTEXT_ENV, JobContext
from service.jobs.scheduler import MAX_ATTEMPTS


def main() -> int:
    context = JobContext.model_validate_json(os.environ[JOB_CONTEXT_ENV])
    spec = context.spec
    from service.db import Database, FineTunedModelRow
    from service.jobs.state import JobStatus
    from service.jobs.store import JobStore

    store = JobStore(Database(context.database_url))
    try:
        trained_tokens, results_csv = run(context)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the job's record
        message = _root_cause(exc)
        traceback.print_exc()
        job = store.get(spec.job_id)
        if is_infrastructure_failure(exc) and job is not None and job.attempts < MAX_ATTEMPTS:
            # Not the training's fault (a node or the cluster went away): run it again.
            store.transition(
                spec.job_id,
                JobStatus.QUEUED,
                f"Run interrupted by a cluster failure ({message}); requeued",
                level="warn",
                submission_id=None,
            )
            return 1
        store.transition(
            spec.job_id,
            JobStatus.FAILED,
            f"Training failed: {message}",
            level="error",
            error={"code": "training_failed", "message": message, "param": None},
        )
        return 1
    result_file = _save_result_file(context, store.db, results_csv)
    store.set_result_files(spec.job_id, [result_file])
    model = FineTunedModelRow(
        id=spec.fine_tuned_model,
        tenant_id=spec.tenant,
        base_model=spec.base_model,
        job_id=spec.job_id,
        adapter_prefix=spec.adapter_prefix,
    )
    if not store.succeed(spec.job_id, model, trained_tokens):
        print(f"job {spec.job_id} was cancelled meanwhile; its adapter is not registered", file=sys.stderr)
    return 0


def run(context: JobContext) -> tuple[int, str]:
    """Run the training on Ray Train; returns the trained token count and the step metrics as CSV."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from trainers.lora_sft import train_loop_per_worker
    from trainers.reporter import JobReporter

    spec = context.spec
    ray.init(log_to_driver=True)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    reporter = (
        ray.remote(JobReporter)
        .options(num_cpus=0, scheduling_strategy=here)
        .remote(context.database_url, spec.job_id)
    )
    resources = spec.resources
    cpus = resources.cpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"context": context.model_dump(mode="json"), "reporter": reporter},
        # SPREAD: one worker per node where the cluster has room, so a job uses the cluster's nodes.
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.use_gpu,
            resources_per_worker={"CPU": cpus},
            placement_strategy="SPREAD",
        ),
        torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
        run_config=RunConfig(
            name=spec.job_id,
            storage_path=tempfile.mkdtemp(prefix="tuneserve-train-"),
            failure_config=FailureConfig(max_failures=0),
            # Each worker owns `cpus` cores: one thread per core, never more (oversubscription is
            # catastrophic on small machines).
            worker_runtime_env={
                "env_vars": {
                    "OMP_NUM_THREADS": str(cpus),
                    "DS_ACCELERATOR": "cuda" if resources.use_gpu else "cpu",
                }
            },
        ),
    )
    trainer.fit()
    return int(ray.get(reporter.get_trained_tokens.remote())), ray.get(reporter.results_csv.remote())


def _save_result_file(context: JobContext, db, csv_text: str) -> str:  # noqa: ANN001 - Database
    """Store the step metrics as the tenant's file (purpose `fine-tune-results`), like OpenAI does."""
    import secrets

    from service.db import FileRow
    from service.protocol.files import RESULT_PURPOSE
    from trainers.lora_sft import store_from_context

    file_id = "file-" + secrets.token_hex(12)
    key = f"files/{context.spec.tenant}/{file_id}"
    info = store_from_context(context).put_bytes(key, csv_text.encode(), "text/csv")
    with db.session() as s:
        s.add(
            FileRow(
                id=file_id,
                tenant_id=context.spec.tenant,
                filename="step_metrics.csv",
                purpose=RESULT_PURPOSE,
                bytes=info.size,
                sha256=info.sha256,
                key=key,
            )
        )
    return file_id


# Ray's errors for a lost worker, actor or node: the run was interrupted, the training did not fail.
_INFRASTRUCTURE_ERRORS = {
    "ActorDiedError",
    "NodeDiedError",
    "WorkerCrashedError",
    "RaySystemError",
    "ActorUnavailableError",
    "ObjectLostError",
    "OwnerDiedError",
    "LocalRayletDiedError",
}


def is_infrastructure_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in _INFRASTRUCTURE_ERRORS or "node has crashed" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _root_cause(exc: BaseException) -> str:
    """The innermost error's type and first line: Ray wraps worker errors in several layers."""
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    lines = [line for line in text if line.strip() and not line.startswith(("Traceback", "  "))]
    detail = lines[-1] if lines else type(seen).__name__
    return f"{type(seen).__name__}: {detail}"[:1000]


if __name__ == "__main__":
    sys.exit(main())
