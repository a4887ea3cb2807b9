"""POST /v1/embeddings."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import CurrentPrincipal, Svc
from service.platform.errors import ApiError
from service.protocol.embeddings import EmbeddingCreate, EmbeddingList

router = APIRouter(prefix="/v1", tags=["embeddings"])


@router.post("/embeddings", response_model=EmbeddingList, summary="Create embeddings")
async def create_embeddings(
    body: EmbeddingCreate, services: Svc, principal: CurrentPrincipal
) -> JSONResponse:
    """Unit-length vectors of the texts from the model vector stores embed with (`model`: its id, e.g.
    `all-MiniLM-L6-v2`), so that a client's vectors match the stores'. Works with the official client's
    `embeddings.create` and with LangChain's `OpenAIEmbeddings(..., check_embedding_ctx_length=False)`.
    A text longer than the model reads is a 400 naming it."""
    start, tenant = time.perf_counter(), principal.tenant
    try:
        admission = await asyncio.to_thread(
            services.limits.admit, tenant, stream=False, exempt=principal.is_admin
        )
        try:
            result = await asyncio.to_thread(services.embeddings.create, body)
        finally:
            admission.release()
    except ApiError as err:
        services.metrics.failed("embeddings", body.model, tenant, err, start)
        raise
    services.metrics.record("embeddings", body.model, tenant, 200, start, result.usage.model_dump())
    return JSONResponse(result.model_dump(), headers=admission.headers)
