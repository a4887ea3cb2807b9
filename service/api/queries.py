"""Query-string parameters that several routes read the same way."""

from __future__ import annotations

from fastapi import Request

from service.platform.errors import ApiError
from service.protocol.common import MetadataFilter


def metadata_filter(request: Request) -> MetadataFilter | None:
    """OpenAI's `metadata[KEY]=VALUE` list filter from the query string (its names are no declarable
    parameter); a malformed one is a 400 naming `metadata`."""
    try:
        return MetadataFilter.from_query(request.query_params.multi_items())
    except ValueError as exc:
        raise ApiError(
            400, f"Invalid metadata filter: {exc}.", param="metadata", code="invalid_value"
        ) from None
