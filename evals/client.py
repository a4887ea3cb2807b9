"""The service's own API as an evaluation run sees it: chat completions for samples and judges,
completions with echo + logprobs for log-likelihoods, sentence embeddings for cosine similarity."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

import httpx


class ModelCallError(Exception):
    """The API refused or failed a request; `code` and the message come from its OpenAI error body."""

    def __init__(self, status: int, message: str, code: str | None) -> None:
        super().__init__(message)
        self.status, self.code = status, code or f"http_{status}"


class ApiScorer:
    """Calls the API as the run's tenant; `model` is the run's model, `tokenizer_path` its base model's
    folder (for the chat template that token loss scores the reply under)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        tokenizer_path: str,
        embedding: tuple[str | None, str] = (None, "auto"),
        timeout: float = 600,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + "/v1",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )
        self.model, self.tokenizer_path, self.embedding = model, tokenizer_path, embedding
        self.timeout = timeout

    def post(self, path: str, body: dict) -> dict:
        """The API's answer; over the tenant's rate limit (429) or with the engine at capacity (a 503 with
        `Retry-After`), waits as `Retry-After` says and tries again (a run goes at the pace its tenant and
        the engine allow) until the client's timeout has passed."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                resp = self.http.post(path, json=body)
            except httpx.HTTPError as exc:
                raise ModelCallError(503, f"the API did not answer: {exc}", "api_unreachable") from None
            retry_after = resp.headers.get("retry-after")
            wait = float(retry_after or 1)
            busy = resp.status_code == 429 or (resp.status_code == 503 and retry_after is not None)
            if not busy or time.monotonic() + wait > deadline:
                break
            time.sleep(wait)
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                raise ModelCallError(resp.status_code, err["message"], err.get("code"))
            except (ValueError, KeyError, TypeError):
                raise ModelCallError(resp.status_code, resp.text[:500], None) from None
        return resp.json()

    def complete_chat(self, body: dict) -> dict:
        return self.post("/chat/completions", body)

    def chat(self, model: str, messages: list[dict], sampling: dict) -> str:
        out = self.complete_chat({"model": model, "messages": messages, **sampling})
        return out["choices"][0]["message"]["content"] or ""

    def continuation_logliks(self, context: str, continuations: list[str]) -> list[float]:
        return [sum(self._token_logprobs(context + c, len(context))) for c in continuations]

    def reply_logprobs(self, messages: list[dict]) -> list[float]:
        prefix = self._tokenizer.apply_chat_template(
            messages[:-1], tokenize=False, add_generation_prompt=True
        )
        full = self._tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prefix):
            raise ValueError("the chat template renders the conversation differently with the reply")
        return self._token_logprobs(full, len(prefix))

    def _token_logprobs(self, text: str, start: int) -> list[float]:
        """Log-probabilities of the prompt's tokens that begin at or after character `start`."""
        out = self.post(
            "/completions",
            {
                "model": self.model,
                "prompt": text,
                "max_tokens": 1,
                "echo": True,
                "logprobs": 0,
                "temperature": 0,
            },
        )
        lp = out["choices"][0]["logprobs"]
        n_prompt = out["usage"]["prompt_tokens"]
        offsets, logprobs = lp["text_offset"][:n_prompt], lp["token_logprobs"][:n_prompt]
        scored = [p for off, p in zip(offsets, logprobs, strict=True) if off >= start and p is not None]
        if not scored:
            raise ValueError("nothing to score after the context")
        return scored

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed(texts).tolist()

    @cached_property
    def _tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer_path)

    @cached_property
    def _embedder(self) -> Any:
        from rag.ingest import embedder

        return embedder(*self.embedding)

    def close(self) -> None:
        self.http.close()
