"""GET /v1/models: the models the caller may use."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import Context, CurrentPrincipal
from service.errors import ApiError
from service.protocol.common import ListResponse, Model

router = APIRouter(prefix="/v1", tags=["models"])


def _base_models(ctx: Context) -> list[Model]:
    return [
        Model(
            id=name,
            created=int(path.stat().st_mtime) if path.exists() else 0,
            owned_by="tuneserve",
            root=name,
        )
        for name, path in ctx.settings.resolved_base_models.items()
    ]


@router.get("/models", response_model=ListResponse[Model], summary="List models")
def list_models(ctx: Context, _: CurrentPrincipal) -> ListResponse[Model]:
    """Base models, then the caller's fine-tuned models."""
    models = _base_models(ctx)
    return ListResponse[Model](
        data=models, first_id=models[0].id if models else None, last_id=models[-1].id if models else None
    )


@router.get("/models/{model}", response_model=Model, summary="Retrieve a model")
def retrieve_model(model: str, ctx: Context, _: CurrentPrincipal) -> Model:
    for m in _base_models(ctx):
        if m.id == model:
            return m
    raise ApiError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
