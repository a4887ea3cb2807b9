"""One fine-tuning run on Ray Train: the LoRA recipe on every worker of a `TorchTrainer`, reporting through a
Reporter actor that the caller (the job's driver, `service.fine_tuning.driver`) started."""

from __future__ import annotations

import math
import os
import tempfile

from service.protocol.fine_tuning import JobContext


def fit(context: JobContext, reporter) -> None:  # a Ray actor handle of a trainers.reporter.Reporter
    """Run the training to its end on the connected Ray cluster; raises what the workers raised.

    Failures are not retried here: a run interrupted by the cluster is requeued by the service and resumes
    from its last checkpoint. What Ray Train does retry is starting the workers: each try waits up to
    `START_TIMEOUT_S` for their resources, and the tries are bounded by the job's `capacity_wait_s`
    (each wait shows in the job's events); past it the run fails with WorkerGroupStartupTimeoutError.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainers.capacity_wait import CapacityWaitEvents

    spec = context.spec
    resources = spec.resources
    cpus = resources.cpus_per_worker
    start_timeout_s, start_tries = start_tries_within(context.capacity_wait_s)
    # Read by Ray Train's controller, which the trainer starts with this process's environment.
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = f"{start_timeout_s:g}"
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
            failure_config=FailureConfig(max_failures=0, controller_failure_limit=start_tries - 1),
            callbacks=[CapacityWaitEvents(reporter, resources, start_timeout_s, context.capacity_wait_s)],
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


START_TIMEOUT_S = 60.0  # the longest try at starting the workers (Ray Train's default)


def start_tries_within(capacity_wait_s: float) -> tuple[float, int]:
    """How long each try at starting the workers waits, and how many tries fill `capacity_wait_s`: at
    least three (each failed one is an event: the job says it is still waiting), of at most a minute."""
    timeout = min(START_TIMEOUT_S, capacity_wait_s / 3)
    return timeout, math.ceil(capacity_wait_s / timeout - 1e-9)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: rank and world size from Ray, the reporter actor from the driver, the recipe
    of the job's method."""
    import ray.train

    from trainers.lora_sft import store_from_context
    from trainers.reporter import ActorReporter, NullReporter

    context = JobContext.model_validate(config["context"])
    train_ctx = ray.train.get_context()
    rank = train_ctx.get_world_rank()
    reporter = ActorReporter(config["reporter"]) if rank == 0 else NullReporter()
    recipe = recipe_class(context.spec.method)
    recipe(
        context.spec, store_from_context(context), reporter, rank=rank, world=train_ctx.get_world_size()
    ).run()


def recipe_class(method: str):  # a LoRASFTRecipe subclass
    if method == "dpo":
        from trainers.lora_dpo import LoRADPORecipe

        return LoRADPORecipe
    from trainers.lora_sft import LoRASFTRecipe

    return LoRASFTRecipe
