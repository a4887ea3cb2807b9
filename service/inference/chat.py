"""Chat and completions: the caller's tenant may use the model, its adapter can be served, retrieval adds
context and citations; then the engine answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from rag.prompting import augment, last_user_text
from service.files.service import FileService
from service.inference.engine import Endpoint, EngineResult, InferenceEngine
from service.inference.images import ImageSources, resolve_images
from service.models.adapters import AdapterChecker
from service.models.registry import ModelRegistry, ResolvedModel
from service.platform.errors import ApiError
from service.protocol.chat_messages import MessageFormatError, check_messages
from service.protocol.tool_format import (
    ToolFormatError,
    as_text_messages,
    check_tool_calls,
    check_tools,
    uses_tools,
)
from service.protocol.vector_stores import RetrievalOptions
from service.vector_stores.service import VectorStores


@dataclass
class ChatService:
    models: ModelRegistry
    adapters: AdapterChecker
    vector_stores: VectorStores
    engine: InferenceEngine | None
    files: FileService | None = None  # images given as file ids (purpose `vision`)
    max_images_per_prompt: int = 4
    image_url_domains: tuple[str, ...] = ()  # whose http(s) image URLs are fetched (none by default)

    def servable(self, tenant: str, model_id: str, param: str = "model") -> ResolvedModel:
        """The model if this stack can answer with it: the tenant's, deployed, with a servable adapter.
        Blocking (database, object store): call it off the event loop."""
        model = self.models.resolve(tenant, model_id, param=param)
        if self.engine is None or not self.engine.serves(model.base_model):
            raise ApiError(
                503,
                f"The base model '{model.base_model}' of {model_id} is not deployed on this stack "
                "(TUNESERVE_SERVED_MODELS).",
                param=param,
                code="model_not_deployed",
            )
        if not model.is_base:
            self.adapters.check(model.id, model.adapter_prefix)
        return model

    async def generate(
        self, endpoint: Endpoint, payload: dict, tenant: str, retrieval: RetrievalOptions | None = None
    ) -> EngineResult:
        """The engine's answer (a JSON body, or an SSE stream), with the citations retrieval added."""
        model = await asyncio.to_thread(self._prepare, endpoint, payload, tenant)
        citations = None
        if retrieval is not None:
            payload["messages"], citations = await self._retrieve(retrieval, payload["messages"], tenant)
        result = await self.engine.generate(endpoint, model, payload)
        if citations is None:
            return result
        if isinstance(result, dict):
            return {**result, "citations": citations}
        return _with_citations(result, citations)

    def _prepare(self, endpoint: Endpoint, payload: dict, tenant: str) -> ResolvedModel:
        """The model, and for a chat its messages with images checked and tools written out: one trip off the
        event loop (blocking: database, object store, files; every thread hop wakes a thread on the engine's
        cores)."""
        if endpoint == "chat":
            try:
                check_messages(payload["messages"])
            except MessageFormatError as exc:
                raise ApiError(400, str(exc), param=exc.param, code=exc.code) from None
        model = self.servable(tenant, payload["model"])
        if endpoint == "chat":
            payload["messages"] = self._with_images(tenant, model, payload.get("messages"))
            payload["messages"] = self._with_tools(model, payload)  # schema checks
        return model

    def _with_tools(self, model: ResolvedModel, payload: dict) -> object:
        """The messages with tools, tool calls and tool results written as text, for a base model whose chat
        template does not present tools itself: the format its fine-tunes were trained on. `tools` stay in
        the request: vLLM's tool parser reads the calls back from the answer (and `tool_choice` "required"
        or a named function constrains it to a call)."""
        messages, tools = payload.get("messages"), payload.get("tools")
        if not uses_tools(messages, tools) or self.models.renders_tools(model.base_model):
            return messages
        try:
            definitions = check_tools(tools) if tools else None
        except ToolFormatError as exc:
            raise ApiError(400, str(exc), param="tools", code="invalid_tools") from None
        for i, m in enumerate(messages):
            if m.get("role") == "assistant" and m.get("tool_calls"):
                where = f"messages[{i}].tool_calls"
                try:
                    m["tool_calls"] = check_tool_calls(m["tool_calls"], where, None)
                except ToolFormatError as exc:
                    raise ApiError(400, str(exc), param=where, code="invalid_tool_call") from None
        shown = None if payload.get("tool_choice") == "none" else definitions
        return as_text_messages(messages, shown)

    def _with_images(self, tenant: str, model: ResolvedModel, messages: object) -> object:
        """The messages with their images checked and as data URLs (blocking: files, decoding)."""

        def read_file(file_id: str) -> bytes:
            if self.files is None:
                raise ApiError(400, "Images as file ids are not available here.", code="invalid_image")
            return self.files.read_bytes(self.files.get(tenant, file_id, param="messages", purpose="vision"))

        takes_images = "image" in self.models.modalities(model.base_model)
        sources = ImageSources(read_file, self.image_url_domains)
        return resolve_images(messages, model.id, takes_images, sources, self.max_images_per_prompt)

    async def _retrieve(
        self, options: RetrievalOptions, messages: list[dict], tenant: str
    ) -> tuple[list[dict], list[dict]]:
        question = last_user_text(messages)
        if not question.strip():
            raise ApiError(400, "Retrieval needs a user message to retrieve for.", param="messages")
        results = await self.vector_stores.search(
            tenant, options.vector_store_ids, [question], options.max_num_results, options.filters
        )
        citations = [
            {
                "index": i,
                "file_id": r.file_id,
                "filename": r.filename,
                "score": r.score,
                "text": r.content[0].text,
            }
            for i, r in enumerate(results, 1)
        ]
        return augment(messages, [(c["filename"], c["text"]) for c in citations]), citations


async def _with_citations(stream: AsyncIterator[str], citations: list[dict]) -> AsyncIterator[str]:
    """The stream with `citations` added to its first chunk."""
    first = True
    async for text in stream:
        if first and text.startswith("data: {"):
            event, _, rest = text[len("data: ") :].partition("\n\n")
            text = f"data: {json.dumps({**json.loads(event), 'citations': citations})}\n\n{rest}"
            first = False
        yield text
