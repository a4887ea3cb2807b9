"""The `tuneserve` command: run and inspect a stack, manage keys and models.

tuneserve up [--detach]      start the stack of TUNESERVE_DATA_DIR (foreground unless --detach)
tuneserve down               stop it
tuneserve status             is it running, and the health of each component
tuneserve keys create --tenant NAME [--name LABEL] | keys list | keys revoke KEY_ID
tuneserve models prepare     build the default base model folder (what `make setup` runs)
tuneserve files | finetune | jobs | chat | evals   the API from the shell (see `tuneserve COMMAND -h`)
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

from service.settings import Settings, SettingsError, load_settings


class CliError(RuntimeError):
    """Printed as one line `tuneserve: error: ...` with exit code 1."""


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

    from service import cli_chat, cli_evals, cli_jobs

    cli_jobs.register(sub, api_call)
    cli_chat.register(sub, api_call)
    cli_evals.register(sub, api_call)
    parser.add_argument("--api-key", help="API key for files/finetune/jobs (default: the admin key)")

    models = sub.add_parser("models", help="base models")
    models_sub = models.add_subparsers(required=True, metavar="ACTION")
    models_sub.add_parser("prepare", help="build missing base model folders").set_defaults(
        func=cmd_models_prepare
    )
    return parser


# Stack commands ----------------------------------------------------------------------------------


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from service.stack import Stack, StackError

    if args.detach:
        return _up_detached(settings)
    try:
        Stack(settings, log=_log).run()
    except StackError as exc:
        raise CliError(str(exc)) from None
    return 0


def _up_detached(settings: Settings) -> int:
    """Start `tuneserve up` as a daemon and wait until the stack is ready or has failed."""
    from service.stack import log_path, read_state

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
        if state is not None and state.ready and _health(state.base_url) is not None:
            _log(f"tuneserve is up: {state.base_url}/v1 (pid {state.pid}, log {log})")
            return 0
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise CliError(f"the stack was not ready after {settings.startup_timeout_s:.0f} s; see {log}")


def cmd_down(settings: Settings, _: argparse.Namespace) -> int:
    from service.stack import is_locked, read_state

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
    from service.stack import read_state

    state = read_state(settings)
    if state is None:
        print(f"not running (data dir {settings.resolved_data_dir})")
        return 3
    health = _health(state.base_url, require_ok=False)
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
                "health": health,
            },
            indent=2,
        )
    )
    return 0 if health and health.get("status") == "ok" else 1


# Keys and models ---------------------------------------------------------------------------------


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    body = _admin_call(settings, "POST", "/v1/admin/api_keys", {"tenant": args.tenant, "name": args.name})
    print(json.dumps(body, indent=2))
    return 0


def cmd_keys_list(settings: Settings, _: argparse.Namespace) -> int:
    print(json.dumps(_admin_call(settings, "GET", "/v1/admin/api_keys")["data"], indent=2))
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    print(json.dumps(_admin_call(settings, "DELETE", f"/v1/admin/api_keys/{args.key_id}"), indent=2))
    return 0


def cmd_models_prepare(settings: Settings, _: argparse.Namespace) -> int:
    from service.base_models import BaseModelError, missing_base_models, prepare_base_models

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


def _admin_call(settings: Settings, method: str, path: str, body: dict | None = None) -> dict:
    return api_call(settings, argparse.Namespace(api_key=None), method, path, json=body)


def api_call(
    settings: Settings,
    args: argparse.Namespace,
    method: str,
    path: str,
    *,
    stream: bool = False,
    **kwargs: object,
):  # noqa: ANN201 - a dict, or an iterator of SSE events when streaming
    """Call the local stack's API with `--api-key`, TUNESERVE_API_KEY or the data dir's admin key."""
    import httpx

    from service.auth import resolve_admin_key

    key = getattr(args, "api_key", None)
    if key is None:
        try:
            key = resolve_admin_key(settings)
        except FileNotFoundError as exc:
            raise CliError(str(exc)) from None
    headers = {"Authorization": f"Bearer {key}"}
    try:
        if stream:
            return _sse_events(
                httpx.stream(method, settings.base_url + path, headers=headers, timeout=None, **kwargs)
            )
        resp = httpx.request(method, settings.base_url + path, headers=headers, timeout=600, **kwargs)
    except httpx.TransportError:
        raise CliError(f"cannot reach {settings.base_url}; is the stack up (`tuneserve status`)?") from None
    data = resp.json()
    if resp.status_code >= 400:
        raise CliError(data.get("error", {}).get("message", resp.text))
    return data


def _sse_events(ctx):  # noqa: ANN001, ANN202
    with ctx as resp:
        if resp.status_code >= 400:
            resp.read()
            raise CliError(resp.json().get("error", {}).get("message", resp.text))
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line[6:])


def _health(base_url: str, require_ok: bool = True) -> dict | None:
    import httpx

    try:
        resp = httpx.get(base_url + "/health", timeout=5)
    except httpx.TransportError:
        return None
    if require_ok and resp.status_code != 200:
        return None
    return resp.json()


def _last_error(log, offset: int) -> str | None:  # noqa: ANN001
    """The reason a detached stack gave for failing: its last `tuneserve: error:` line."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    errors = [line for line in text.splitlines() if line.startswith("tuneserve: error:")]
    return errors[-1].removeprefix("tuneserve: error: ") if errors else None


_log: Callable[[str], None] = lambda msg: print(f"tuneserve: {msg}", flush=True)  # noqa: E731


if __name__ == "__main__":
    sys.exit(main())
