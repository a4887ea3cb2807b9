"""The responses a tenant stored (the Responses API's `store`, on by default): each with the input items it
was given, read back by id, continued by `previous_response_id` (the chain of responses it continues is its
conversation), deleted by the tenant or once older than the retention."""

from __future__ import annotations

from sqlalchemy import delete

from service.inference.kept import KeptRecords, page_items, size_of
from service.platform.db import ResponseRow
from service.platform.errors import ApiError

# A conversation longer than this many stored turns is refused rather than walked (no context holds it).
MAX_TURNS = 1000


class StoredResponses(KeptRecords):
    table = ResponseRow

    def kept_of(self, request: dict) -> object:
        return request.get("input")  # what is known before the answer

    def save(self, tenant: str, response: dict, input_items: list[dict]) -> None:
        row = ResponseRow(
            id=response["id"],
            tenant_id=tenant,
            previous_response_id=response.get("previous_response_id"),
            response=response,
            input_items=input_items,
            bytes=size_of(response) + size_of(input_items),
        )
        with self.db.session() as s:
            s.add(row)

    def get(self, tenant: str, response_id: str) -> dict:
        return self.db.get_or_404(ResponseRow, response_id, "response_id", tenant_id=tenant).response

    def delete(self, tenant: str, response_id: str) -> None:
        self.db.get_or_404(ResponseRow, response_id, "response_id", tenant_id=tenant)
        with self.db.session() as s:
            s.execute(delete(ResponseRow).where(ResponseRow.id == response_id))

    def turns(self, tenant: str, response_id: str) -> list[tuple[list[dict], dict]]:
        """The conversation that `response_id` ends: (input items, response) of each stored turn, oldest
        first. A 404 naming `previous_response_id` if the response is not the tenant's or not stored; the
        chain stops at a turn that was deleted."""
        turns: list[tuple[list[dict], dict]] = []
        with self.db.session() as s:
            at: str | None = response_id
            while at is not None:
                row = s.get(ResponseRow, at)
                if row is None or row.tenant_id != tenant:
                    break
                turns.append((row.input_items, row.response))
                at = row.previous_response_id
                if len(turns) > MAX_TURNS:
                    raise ApiError(
                        400,
                        f"The conversation that response '{response_id}' ends has over {MAX_TURNS} turns; "
                        "start a new one with the context it needs in `input`.",
                        param="previous_response_id",
                    )
        if not turns:
            raise ApiError(
                404,
                f"No stored response with id '{response_id}' (responses made with `store: false` are not "
                "kept, and stored ones expire).",
                param="previous_response_id",
                code="response_not_found",
            )
        return turns[::-1]

    def input_items(
        self, tenant: str, response_id: str, after: str | None, limit: int, order: str
    ) -> tuple[list[dict], bool]:
        """One page of a response's input items (`order` "asc" or "desc"), after the item `after`; with
        whether more follow."""
        items = self.db.get_or_404(ResponseRow, response_id, "response_id", tenant_id=tenant).input_items
        return page_items(items, after, limit, order)
