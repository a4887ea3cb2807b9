"""The inference engine as the API sees it: OpenAI request bodies in, OpenAI responses out.

The product's engine is vLLM behind Ray Serve (`deploy.llm.ServeLLMEngine`); unit tests plug in a fake one to
test routing and tenancy. The API checks who may use which model before the engine sees a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from service.models.registry import ResolvedModel

Endpoint = Literal["chat", "completions"]

# A non-streaming answer is one JSON body; a streaming one is Server-Sent Events text, ending in [DONE].
EngineResult = dict | AsyncIterator[str]


class InferenceEngine(Protocol):
    def serves(self, base_model: str) -> bool:
        """Whether this engine has a deployment for `base_model`."""

    async def generate(self, endpoint: Endpoint, model: ResolvedModel, body: dict) -> EngineResult:
        """Run one OpenAI request for `model` (body["model"] is its public id); ApiError on bad input."""
