"""The scheduler's decisions, with a fake launcher (routing logic only) and a real SQLite database."""

from pathlib import Path

import pytest

from service.fine_tuning.launcher import RunInfo
from service.fine_tuning.scheduler import JobScheduler
from service.fine_tuning.state import JobStatus
from service.fine_tuning.store import JobStore
from service.platform.db import Database, JobRow, Tenant
from service.platform.settings import Settings
from tests.helpers import add_job


class FakeLauncher:
    def __init__(self) -> None:
        self.runs: dict[str, RunInfo] = {}
        self.fail_submit = False
        self.free_resources: dict[str, float] = {}  # unknown: every job fits
        self.free_asked = 0

    def submit(self, submission_id: str, context) -> None:
        if self.fail_submit:
            raise ConnectionError("dashboard down")
        assert context.spec.job_id in submission_id
        self.runs[submission_id] = RunInfo("PENDING")

    def info(self, submission_id: str) -> RunInfo:
        return self.runs.get(submission_id, RunInfo("LOST", "gone"))

    def stop(self, submission_id: str) -> None:
        self.runs[submission_id] = RunInfo("STOPPED")

    def capacity(self) -> dict[str, float]:
        return {"CPU": 4.0}

    def free(self) -> dict[str, float]:
        self.free_asked += 1
        return self.free_resources


@pytest.fixture
def env(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path,
        max_running_jobs_per_tenant=1,
        s3_endpoint_url="http://x",
        s3_access_key_id="a",
        s3_secret_access_key="b",
    )
    db = Database(settings.resolved_database_url)
    db.migrate()
    with db.session() as s:
        s.add_all([Tenant(id="a"), Tenant(id="b")])
    store = JobStore(db)
    launcher = FakeLauncher()
    return JobScheduler(settings, store, launcher), store, launcher


def status(store: JobStore, job_id: str) -> str:
    return store.get(job_id).status


def test_submits_in_order_within_each_tenants_limit(env) -> None:
    scheduler, store, launcher = env
    add_job(store, "j1", "a", 1)
    add_job(store, "j2", "a", 2)
    add_job(store, "j3", "b", 3)
    scheduler.tick()
    assert set(launcher.runs) == {"j1-1", "j3-1"}  # j2 waits: tenant a may run one job at a time
    store.transition("j1", JobStatus.RUNNING)
    launcher.runs["j1-1"] = RunInfo("SUCCEEDED")
    store.transition("j1", JobStatus.SUCCEEDED)
    scheduler.tick()
    assert "j2-1" in launcher.runs


def test_a_job_waits_for_free_resources_and_says_so_once(env) -> None:
    scheduler, store, launcher = env
    launcher.free_resources = {"CPU": 1.0, "memory": 1e9}
    add_job(store, "j1", "a", 1)  # needs 2 CPUs
    scheduler.tick()
    scheduler.tick()
    assert launcher.runs == {}
    waits = [e.message for e in store.events("j1")[0] if e.message.startswith("Waiting for free resources")]
    assert waits == ["Waiting for free resources: needs 2 CPU, the cluster has 1 CPU free"]
    launcher.free_resources = {"CPU": 2.0}
    scheduler.tick()
    assert set(launcher.runs) == {"j1-1"}


def test_submitted_runs_that_have_not_started_count_as_taken(env) -> None:
    scheduler, store, launcher = env
    launcher.free_resources = {"CPU": 3.0}
    add_job(store, "j1", "a", 1)
    add_job(store, "j2", "b", 2)
    scheduler.tick()
    assert set(launcher.runs) == {"j1-1"}  # 2 of the 3 CPUs; j2 would need 2 more
    scheduler.tick()  # j1 is still queued in Ray: its CPUs do not show as taken yet, but are
    assert set(launcher.runs) == {"j1-1"}
    launcher.free_resources = {"CPU": 4.0}
    scheduler.tick()
    assert set(launcher.runs) == {"j1-1", "j2-1"}


