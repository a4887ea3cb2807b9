"""/v1/models: the models the caller may use; adapters imported and exported."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from service.api.deps import CurrentPrincipal, Svc
from service.models.adapters import AdapterError
from service.models.archives import unpack_adapter
from service.platform.errors import ApiError
from service.protocol.common import ListResponse, Model, ModelDeleted, ModelImport

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ListResponse[Model], summary="List models")
def list_models(services: Svc, principal: CurrentPrincipal) -> ListResponse[Model]:
    """Base models, then the caller's fine-tuned models (with `parent` = their base model)."""
    return ListResponse[Model].page(services.models.list(principal.tenant))


@router.post("/models", response_model=Model, summary="Import a LoRA adapter as a model")
def import_model(body: ModelImport, services: Svc, principal: CurrentPrincipal) -> Model:
    """An existing PEFT LoRA adapter (uploaded as a .tar.gz or .zip with purpose `adapter`) becomes one of
    the caller's models, `<base_model>:<suffix>-<id>`: served, evaluated and continued from like a
    fine-tuned one. It is checked first, each failure a 400 that says why: the adapter's files are there
    (`adapter_config.json`, `adapter_model.safetensors`), it is a LoRA vLLM can serve (rank at most
    TUNESERVE_SERVING_MAX_LORA_RANK, no `modules_to_save`), and every LoRA pair fits the base model's
    module of that name (an adapter of another model is refused)."""
    files = services.files
    row = files.get(principal.tenant, body.file, param="file", purpose="adapter")
    with tempfile.TemporaryDirectory(prefix="adapter-import-") as tmp:
        try:
            unpack_adapter(files.read_bytes(row), Path(tmp), services.settings.max_file_bytes)
        except AdapterError as exc:
            raise ApiError(
                400, f"The adapter cannot be imported: {exc}.", param="file", code="invalid_adapter"
            ) from None
        return services.models.import_adapter(principal.tenant, Path(tmp), body.base_model, body.suffix)


@router.get(
    "/models/{model:path}/content",
    response_class=Response,
    summary="Download a model's adapter",
    responses={200: {"content": {"application/gzip": {}}}},
)
def download_adapter(model: str, services: Svc, principal: CurrentPrincipal) -> Response:
    """The adapter of one of the caller's fine-tuned or imported models (or a checkpoint) as a .tar.gz of
    its PEFT folder, loadable with `PeftModel.from_pretrained` once unpacked."""
    data = services.models.export_adapter(principal.tenant, model)
    name = model.replace(":", "_").replace("/", "_")
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar.gz"'},
    )


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
