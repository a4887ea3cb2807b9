"""One fine-tuning run on Ray Train: the LoRA recipe on every worker of a `TorchTrainer`, reporting through a
Reporter actor that the caller (the job's driver, `service.fine_tuning.driver`) started."""

from __future__ import annotations

import tempfile

from service.protocol.fine_tuning import JobContext


def fit(context: JobContext, reporter) -> None:  # a Ray actor handle of a trainers.reporter.Reporter
    """Run the training to its end on the connected Ray cluster; raises what the workers raised."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainers.lora_sft import train_loop_per_worker

    spec = context.spec
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
    # Ray Train's health checks of its workers: a worker process that died or hangs.
    "WorkerHealthCheckFailedError",
    "WorkerHealthCheckTimeoutError",
}


def is_infrastructure_failure(exc: BaseException) -> bool:
    """Whether `exc`, or an error it wraps, says a worker, actor or node went away. Ray Train keeps the
    workers' errors in `worker_failures` (and a health check's in `health_check_failure`), not in the
    exception chain, so those are looked into too."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if type(current).__name__ in _INFRASTRUCTURE_ERRORS or "node has crashed" in str(current):
            return True
        wrapped = [
            current.__cause__,
            current.__context__,
            getattr(current, "health_check_failure", None),
            getattr(current, "controller_failure", None),
            *(getattr(current, "worker_failures", None) or {}).values(),
        ]
        pending += [e for e in wrapped if isinstance(e, BaseException)]
    return False