def test_the_cluster_is_asked_for_free_resources_only_when_a_job_waits_to_be_submitted(env) -> None:
    scheduler, store, launcher = env
    scheduler.tick()  # no jobs: a tick a second must not cost a call to the cluster
    assert launcher.free_asked == 0
    add_job(store, "j1", "a", 1)
    scheduler.tick()
    assert launcher.free_asked == 1 and set(launcher.runs) == {"j1-1"}
    scheduler.tick()  # submitted, still queued in Ray: reconciled, nothing to submit
    assert launcher.free_asked == 1


def test_jobs_of_the_same_second_run_in_the_order_they_were_created(env) -> None:
    scheduler, store, launcher = env
    add_job(store, "jz", "a", 7)  # ids are random: the later one may sort first
    add_job(store, "ja", "a", 7)
    scheduler.tick()
    assert set(launcher.runs) == {"jz-1"}


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_lost_run_is_requeued_then_failed_after_max_attempts(env, max_attempts: int) -> None:
    scheduler, store, launcher = env
    scheduler.settings = scheduler.settings.model_copy(update={"training_max_attempts": max_attempts})
    add_job(store, "j1", "a", 1)
    for attempt in range(1, max_attempts + 1):
        scheduler.tick()
        assert f"j1-{attempt}" in launcher.runs and store.get("j1").attempts == attempt
        store.transition("j1", JobStatus.RUNNING)
        del launcher.runs[f"j1-{attempt}"]  # the cluster restarted
        scheduler.tick()
        if attempt < max_attempts:
            assert status(store, "j1") == "queued"
    job = store.get("j1")
    assert job.status == "failed" and job.error["code"] == "job_lost"
    assert f"{max_attempts} time(s)" in job.error["message"] and "MAX_ATTEMPTS" in job.error["message"]


def test_a_run_that_died_without_a_result_fails_the_job_with_its_message(env) -> None:
    scheduler, store, launcher = env
    add_job(store, "j1", "a", 1)
    scheduler.tick()
    launcher.runs["j1-1"] = RunInfo("FAILED", "Traceback...\nMemoryError: out of memory")
    scheduler.tick()
    job = store.get("j1")
    assert job.status == "failed" and job.error["code"] == "training_failed"
    assert "MemoryError: out of memory" in job.error["message"]


def test_the_drivers_own_result_is_kept(env) -> None:
    scheduler, store, launcher = env
    add_job(store, "j1", "a", 1)
    scheduler.tick()
    store.transition(
        "j1", JobStatus.FAILED, error={"code": "training_failed", "message": "precise", "param": None}
    )
    launcher.runs["j1-1"] = RunInfo("FAILED", "generic")
    scheduler.tick()
    assert store.get("j1").error["message"] == "precise"


def test_a_failed_submission_is_retried(env) -> None:
    scheduler, store, launcher = env
    add_job(store, "j1", "a", 1)
    launcher.fail_submit = True
    scheduler.tick()
    assert store.get("j1").submission_id is None
    assert any("dashboard down" in e.message for e in store.events("j1")[0])
    launcher.fail_submit = False
    scheduler.tick()
    assert store.get("j1").submission_id is not None


def test_cancel_wins_over_a_late_success(env) -> None:
    _, store, _ = env
    add_job(store, "j1", "a", 1)
    store.transition("j1", JobStatus.RUNNING)
    assert store.transition("j1", JobStatus.CANCELLED)
    from service.platform.db import FineTunedModelRow

    assert not store.succeed(
        "j1", FineTunedModelRow(id="m:x", tenant_id="a", base_model="m", adapter_prefix="p"), 5
    )
    assert status(store, "j1") == "cancelled"
    with store.db.session() as s:
        assert s.get(FineTunedModelRow, "m:x") is None  # no model registered for the cancelled job
        assert s.get(JobRow, "j1").fine_tuned_model is None


def test_a_taken_model_id_is_never_handed_to_another_job(env) -> None:
    from service.platform.db import FineTunedModelRow

    _, store, _ = env
    add_job(store, "j1", "a", 1)
    add_job(store, "j2", "b", 2)
    for job_id in ("j1", "j2"):
        store.transition(job_id, JobStatus.RUNNING)

    def model(job_id: str, tenant: str) -> FineTunedModelRow:
        return FineTunedModelRow(
            id="m:x", tenant_id=tenant, base_model="m", job_id=job_id, adapter_prefix="p/"
        )

    assert store.succeed("j1", model("j1", "a"), 10)
    with pytest.raises(ValueError, match="already belongs to job j1"):
        store.succeed("j2", model("j2", "b"), 10)
    with store.db.session() as s:
        assert s.get(FineTunedModelRow, "m:x").tenant_id == "a"
    assert status(store, "j2") == "running"


