"""GET /v1/models: the models the caller may use."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import CurrentPrincipal, Svc
from service.protocol.common import ListResponse, Model, ModelDeleted

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ListResponse[Model], summary="List models")
def list_models(services: Svc, principal: CurrentPrincipal) -> ListResponse[Model]:
    """Base models, then the caller's fine-tuned models (with `parent` = their base model)."""
    return ListResponse[Model].page(services.models.list(principal.tenant))


@router.get("/models/{model:path}", response_model=Model, summary="Retrieve a model")
def retrieve_model(model: str, services: Svc, principal: CurrentPrincipal) -> Model:
    """A base model, a fine-tuned model, or a job checkpoint (`...:ckpt-step-N`; parent: its job model)."""
    return services.models.get(principal.tenant, model)


@router.delete("/models/{model:path}", response_model=ModelDeleted, summary="Delete a fine-tuned model")
def delete_model(model: str, services: Svc, principal: CurrentPrincipal) -> ModelDeleted:
    """Removes the model from the caller's registry and its adapter from the object store. Another
    tenant's model is a 404, a base model a 400."""
    services.models.delete(principal.tenant, model)
    return ModelDeleted(id=model)
