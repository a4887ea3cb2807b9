"""Vision examples in OpenAI's format: images in user messages, as data URLs or file ids, checked."""

import base64
import io
import json
import struct
import zlib

import pytest
from PIL import Image

from trainers.data_format import IMAGE, TEXT, DatasetError, parse_jsonl


def png(colour: str = "red", size: int = 8, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format=fmt)
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def example(*user_parts: dict, answer: str = "red") -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "user", "content": list(user_parts)},
                {"role": "assistant", "content": answer},
            ]
        }
    )


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url, "detail": "low"}}


TEXT_PART = {"type": "text", "text": "What colour is this?"}


def test_images_keep_their_place_among_the_text() -> None:
    url = data_url(png())
    [ex] = parse_jsonl(example(image(url), TEXT_PART, image("file-abc")).encode())
    user = ex.messages[0]
    assert user.parts == ((IMAGE, url), (TEXT, "What colour is this?"), (IMAGE, "file-abc"))
    assert user.content == "What colour is this?" and ex.images == [url, "file-abc"]
    assert ex.messages[1].parts == ()  # text-only messages keep the text-only shape


@pytest.mark.parametrize("fmt, mime", [("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_jpeg_and_webp_are_accepted(fmt: str, mime: str) -> None:
    assert parse_jsonl(example(image(data_url(png(fmt=fmt), mime)), TEXT_PART).encode())[0].images


@pytest.mark.parametrize(
    "content, message",
    [
        ([image(data_url(b"not an image at all"))], "does not decode"),
        ([image(data_url(png()[:40]))], "does not decode"),  # truncated
        ([image(data_url(png(fmt="GIF"), "image/gif"))], "'image/gif' are not accepted"),
        ([image(data_url(png(fmt="GIF"), "image/png"))], "GIF images are not accepted"),  # a lying type
        ([image("data:image/png;base64,@@@")], "base64 data does not decode"),
        ([image("http://169.254.169.254/latest/meta-data")], "not fetched from 169.254.169.254"),
        ([image("ftp://x/y.png")], "must be a data:image/...;base64 URL or the id of an uploaded file"),
        ([{"type": "image_url", "image_url": "data:..."}], "image_url.url must be a non-empty string"),
        ([{"type": "input_audio"}], "type must be 'text' or 'image_url'"),
        ([image(data_url(png()))] * 11, "11 images; an example may have at most 10"),
    ],
)
def test_bad_images_are_refused_naming_the_line_and_part(content: list, message: str) -> None:
    good = example(image(data_url(png())), TEXT_PART)
    with pytest.raises(DatasetError) as err:
        parse_jsonl(f"{good}\n{example(*content)}\n".encode())
    assert err.value.line == 2
    assert message in str(err.value), str(err.value)
    if len(content) == 1:
        assert "messages[0].content[0]" in str(err.value)


def test_an_image_in_an_assistant_or_system_turn_is_refused() -> None:
    for role in ("assistant", "system"):
        bad = {
            "messages": [
                {"role": role, "content": [image(data_url(png()))]},
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "y"},
            ]
        }
        with pytest.raises(DatasetError) as err:
            parse_jsonl(json.dumps(bad).encode())
        assert f"images are only allowed in user messages, not {role}" in str(err.value)


def test_an_oversized_image_is_refused_before_it_is_decoded() -> None:
    huge = "data:image/png;base64," + "A" * (14 * 1024 * 1024)
    with pytest.raises(DatasetError, match="larger than 10 MB"):
        parse_jsonl(example(image(huge)).encode())


def test_a_decompression_bomb_is_refused() -> None:
    small = png()
    for side, message in ((9_000, "9000x9000 pixels"), (20_000, "more than 50,000,000 pixels")):
        # The same PNG claiming to be side x side: refused from its header, before decoding.
        ihdr = b"IHDR" + struct.pack(">II", side, side) + small[24:29]
        bomb = small[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + small[33:]
        with pytest.raises(DatasetError, match=message):
            parse_jsonl(example(image(data_url(bomb))).encode())
