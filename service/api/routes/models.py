"""/v1/models: the models the caller may use; adapters imported and exported."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from service.api.deps import CurrentPrincipal, Svc
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
    """An existing PEFT LoRA adapter becomes one of the caller's models, `<base_model>:<suffix>-<id>`:
    served, evaluated and continued from like a fine-tuned one. It comes either as a file uploaded with
    purpose `adapter` (a .tar.gz or .zip of its folder) or from an S3 folder under a prefix the admin allows
    (`source`, read with the service's credentials). It is checked first, each failure a 400 that says why:
    the adapter's files are there (`adapter_config.json`, `adapter_model.safetensors`), it is a LoRA vLLM
    can serve (rank at most TUNESERVE_SERVING_MAX_LORA_RANK, no `modules_to_save`), and every LoRA pair
    fits the base model's module of that name (an adapter of another model is refused)."""
    if (body.file is None) == (body.source is None):
        raise ApiError(400, "Give exactly one of `file` and `source`.", param="file")
    if body.source is not None:
        fill, param = services.models.source(body.source), "source"
    else:
        files = services.files
        data = files.read_bytes(files.get(principal.tenant, body.file, param="file", purpose="adapter"))
        max_bytes = services.settings.max_file_bytes
        fill, param = (lambda folder: unpack_adapter(data, folder, max_bytes)), "file"
    return services.models.import_adapter(principal.tenant, body.base_model, body.suffix, fill, param)


@router.get(
    "/models/{model:path}/content",
    response_class=Response,
    summary="Download a model's adapter, or the model merged",
    responses={200: {"content": {"application/gzip": {}, "application/x-tar": {}}}},
)
def download_adapter(
    model: str,
    services: Svc,
    principal: CurrentPrincipal,
    format: Literal["adapter", "merged"] = Query(
        "adapter",
        description="`adapter`: a .tar.gz of its PEFT folder. `merged`: a .tar of a Hugging Face folder, the "
        "adapter folded into the base weights (with the base's tokenizer and chat template), loadable by "
        "transformers and vLLM without peft.",
    ),
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Query(
        "auto", description="Precision of merged weights; `auto` keeps the base model's."
    ),
) -> Response:
    """The adapter of one of the caller's fine-tuned or imported models (or a checkpoint) as a .tar.gz of
    its PEFT folder, loadable with `PeftModel.from_pretrained` once unpacked; or, with `format=merged`, the
    whole model with the adapter folded in (merged in float32, one merge at a time: it takes the base
    model's size in memory and a few seconds to minutes)."""
    name = model.replace(":", "_").replace("/", "_")
    if format == "merged":
        tmp = Path(tempfile.mkdtemp(prefix="merged-export-"))
        try:
            tar = services.models.export_merged(principal.tenant, model, dtype, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return FileResponse(
            tar,
            media_type="application/x-tar",
            filename=f"{name}-merged.tar",
            background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True),
        )
    data = services.models.export_adapter(principal.tenant, model)
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
