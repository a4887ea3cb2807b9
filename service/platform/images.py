"""Images in OpenAI's message format: where an image may come from, what is accepted, and the check that
an image decodes. Light: Pillow is imported by the check only.

An `image_url.url` is one of
  data:image/png;base64,...    the image itself (PNG, JPEG or WEBP)
  file-...                     a file of the tenant uploaded with purpose `vision`
  https://host/...             only where the operator lists the host's domain (TUNESERVE_IMAGE_URL_DOMAINS;
                               none by default): the service never fetches from arbitrary URLs, which would
                               let a caller make it request internal addresses (server-side request forgery)
OpenAI's published limits apply: at most 10 MB an image and 10 images an example.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_BASE64_CHARS = (MAX_IMAGE_BYTES // 3 + 1) * 4  # the largest image, base64-encoded
MAX_IMAGES_PER_EXAMPLE = 10
MAX_IMAGE_PIXELS = 50_000_000  # far above any real image; stops a decompression bomb before it decodes
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_DATA_URL_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/webp"}
FILE_ID_PREFIX = "file-"


class ImageError(ValueError):
    """An image reference or an image that cannot be used; the message says why, for the client."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # PNG, JPEG or WEBP
    width: int
    height: int


def classify(url: object, web_domains: Collection[str] = ()) -> str:
    """What an `image_url.url` is: "data", "file", or "web" (an http(s) URL on one of `web_domains`);
    raises ImageError for anything else."""
    if not isinstance(url, str) or not url:
        raise ImageError("image_url.url must be a non-empty string")
    if url.startswith("data:"):
        return "data"
    if url.startswith(FILE_ID_PREFIX):
        return "file"
    if url.split(":", 1)[0].lower() in ("http", "https"):
        host = _host(url)
        if host is not None and host_allowed(host, web_domains):
            return "web"
        raise ImageError(
            f"images are not fetched from {host or 'this URL'}: send the image as a data URL "
            "(data:image/png;base64,...) or upload it (purpose 'vision') and use its file id; the "
            "operator may allow a domain (TUNESERVE_IMAGE_URL_DOMAINS)"
        )
    raise ImageError("image_url.url must be a data:image/...;base64 URL or the id of an uploaded file")


def host_allowed(host: str, domains: Collection[str]) -> bool:
    """Whether `host` is one of `domains` or under one (img.example.com under example.com; not
    badexample.com)."""
    host = host.lower().rstrip(".")
    for domain in domains:
        domain = domain.lower().strip().strip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


def _host(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        return parts.hostname if parts.username is None and parts.password is None else None
    except ValueError:
        return None


def encode_data_url(data: bytes, mime: str) -> str:
    """`data` as a `data:<mime>;base64,...` URL, the form `decode_data_url` reads."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def decode_data_url(url: str) -> bytes:
    """The bytes of a `data:image/<png|jpeg|webp>;base64,...` URL (not yet checked to decode as an image)."""
    header, comma, payload = url.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        raise ImageError("a data URL must look like data:image/png;base64,<base64 data>")
    mime = header.removeprefix("data:").removesuffix(";base64").lower()
    if mime not in _DATA_URL_TYPES:
        raise ImageError(f"images of type {mime!r} are not accepted: PNG, JPEG or WEBP only")
    if len(payload) > MAX_IMAGE_BASE64_CHARS:
        raise ImageError(f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the data URL's base64 data does not decode") from None


def check_image(data: bytes) -> ImageInfo:
    """That `data` is a whole PNG, JPEG or WEBP image within the limits; raises ImageError saying what is
    wrong."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as image:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            if image.format not in MIME_TYPES:
                raise ImageError(f"{image.format} images are not accepted: PNG, JPEG or WEBP only")
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(f"the image has {width}x{height} pixels; at most {MAX_IMAGE_PIXELS:,}")
            image.load()  # decodes every pixel: a truncated or corrupt file fails here
            return ImageInfo(image.format, width, height)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"the image has more than {MAX_IMAGE_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the image does not decode ({type(exc).__name__}: {exc})") from None
