"""The one client of the HTTP API that every command uses: the stack of this data dir, with `--api-key`,
TUNESERVE_API_KEY or the data dir's admin key."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator

import httpx

from service.platform.auth import resolve_admin_key
from service.platform.settings import Settings


class CliError(RuntimeError):
    """Printed as one line `tuneserve: error: ...` with exit code 1."""


class ApiClient:
    def __init__(self, settings: Settings, api_key: str | None = None) -> None:
        self.settings = settings
        self.base_url = settings.base_url
        self._key = api_key

    @property
    def headers(self) -> dict[str, str]:
        if self._key is None:
            try:
                self._key = resolve_admin_key(self.settings)
            except FileNotFoundError as exc:
                raise CliError(str(exc)) from None
        return {"Authorization": f"Bearer {self._key}"}

    def call(self, method: str, path: str, **kwargs: object) -> dict:
        """One request; its JSON body, or CliError with the API's message."""
        try:
            resp = httpx.request(method, self.base_url + path, headers=self.headers, timeout=600, **kwargs)
        except httpx.TransportError:
            raise self._unreachable() from None
        data = resp.json()
        if resp.status_code >= 400:
            raise CliError(data.get("error", {}).get("message", resp.text))
        return data

    def events(self, method: str, path: str, **kwargs: object) -> Iterator[dict]:
        """A Server-Sent Events response, one decoded `data:` event at a time, until `[DONE]`."""
        try:
            with httpx.stream(
                method, self.base_url + path, headers=self.headers, timeout=None, **kwargs
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise CliError(resp.json().get("error", {}).get("message", resp.text))
                for line in resp.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        yield json.loads(line[6:])
        except httpx.TransportError:
            raise self._unreachable() from None

    def _unreachable(self) -> CliError:
        return CliError(f"cannot reach {self.base_url}; is the stack up (`tuneserve status`)?")


Handler = Callable[[ApiClient, argparse.Namespace], int]


def command(handler: Handler) -> Callable[[Settings, argparse.Namespace], int]:
    """An API command as the parser calls it: with a client for the stack and the caller's key."""
    return lambda settings, args: handler(ApiClient(settings, args.api_key), args)


def health(base_url: str, require_ok: bool = True, admin_key: str | None = None) -> dict | None:
    """The stack's /health body (with each component's, given the admin key); None if it does not answer
    (or, with `require_ok`, is not healthy)."""
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    try:
        resp = httpx.get(base_url + "/health", headers=headers, timeout=5)
    except httpx.TransportError:
        return None
    if require_ok and resp.status_code != 200:
        return None
    return resp.json()


def model_usage(base_url: str, admin_key: str) -> dict | None:
    """Requests and tokens so far per model, from the stack's /metrics; None if it does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        resp = httpx.get(base_url + "/metrics", headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
    except httpx.TransportError:
        return None
    if resp.status_code != 200:
        return None
    usage: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(resp.text):
        if family.name not in ("tuneserve_requests", "tuneserve_tokens"):
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            counts = usage.setdefault(
                sample.labels["model"], {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
            )
            key = "requests" if family.name == "tuneserve_requests" else f"{sample.labels['kind']}_tokens"
            counts[key] += int(sample.value)
    return usage
