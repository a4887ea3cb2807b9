"""GET /v1/models: the models the caller may use."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import Context, CurrentPrincipal
from service.protocol.common import ListResponse, Model, ModelDeleted
from service.registry import ModelRegistry

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ListResponse[Model], summary="List models")
def list_models(ctx: Context, principal: CurrentPrincipal) -> ListResponse[Model]:
    """Base models, then the caller's fine-tuned models (with `parent` = their base model)."""
    models = ModelRegistry(ctx).list(principal.tenant)
    return ListResponse[Model].page(models)


@router.get("/models/{model:path}", response_model=Model, summary="Retrieve a model")
def retrieve_model(model: str, ctx: Context, principal: CurrentPrincipal) -> Model:
    registry = ModelRegistry(ctx)
    registry.resolve(principal.tenant, model)
    return next(m for m in registry.list(principal.tenant) if m.id == model)


@router.delete("/models/{model:path}", response_model=ModelDeleted, summary="Delete a fine-tuned model")
def delete_model(model: str, ctx: Context, principal: CurrentPrincipal) -> ModelDeleted:
    """Removes the model from the caller's registry and its adapter from the object store. Another
    tenant's model is a 404, a base model a 400."""
    ModelRegistry(ctx).delete(principal.tenant, model)
    return ModelDeleted(id=model)
