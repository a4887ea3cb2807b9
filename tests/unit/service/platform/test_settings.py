from pathlib import Path

import pytest

from service.platform.settings import DEFAULT_BASE_MODEL, SettingsError, load_settings


def test_defaults_put_everything_under_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESERVE_DATA_DIR", str(tmp_path))
    s = load_settings()
    assert s.resolved_data_dir == tmp_path
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'tuneserve.db'}"
    assert s.resolved_models_dir == tmp_path / "models"
    assert s.resolved_base_models == {DEFAULT_BASE_MODEL: tmp_path / "models" / DEFAULT_BASE_MODEL}
    assert s.uses_embedded_s3 and s.port == 8000 and s.host == "127.0.0.1"


def test_models_dir_is_shared_across_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESERVE_MODELS_DIR", str(tmp_path / "shared"))
    s = load_settings(data_dir=tmp_path / "a")
    assert s.resolved_base_models[DEFAULT_BASE_MODEL] == tmp_path / "shared" / DEFAULT_BASE_MODEL


def test_base_models_from_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNESERVE_BASE_MODELS", f'{{"mine": "{tmp_path}/m"}}')
    assert load_settings().resolved_base_models == {"mine": tmp_path / "m"}


def test_bad_json_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESERVE_BASE_MODELS", "{not json")
    with pytest.raises(SettingsError, match="TUNESERVE_BASE_MODELS"):
        load_settings()


def test_invalid_value_is_one_line_naming_setting_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESERVE_PORT", "eighty")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "TUNESERVE_PORT='eighty'" in message and "\n" not in message


def test_a_lora_rank_vllm_cannot_serve_is_refused_before_the_stack_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TUNESERVE_SERVING_MAX_LORA_RANK", "3")  # the engine refused it, and the stack failed
    with pytest.raises(SettingsError, match=r"TUNESERVE_SERVING_MAX_LORA_RANK='3'.*one of 1, 8, 16, 32"):
        load_settings()
    monkeypatch.setenv("TUNESERVE_SERVING_MAX_LORA_RANK", "32")
    assert load_settings().serving_max_lora_rank == 32


def test_out_of_range_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESERVE_PORT", "70000")
    with pytest.raises(SettingsError, match="TUNESERVE_PORT"):
        load_settings()


def test_unknown_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESERVE_PROT", "8001")
    with pytest.raises(SettingsError, match="unknown setting TUNESERVE_PROT.*TUNESERVE_PORT"):
        load_settings()


def test_unsupported_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESERVE_DATABASE_URL", "mysql://x/y")
    with pytest.raises(SettingsError, match="TUNESERVE_DATABASE_URL"):
        load_settings()


def test_external_store_is_not_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESERVE_S3_ENDPOINT_URL", "http://minio:9000")
    assert not load_settings().uses_embedded_s3


def test_readme_documents_every_setting() -> None:
    from service.platform.settings import ENV_PREFIX, Settings

    readme = (Path(__file__).resolve().parents[4] / "README.md").read_text()
    missing = [
        ENV_PREFIX + n.upper() for n in Settings.model_fields if f"`{ENV_PREFIX}{n.upper()}`" not in readme
    ]
    assert not missing, f"README's configuration table lacks {missing}"


def test_the_api_serves_http_itself_only_on_a_head_of_the_stacks_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.stack.supervisor import direct_ingress_env

    assert load_settings().api_serves_http  # on by default (README: direct ingress)
    monkeypatch.setenv("TUNESERVE_RAY_ADDRESS", "10.0.0.1:6379")  # a cluster's head: not our environment
    assert not load_settings().api_serves_http
    monkeypatch.delenv("TUNESERVE_RAY_ADDRESS")
    monkeypatch.setenv("TUNESERVE_DIRECT_INGRESS", "false")
    assert not load_settings().api_serves_http
    # Ray Serve allocates replica ports from range(min, max): exactly the stack's port
    env = direct_ingress_env(8000)
    ports = range(
        int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]), int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
    )
    assert list(ports) == [8000] and env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"


def test_the_ray_head_gets_quiet_loops_unless_told_otherwise() -> None:
    from service.stack.supervisor import QUIET_LOOPS_ENV, SERVE_FAST_PATH_ENV, ray_head_env

    env = ray_head_env({"PATH": "/bin"})
    assert env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.5" and env["PATH"] == "/bin"
    assert (QUIET_LOOPS_ENV | SERVE_FAST_PATH_ENV).items() <= env.items()
    assert env["RAY_num_workers_soft_limit"] == "0"
    # the stack's own setting decides direct ingress (direct_ingress_env), not the fast path
    assert "RAY_SERVE_ENABLE_DIRECT_INGRESS" not in env
    # this process's environment wins (bench/compare_stacks.py compares settings that way), except what must hold
    env = ray_head_env({"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1", "RAY_worker_niceness": "15"})
    assert env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.1" and env["RAY_worker_niceness"] == "0"


def test_the_local_head_has_room_for_every_engine_a_job_and_ingestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray's CPUs are reservations: each engine holds two on CPU (its replica and its worker), a default job
    two, ingestion one a file in flight. Two engines on a head of max(4, cores) CPUs left nothing for
    jobs or files, which then waited for as long as the stack ran."""
    from service.stack.supervisor import head_cpus

    one = load_settings()
    assert head_cpus(one, cores=2) == 2 + 2 + 2
    assert head_cpus(one, cores=32) == 32  # never fewer than the cores
    monkeypatch.setenv("TUNESERVE_BASE_MODELS", '{"a": "/m/a", "b": "/m/b"}')
    assert head_cpus(load_settings(), cores=2) == 2 * 2 + 2 + 2
    monkeypatch.setenv("TUNESERVE_SERVING_REPLICAS", "2")
    monkeypatch.setenv("TUNESERVE_INGEST_TASKS_IN_FLIGHT", "4")
    assert head_cpus(load_settings(), cores=2) == 4 * 2 + 2 + 4
    monkeypatch.setenv("TUNESERVE_SERVED_MODELS", "")  # a training-only stack
    assert head_cpus(load_settings(), cores=2) == 2 + 4
    monkeypatch.setenv("TUNESERVE_SERVED_MODELS", "a")
    monkeypatch.setenv("TUNESERVE_SERVING_GPU", "true")
    monkeypatch.setenv("TUNESERVE_SERVING_TENSOR_PARALLEL_SIZE", "4")
    assert head_cpus(load_settings(), cores=2) == 2 * (4 + 1) + 2 + 4
