"""The Responses API around the chat path, for the route and for batches: a request checked against the
tenant's storage, joined to the conversation it continues and translated into a chat request
(`prepare`); the chat path's errors named in the request's own fields (`renamed`); the answer kept, unless
`store` is false (`keep`). The translation itself is pure (`service.protocol.responses`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydantic import ValidationError

from service.inference.stored_responses import StoredResponses
from service.platform.errors import ApiError, schema_error
from service.platform.ids import new_id
from service.protocol.chat import ChatCompletionCreate
from service.protocol.responses import ResponsesInputError, history_items, input_items, input_param, to_chat


@dataclass
class PreparedResponse:
    """A Responses request ready for the chat path: the request, the items of the conversation it
    continues, the chat request that answers it, and its id."""

    request: dict
    history: list[dict] = field(default_factory=list)
    chat: ChatCompletionCreate | None = None
    id: str = field(default_factory=lambda: new_id("resp_"))

    @property
    def stored(self) -> bool:
        return self.request.get("store") is not False


class ResponsesService:
    def __init__(self, stored: StoredResponses) -> None:
        self.stored = stored

    def prepare(self, tenant: str, request: dict) -> PreparedResponse:
        """Blocking (the database): the 429 of the storage limit for a response to be stored, the 404 of
        a `previous_response_id` that is not the tenant's, a 400 naming the field that cannot be
        translated or fails the chat request's schema."""
        prepared = PreparedResponse(request)
        with self.renamed(prepared):
            if prepared.stored:  # before the answer is made: it is stored
                self.stored.check_room(tenant, request)
            previous = request.get("previous_response_id")
            if previous is not None:
                prepared.history = history_items(self.stored.turns(tenant, previous))
            try:
                prepared.chat = ChatCompletionCreate.model_validate(to_chat(request, prepared.history))
            except ResponsesInputError as exc:
                raise ApiError(400, str(exc), param=exc.param) from None
            except ValidationError as exc:  # the chat request's schema, as the chat route answers it
                raise schema_error(exc.errors()) from None
        return prepared

    @staticmethod
    @contextmanager
    def renamed(prepared: PreparedResponse) -> Iterator[None]:
        """An ApiError of the chat path names the chat request's fields (`messages[2].content`): name the
        request's (`input[1].content`, `previous_response_id`)."""
        try:
            yield
        except ApiError as err:
            param = input_param(err.param, prepared.request, prepared.history)
            if err.param is not None and param != err.param:
                err.message = err.message.replace(err.param, param)
                err.param = param
            raise

    def keep(self, tenant: str, prepared: PreparedResponse, response: dict) -> None:
        """Blocking: store the finished response with its input, unless `store` is false."""
        if prepared.stored:
            items = input_items(prepared.request, lambda: new_id("msg_"))
            self.stored.save(tenant, response, items)
