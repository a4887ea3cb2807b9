"""Fetching an image from an http(s) URL, for the domains the operator allows (TUNESERVE_IMAGE_URL_DOMAINS).

Every hop is checked: a redirect to a domain that is not listed is refused, not followed, so an allowed
host cannot bounce the service to an internal address. The body is read up to the 10 MB image limit and no
further; what comes back is checked as an image by the caller (`service.platform.images.check_image`).
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urljoin

from service.platform.images import MAX_IMAGE_BYTES, ImageError, classify

MAX_REDIRECTS = 3
TIMEOUT_S = 10.0


def fetch_image(url: str, domains: Collection[str], timeout_s: float = TIMEOUT_S) -> bytes:
    """The body at `url` (at most MAX_IMAGE_BYTES); raises ImageError saying what went wrong."""
    import httpx

    for _ in range(MAX_REDIRECTS + 1):
        if classify(url, domains) != "web":
            raise ImageError(f"{url[:80]} is not an http(s) URL")
        try:
            with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=False) as response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise ImageError(f"fetching {url[:80]} answered HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
                    raise ImageError(_too_large(url))
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_IMAGE_BYTES:
                        raise ImageError(_too_large(url))
                return bytes(body)
        except httpx.HTTPError as exc:
            raise ImageError(f"could not fetch {url[:80]} ({type(exc).__name__})") from None
    raise ImageError(f"{url[:80]}: more than {MAX_REDIRECTS} redirects")


def _too_large(url: str) -> str:
    return f"the image at {url[:80]} is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB"
