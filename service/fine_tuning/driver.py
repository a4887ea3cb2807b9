"""The driver of one fine-tuning run: the entry point of its Ray job (`python -m service.fine_tuning.driver`).

It reads its JobContext from the environment, starts the reporter actor on its own node, runs the
training on Ray Train (`trainers.ray_run`), and records the outcome: the model registered and the job
succeeded, or the job failed with the reason (or requeued, when the cluster rather than the training
failed). Cancelling stops this Ray job, which takes its workers with it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

from service.files.service import FileService
from service.fine_tuning.launcher import read_context
from service.fine_tuning.reporting import JobReporter
from service.fine_tuning.scheduler import out_of_attempts, wants_its_run
from service.fine_tuning.state import JobStatus
from service.fine_tuning.store import JobStore
from service.platform.db import Database, FineTunedModelRow
from service.platform.errors import root_cause
from service.protocol.files import RESULT_PURPOSE
from service.protocol.fine_tuning import JobContext
from trainers.failures import is_capacity_timeout, is_infrastructure_failure
from trainers.lora_sft import store_from_context


def main() -> int:
    context = read_context(os.environ)
    spec = context.spec
    jobs = JobStore(Database(context.database_url))
    if not wants_its_run(jobs.get(spec.job_id)):
        # Stopped before this run started (a pause or a cancel while it was being submitted).
        print(f"job {spec.job_id} no longer wants this run; not training", file=sys.stderr)
        return 0
    try:
        trained_tokens, results_csv = run(context)
    except BaseException as exc:  # every failure must reach the job's record
        message = root_cause(exc)
        traceback.print_exc()
        job = jobs.get(spec.job_id)
        if job is not None and job.stop_requested:
            return 1  # tuneserve stopped this run (a pause): how it ended is not the job's outcome
        lost = is_infrastructure_failure(exc) and job is not None
        if lost and job.attempts < context.max_attempts:
            # Not the training's fault (a node or the cluster went away): run it again.
            jobs.transition(
                spec.job_id,
                JobStatus.QUEUED,
                f"Run interrupted by a cluster failure ({message}); requeued",
                level="warn",
                only_from=frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),  # not a job paused meanwhile
                submission_id=None,
            )
            return 1
        if lost:  # as often as a job may be run
            error = out_of_attempts(job.attempts, message)
            jobs.transition(spec.job_id, JobStatus.FAILED, error["message"], level="error", error=error)
            return 1
        code = "training_failed"
        if is_capacity_timeout(exc):
            code = "insufficient_capacity"
            res = spec.resources
            message = (
                f"The cluster had no room for {res.num_workers} worker(s) x {res.cpus_per_worker} CPU(s) "
                f"for {context.capacity_wait_s:g} s (TUNESERVE_TRAINING_CAPACITY_WAIT_S). The job's "
                "checkpoints are kept: continue from the newest one with a new job once there is room."
            )
        jobs.transition(
            spec.job_id,
            JobStatus.FAILED,
            f"Training failed: {message}",
            level="error",
            error={"code": code, "message": message, "param": None},
        )
        return 1
    files = FileService(jobs.db, store_from_context(context))
    result = files.create(spec.tenant, "step_metrics.csv", RESULT_PURPOSE, results_csv.encode(), "text/csv")
    jobs.set_result_files(spec.job_id, [result.id])
    model = FineTunedModelRow(
        id=spec.fine_tuned_model,
        tenant_id=spec.tenant,
        base_model=spec.base_model,
        job_id=spec.job_id,
        adapter_prefix=spec.adapter_prefix,
        parent=spec.parent_model,
    )
    try:
        registered = jobs.succeed(spec.job_id, model, trained_tokens)
    except ValueError as exc:  # the model id is taken: fail this job rather than touch the other model
        jobs.transition(
            spec.job_id,
            JobStatus.FAILED,
            f"Could not register the model: {exc}",
            level="error",
            error={"code": "model_id_taken", "message": str(exc), "param": None},
        )
        return 1
    if not registered:
        print(f"job {spec.job_id} was cancelled meanwhile; its adapter is not registered", file=sys.stderr)
    return 0


def run(context: JobContext) -> tuple[int, str]:
    """Start the reporter actor beside this driver and train on Ray Train; returns the trained token count
    and the step metrics as CSV."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from trainers.ray_run import fit

    ray.init(log_to_driver=True)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    reporter = ray.remote(JobReporter).options(num_cpus=0, scheduling_strategy=here).remote(context)
    res = context.spec.resources
    reporter.message.remote(
        f"Run started on Ray: starting {res.num_workers} training worker(s) x {res.cpus_per_worker} CPU(s)"
    )
    try:
        fit(context, reporter)
    except BaseException:
        with contextlib.suppress(Exception):  # the reporter may have gone down with the run
            ray.get(reporter.finish.remote("failed"))
        raise
    ray.get(reporter.finish.remote("succeeded"))
    return int(ray.get(reporter.get_trained_tokens.remote())), ray.get(reporter.results_csv.remote())


if __name__ == "__main__":
    sys.exit(main())
