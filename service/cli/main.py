"""The `tuneserve` command: run and inspect a stack, manage keys and models.

tuneserve up [--detach]      start the stack of TUNESERVE_DATA_DIR (foreground unless --detach)
tuneserve down               stop it
tuneserve status             is it running, and the health of each component
tuneserve keys create --tenant NAME [--name LABEL] | keys list | keys revoke KEY_ID
tuneserve models prepare     build the default base model folder (what `make setup` runs)
tuneserve files | finetune | jobs | chat | evals | models | vector-stores   the API (`tuneserve COMMAND -h`)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from service.cli import batches, chat, completions, evals, jobs, models, vector_stores
from service.cli.client import ApiClient, CliError, health, model_usage
from service.platform.auth import resolve_admin_key
from service.platform.settings import Settings, SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return args.func(settings, args)
    except (SettingsError, CliError) as exc:
        print(f"tuneserve: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneserve", description="Self-hosted fine-tuning and serving.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the stack (foreground; Ctrl-C stops it)")
    up.add_argument("--detach", action="store_true", help="run in the background; return when ready")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the stack of this data dir").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show whether the stack runs and its health").set_defaults(func=cmd_status)

    keys = sub.add_parser("keys", help="manage tenants' API keys (needs the admin key)")
    keys_sub = keys.add_subparsers(required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="create a key for a tenant")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name")
    create.set_defaults(func=cmd_keys_create)
    keys_sub.add_parser("list", help="list keys").set_defaults(func=cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)

    jobs.register(sub)
    chat.register(sub)
    evals.register(sub)
    batches.register(sub)
    completions.register(sub)
    vector_stores.register(sub)
    parser.add_argument("--api-key", help="API key for the API's commands (default: the admin key)")

    models_sub = sub.add_parser("models", help="models: list, show, import, download, delete").add_subparsers(
        required=True, metavar="ACTION"
    )
    models.register(models_sub)
    models_sub.add_parser("prepare", help="build missing base model folders").set_defaults(
        func=cmd_models_prepare
    )
    return parser


# Stack commands ----------------------------------------------------------------------------------


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from service.stack.supervisor import Stack, StackError

    if args.detach:
        return _up_detached(settings)
    try:
        Stack(settings, log=_log).run()
    except StackError as exc:
        raise CliError(str(exc)) from None
    return 0


def _up_detached(settings: Settings) -> int:
    """Start `tuneserve up` as a daemon and wait until the stack is ready or has failed."""
    from service.stack.supervisor import log_path, read_state

    if read_state(settings) is not None:
        raise CliError(f"a stack is already running on {settings.resolved_data_dir}; `tuneserve down` first")
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log = log_path(settings)
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "up"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + settings.startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(
                _last_error(log, offset) or f"the stack exited with code {proc.returncode}; see {log}"
            )
        state = read_state(settings)
        if state is not None and state.ready and health(state.base_url) is not None:
            _log(f"tuneserve is up: {state.base_url}/v1 (pid {state.pid}, log {log})")
            return 0
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise CliError(f"the stack was not ready after {settings.startup_timeout_s:.0f} s; see {log}")


def cmd_down(settings: Settings, _: argparse.Namespace) -> int:
    from service.stack.supervisor import is_locked, read_state

    state = read_state(settings)
    if state is None:
        _log(f"no stack is running on {settings.resolved_data_dir}")
        return 0
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while is_locked(settings):
        if time.monotonic() > deadline:
            os.kill(state.pid, signal.SIGKILL)
            raise CliError(f"the stack (pid {state.pid}) did not stop in 90 s; killed it")
        time.sleep(0.3)
    _log(f"stopped the stack on {settings.resolved_data_dir}")
    return 0


def cmd_status(settings: Settings, _: argparse.Namespace) -> int:
    from service.stack.supervisor import read_state

    state = read_state(settings)
    if state is None:
        print(f"not running (data dir {settings.resolved_data_dir})")
        return 3
    try:
        admin_key = resolve_admin_key(settings)
    except FileNotFoundError:
        admin_key = None  # then only up or down
    components = health(state.base_url, require_ok=False, admin_key=admin_key)
    print(
        json.dumps(
            {
                "running": True,
                "ready": state.ready,
                "pid": state.pid,
                "url": state.base_url,
                "object_store": state.s3_endpoint_url,
                "ray": state.ray_address,
                "ray_dashboard": state.ray_dashboard_url,
                "health": components,
                # Per model since the API started: requests (any status) and tokens.
                "usage": model_usage(state.base_url, admin_key) if admin_key and components else None,
            },
            indent=2,
        )
    )
    return 0 if components and components.get("status") == "ok" else 1


# Keys and models ---------------------------------------------------------------------------------


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    body = ApiClient(settings).call(
        "POST", "/v1/admin/api_keys", json={"tenant": args.tenant, "name": args.name}
    )
    print(json.dumps(body, indent=2))
    return 0


def cmd_keys_list(settings: Settings, _: argparse.Namespace) -> int:
    print(json.dumps(ApiClient(settings).call("GET", "/v1/admin/api_keys")["data"], indent=2))
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    print(json.dumps(ApiClient(settings).call("DELETE", f"/v1/admin/api_keys/{args.key_id}"), indent=2))
    return 0


def cmd_models_prepare(settings: Settings, _: argparse.Namespace) -> int:
    from service.models.base_models import BaseModelError, missing_base_models, prepare_base_models

    try:
        prepare_base_models(settings, log=_log)
    except BaseModelError as exc:
        raise CliError(str(exc)) from None
    if not missing_base_models(settings):
        _log(
            "base models ready: " + ", ".join(f"{n} ({p})" for n, p in settings.resolved_base_models.items())
        )
    return 0


# Helpers -----------------------------------------------------------------------------------------


def _last_error(log, offset: int) -> str | None:
    """The reason a detached stack gave for failing: its last `tuneserve: error:` line."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    errors = [line for line in text.splitlines() if line.startswith("tuneserve: error:")]
    return errors[-1].removeprefix("tuneserve: error: ") if errors else None


_log: Callable[[str], None] = lambda msg: print(f"tuneserve: {msg}", flush=True)  # noqa: E731


if __name__ == "__main__":
    sys.exit(main())