def test_a_job_resumed_while_its_paused_run_stops_runs_again_once_it_has_stopped(env) -> None:
    from service.fine_tuning.service import JobService

    scheduler, store, launcher = env
    jobs = JobService(scheduler.settings, store, None, None, None, launcher)
    add_job(store, "j1", "a", 1)
    scheduler.tick()
    store.transition("j1", JobStatus.RUNNING)
    launcher.stop = lambda submission_id: None  # Ray takes its time to stop the run
    assert jobs.pause("a", "j1").status == "paused"
    assert jobs.resume("a", "j1").status == "queued"  # no need to wait for the run to stop
    store.transition("j1", JobStatus.RUNNING)  # the stopping run's driver still reports a start
    scheduler.tick()
    assert store.get("j1").submission_id == "j1-1"  # the old run has not stopped yet: nothing new
    launcher.runs["j1-1"] = RunInfo("STOPPED")
    scheduler.tick()
    job = store.get("j1")
    assert job.status == "queued" and job.submission_id == "j1-2" and not job.stop_requested
    events = [e.message for e in store.events("j1", limit=50)[0]]
    assert (
        "Job resumed by the user; it continues from its last checkpoint once the paused run has stopped"
        in events
    )


def test_a_run_stopped_outside_tuneserve_fails_its_job(env) -> None:
    scheduler, store, launcher = env
    add_job(store, "j1", "a", 1)
    scheduler.tick()
    launcher.runs["j1-1"] = RunInfo("STOPPED")
    scheduler.tick()
    job = store.get("j1")
    assert job.status == "failed" and job.error["code"] == "job_stopped"


@pytest.mark.parametrize("stop", ["cancel", "pause"])
def test_a_job_stopped_while_its_run_is_being_submitted_has_that_run_stopped(env, stop: str) -> None:
    from service.fine_tuning.service import JobService

    scheduler, store, launcher = env
    jobs = JobService(scheduler.settings, store, None, None, None, launcher)
    add_job(store, "j1", "a", 1)
    submit, stop_known = launcher.submit, launcher.stop

    def submit_slowly(submission_id: str, context) -> None:
        getattr(jobs, stop)("a", "j1")  # the user's stop arrives before Ray knows the new job: stops nothing
        submit(submission_id, context)

    launcher.submit = submit_slowly
    launcher.stop = lambda submission_id: submission_id in launcher.runs and stop_known(submission_id)
    scheduler.tick()
    assert launcher.runs["j1-1"].state == "STOPPED"
    assert status(store, "j1") == {"cancel": "cancelled", "pause": "paused"}[stop]


@pytest.mark.parametrize(("stopped", "trains"), [(None, True), ("cancel", False), ("pause", False)])
def test_a_run_whose_job_was_stopped_before_it_began_does_not_train(
    env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stopped: str | None, trains: bool
) -> None:
    from service.fine_tuning import driver
    from service.fine_tuning.launcher import job_context, job_env
    from service.fine_tuning.service import JobService
    from service.protocol.fine_tuning import TrainingSpec

    scheduler, store, launcher = env
    add_job(store, "j1", "a", 1)
    scheduler.tick()
    if stopped:
        launcher.stop = lambda submission_id: None  # Ray's stop comes too late: the driver starts anyway
        getattr(JobService(scheduler.settings, store, None, None, None, launcher), stopped)("a", "j1")
    spec = TrainingSpec.model_validate(store.get("j1").spec)
    for name, value in job_env(job_context(scheduler.settings, spec), tmp_path / "secrets").items():
        monkeypatch.setenv(name, value)
    started = []

    def run(context) -> None:
        started.append(context.spec.job_id)
        raise RuntimeError("the training would start here")

    monkeypatch.setattr(driver, "run", run)
    assert driver.main() == (1 if trains else 0)
    assert started == (["j1"] if trains else [])
