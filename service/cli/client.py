"""The one client of the HTTP API that every command uses: the stack of this data dir, with `--api-key`,
TUNESERVE_API_KEY or the data dir's admin key."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

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
        if resp.status_code >= 400:
            raise _api_error(resp)
        return resp.json()

    def all(self, path: str, **params: str) -> list[dict]:
        """Every item of a list endpoint, page after page (OpenAI's `after` cursors). The query goes in
        `params`: httpx drops a query string in `path` when it is given params."""
        items: list[dict] = []
        after = None
        while True:
            page = self.call(
                "GET", path, params={**params, "limit": 100, **({"after": after} if after else {})}
            )
            items += page["data"]
            if not page.get("has_more") or not page["data"]:
                return items
            after = page["data"][-1]["id"]

    def upload(self, name: str, content: bytes | BinaryIO, purpose: str) -> dict:
        """POST /v1/files: the new file object."""
        return self.call("POST", "/v1/files", files={"file": (name, content)}, data={"purpose": purpose})

    def download(self, path: str, dest: Path, params: dict | None = None, waiting: str = "") -> None:
        """A response body written to `dest` with a progress bar in bytes; CliError with the API's message.
        `waiting` is printed while the service prepares the body (its first byte can take minutes)."""
        from tqdm import tqdm

        if waiting:
            print(waiting, file=sys.stderr, flush=True)
        try:
            with httpx.stream(
                "GET", self.base_url + path, params=params, headers=self.headers, timeout=None
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _api_error(resp)
                total = int(resp.headers.get("content-length", 0)) or None
                with (
                    dest.open("wb") as out,
                    tqdm(total=total, unit="B", unit_scale=True, dynamic_ncols=True, desc=dest.name) as bar,
                ):
                    for chunk in resp.iter_bytes(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        except httpx.TransportError:
            raise self._unreachable() from None

    def events(self, method: str, path: str, **kwargs: object) -> Iterator[dict]:
        """A Server-Sent Events response, one decoded `data:` event at a time, until `[DONE]`."""
        try:
            with httpx.stream(
                method, self.base_url + path, headers=self.headers, timeout=None, **kwargs
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _api_error(resp)
                for line in resp.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        yield json.loads(line[6:])
        except httpx.TransportError:
            raise self._unreachable() from None

    def _unreachable(self) -> CliError:
        return CliError(f"cannot reach {self.base_url}; is the stack up (`tuneserve status`)?")


def print_json(obj: object) -> int:
    """A command's result on stdout, as indented JSON; exit code 0."""
    print(json.dumps(obj, indent=2))
    return 0


def _api_error(resp: httpx.Response) -> CliError:
    """The API's message (OpenAI's error shape), or the status and body of anything else (a proxy's 502)."""
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {resp.status_code}: {resp.text[:500]}"
    return CliError(message)


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
