"""Images in chat requests: checked, and uploaded or linked ones turned into data URLs for the engine.

A chat message's content parts may carry `image_url` parts whose url is a data URL, the id of a file the
tenant uploaded with purpose `vision`, or an http(s) URL on a domain the operator allows
(`service.platform.images`); the engine (vLLM) sees only data URLs, so it never fetches anything itself.
A model that takes text only gets a 400 for any image, and so does an image that does not decode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.platform.errors import ApiError
from service.platform.image_fetch import fetch_image
from service.platform.images import (
    MIME_TYPES,
    ImageError,
    check_image,
    classify,
    decode_data_url,
    encode_data_url,
)


@dataclass(frozen=True)
class ImageSources:
    """Where a request's images may come from besides data URLs."""

    read_file: Callable[[str], bytes]  # a vision file id of the caller -> its bytes (ApiError 404 if not)
    web_domains: tuple[str, ...] = ()  # whose http(s) URLs are fetched

    def read(self, url: str) -> bytes:
        """The bytes of a file id or an allowed URL (`classify` said which)."""
        if classify(url, self.web_domains) == "web":
            return fetch_image(url, self.web_domains)
        return self.read_file(url)


def resolve_images(
    messages: object, model: str, takes_images: bool, sources: ImageSources, limit: int
) -> object:
    """`messages` with every image part checked and given as a data URL; unchanged when it has none. Their
    shape (images in user messages only, ...) was checked before (`service.protocol.chat_messages`)."""
    if not isinstance(messages, list):
        return messages  # the request model reports the shape error
    count = 0
    out = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            out.append(message)
            continue
        parts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "image_url"):
                parts.append(part)
                continue
            param = f"messages[{i}].content[{j}].image_url"
            if not takes_images:
                raise ApiError(
                    400,
                    f"The model '{model}' takes text only; images need a vision-language model "
                    "(`modalities` in GET /v1/models).",
                    param=param,
                    code="image_not_supported",
                )
            count += 1
            if count > limit:
                raise ApiError(
                    400,
                    f"At most {limit} images a request (TUNESERVE_SERVING_MAX_IMAGES_PER_PROMPT).",
                    param=param,
                    code="too_many_images",
                )
            image_url = part.get("image_url")
            details = image_url if isinstance(image_url, dict) else {"url": image_url}
            url = _data_url(details.get("url"), sources, param)
            parts.append({**part, "image_url": {**details, "url": url}})
        out.append({**message, "content": parts})
    return out


def _data_url(url: object, sources: ImageSources, param: str) -> str:
    try:
        if classify(url, sources.web_domains) == "data":
            check_image(decode_data_url(url))  # type: ignore[arg-type]
            return url  # type: ignore[return-value]
        data = sources.read(url)  # type: ignore[arg-type]
        info = check_image(data)
    except ImageError as exc:
        raise ApiError(400, f"{param}: {exc}", param=param, code="invalid_image") from None
    return encode_data_url(data, MIME_TYPES[info.format])
