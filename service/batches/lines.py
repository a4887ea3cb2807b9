"""The lines of a batch: its input file's requests, checked, and the output and error files' answers.
Pure: no I/O but reading the file it is given."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from service.platform.json_input import JsonInputError, parse_json
from service.protocol.batches import BATCH_ENDPOINTS

MAX_REQUESTS = 50_000  # OpenAI's limit of requests in one batch
# OpenAI's limit of a batch's input file (a running batch reads it a part at a time, not all at once).
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_CUSTOM_ID = 512


class BatchFileError(ValueError):
    """A batch file that cannot run; the message names the line."""


def count_requests(file: BinaryIO, endpoint: str | None = None) -> int:
    """How many requests a batch input file holds, each checked (`iter_requests`) as the file is read: each
    `{"custom_id", "method": "POST", "url", "body"}`, one url for all (`endpoint` when given), custom ids
    unique, bodies objects, nothing streamed. The file is read, not held: it may be 200 MB."""
    file.seek(0, io.SEEK_END)
    if file.tell() > MAX_FILE_BYTES:
        raise BatchFileError(f"a batch file holds at most {MAX_FILE_BYTES // 2**20} MB; split it")
    file.seek(0)
    lines = io.TextIOWrapper(file, encoding="utf-8", newline="\n")
    try:
        count = sum(1 for _ in iter_requests(lines, endpoint))
    except UnicodeDecodeError as exc:
        raise BatchFileError(f"the file is not UTF-8 text ({exc.reason})") from None
    finally:
        lines.detach()  # the caller's file stays open
    if not count:
        raise BatchFileError("the file has no requests")
    return count


def iter_requests(lines: Iterable[str], endpoint: str | None = None) -> Iterator[dict[str, Any]]:
    """The requests of a batch input file's lines, each checked as it is read (a BatchFileError naming the
    first bad line). Lines end at "\n" only, as JSONL's do (read the file with `newline="\n"`): a JSON
    string may hold a raw U+2028, which `str.splitlines` would cut."""
    seen: dict[str, int] = {}
    first_url = None
    count = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        at = f"line {number}"
        try:
            request = parse_json(line)
        except JsonInputError as exc:
            raise BatchFileError(f"{at}: {exc}") from None
        if not isinstance(request, dict):
            raise BatchFileError(f"{at}: a request must be a JSON object")
        unknown = sorted(set(request) - {"custom_id", "method", "url", "body"})
        if unknown:
            raise BatchFileError(f"{at}: unknown key(s) {unknown}")
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID:
            raise BatchFileError(f"{at}: custom_id must be a string of 1 to {MAX_CUSTOM_ID} characters")
        if custom_id in seen:
            raise BatchFileError(f"{at}: custom_id {custom_id!r} is also on line {seen[custom_id]}")
        seen[custom_id] = number
        if request.get("method") != "POST":
            raise BatchFileError(f'{at}: method must be "POST"')
        url = request.get("url")
        if url not in BATCH_ENDPOINTS:
            raise BatchFileError(f"{at}: url must be one of {', '.join(BATCH_ENDPOINTS)}, not {url!r}")
        first_url = first_url or url
        if url != (endpoint or first_url):
            expected = endpoint or first_url
            raise BatchFileError(f"{at}: url {url!r} differs from the batch's endpoint {expected!r}")
        body = request.get("body")
        if not isinstance(body, dict):
            raise BatchFileError(f"{at}: body must be a JSON object (the request to {url})")
        if body.get("stream"):
            raise BatchFileError(f"{at}: body.stream: a batch's answers are not streamed")
        count += 1
        if count > MAX_REQUESTS:
            raise BatchFileError(f"{at}: a batch holds at most {MAX_REQUESTS} requests")
        yield request


def answered(custom_id: str, status: int, body: dict, new_id: Callable[[str], str]) -> dict:
    """A line of the output file (status 2xx) or the error file: the endpoint's answer."""
    return {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": new_id("req_"), "body": body},
        "error": None,
    }


def unanswered(custom_id: str, code: str, message: str, new_id: Callable[[str], str]) -> dict:
    """A line of the error file for a request the batch ended before (cancelled, expired)."""
    return {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def succeeded(line: dict) -> bool:
    response = line.get("response")
    return response is not None and 200 <= response["status_code"] < 300


def usage_of(lines: list[dict]) -> dict[str, int]:
    """The tokens the answered requests took."""
    prompt = completion = 0
    for line in lines:
        if not succeeded(line):
            continue
        usage = line["response"]["body"].get("usage") or {}  # chat's names, or the Responses API's
        prompt += usage.get("prompt_tokens") or usage.get("input_tokens") or 0
        completion += usage.get("completion_tokens") or usage.get("output_tokens") or 0
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
