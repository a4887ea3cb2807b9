"""/v1/evals: OpenAI's Evals API (evals, runs, output items), built-in suites and run comparisons."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from evals import suites
from service.api.deps import CurrentPrincipal, Svc
from service.protocol.common import ListResponse
from service.protocol.evals import (
    Comparison,
    Eval,
    EvalCreate,
    EvalDeleted,
    EvalUpdate,
    OutputItem,
    Run,
    RunCreate,
    RunDeleted,
    Suite,
)

router = APIRouter(prefix="/v1/evals", tags=["evals"])
Limit = Annotated[int, Query(ge=1, le=100)]
Order = Annotated[Literal["asc", "desc"], Query(description="By creation time.")]


@router.get("/suites", response_model=ListResponse[Suite], summary="List the built-in suites")
def list_suites(principal: CurrentPrincipal) -> ListResponse[Suite]:
    """Suites that ship with tuneserve, with their source and licence; `POST /v1/evals` with `suite` makes
    an eval of one, whose runs need only a `model`."""
    data = []
    for name in suites.names():
        s = suites.load(name)
        data.append(
            Suite(
                name=s.name,
                description=s.description,
                source=s.source,
                license=s.license,
                items=len(s.items()),
                testing_criteria=s.testing_criteria,
            )
        )
    return ListResponse[Suite](data=data)


@router.post("", response_model=Eval, summary="Create an eval")
def create_eval(req: EvalCreate, services: Svc, principal: CurrentPrincipal) -> Eval:
    """An eval: the shape of its items (`data_source_config`) and how answers are graded
    (`testing_criteria`), checked now: a bad grader or template is a 400 naming it."""
    service = services.evals
    return service.to_api(service.create(principal.tenant, req))


@router.get("", response_model=ListResponse[Eval], summary="List evals")
def list_evals(
    services: Svc,
    principal: CurrentPrincipal,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
) -> ListResponse[Eval]:
    service = services.evals
    rows, more = service.list(principal.tenant, after, limit, order)
    return ListResponse[Eval].page([service.to_api(r) for r in rows], has_more=more)


@router.get("/{eval_id}", response_model=Eval, summary="Retrieve an eval")
def get_eval(eval_id: str, services: Svc, principal: CurrentPrincipal) -> Eval:
    service = services.evals
    return service.to_api(service.get(principal.tenant, eval_id))


@router.post("/{eval_id}", response_model=Eval, summary="Update an eval")
def update_eval(eval_id: str, req: EvalUpdate, services: Svc, principal: CurrentPrincipal) -> Eval:
    """Only `name` and `metadata` change; criteria stay as they were, so that runs remain comparable."""
    service = services.evals
    return service.to_api(service.update(principal.tenant, eval_id, req))


@router.delete("/{eval_id}", response_model=EvalDeleted, summary="Delete an eval and its runs")
def delete_eval(eval_id: str, services: Svc, principal: CurrentPrincipal) -> EvalDeleted:
    services.evals.delete(principal.tenant, eval_id)
    return EvalDeleted(eval_id=eval_id)


@router.post("/{eval_id}/runs", response_model=Run, summary="Create a run")
def create_run(eval_id: str, req: RunCreate, services: Svc, principal: CurrentPrincipal) -> Run:
    """Evaluate a model (base or fine-tuned) on items: inline (`file_content`), an uploaded JSONL file
    (`file_id`, purpose `evals`), or the eval's suite. Every item is checked against the eval's
    `item_schema` first (400 naming the item); the run is then queued and executes in the background."""
    service = services.evals
    row = service.create_run(principal.tenant, eval_id, req, created_by_key=principal.key_id)
    services.eval_runs.start(row.id)
    return service.run_to_api(row)


@router.get("/{eval_id}/runs", response_model=ListResponse[Run], summary="List an eval's runs")
def list_runs(
    eval_id: str,
    services: Svc,
    principal: CurrentPrincipal,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
    status: Literal["queued", "in_progress", "completed", "failed", "canceled"] | None = None,
) -> ListResponse[Run]:
    service = services.evals
    rows, more = service.runs(principal.tenant, eval_id, status, after, limit, order)
    return ListResponse[Run].page([service.run_to_api(r) for r in rows], has_more=more)


@router.get("/{eval_id}/runs/{run_id}", response_model=Run, summary="Retrieve a run")
def get_run(eval_id: str, run_id: str, services: Svc, principal: CurrentPrincipal) -> Run:
    """Status, `result_counts`, `per_testing_criteria_results` and `progress` as items complete."""
    service = services.evals
    return service.run_to_api(service.get_run(principal.tenant, eval_id, run_id))


@router.post("/{eval_id}/runs/{run_id}/cancel", response_model=Run, summary="Cancel a run")
@router.post("/{eval_id}/runs/{run_id}", response_model=Run, summary="Cancel a run (as OpenAI documents)")
def cancel_run(eval_id: str, run_id: str, services: Svc, principal: CurrentPrincipal) -> Run:
    """Stops a queued or running run (items already graded are kept); 409 if it has ended."""
    service = services.evals
    return service.run_to_api(service.cancel_run(principal.tenant, eval_id, run_id))


@router.delete("/{eval_id}/runs/{run_id}", response_model=RunDeleted, summary="Delete a run")
def delete_run(eval_id: str, run_id: str, services: Svc, principal: CurrentPrincipal) -> RunDeleted:
    services.evals.delete_run(principal.tenant, eval_id, run_id)
    return RunDeleted(run_id=run_id)


@router.get(
    "/{eval_id}/runs/{run_id}/output_items",
    response_model=ListResponse[OutputItem],
    summary="List a run's output items",
)
def list_output_items(
    eval_id: str,
    run_id: str,
    services: Svc,
    principal: CurrentPrincipal,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
    status: Literal["pass", "fail", "error"] | None = None,
) -> ListResponse[OutputItem]:
    """Each item with the model's sample (input, output, usage, or the error) and every grader's result."""
    service = services.evals
    rows, more = service.output_items(principal.tenant, eval_id, run_id, status, after, limit, order)
    return ListResponse[OutputItem].page([service.item_to_api(r, eval_id) for r in rows], has_more=more)


@router.get(
    "/{eval_id}/runs/{run_id}/output_items/{output_item_id}",
    response_model=OutputItem,
    summary="Retrieve an output item",
)
def get_output_item(
    eval_id: str, run_id: str, output_item_id: str, services: Svc, principal: CurrentPrincipal
) -> OutputItem:
    service = services.evals
    return service.item_to_api(
        service.output_item(principal.tenant, eval_id, run_id, output_item_id), eval_id
    )


@router.get("/{eval_id}/compare", response_model=Comparison, summary="Compare runs of an eval")
def compare_runs(
    eval_id: str,
    services: Svc,
    principal: CurrentPrincipal,
    run_ids: Annotated[
        list[str],
        Query(description="Two or more run ids (repeat the parameter).", json_schema_extra={"minItems": 2}),
    ],
) -> Comparison:
    """Extension: runs side by side: each criterion's pass rate and mean score per run, and the items
    whose status differs between them (with each run's answer)."""
    return services.evals.compare(principal.tenant, eval_id, run_ids)
