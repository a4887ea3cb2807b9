"""A visual task a model can only solve by looking: the dominant colour of a generated picture (four
colours, so chance is 25 %). Pictures are made here with Pillow, deterministically: a background in the
answer's colour with a little noise, and a few small rectangles of the other colours. Used by the vision
fine-tuning tests and benches; nothing is downloaded."""

from __future__ import annotations

import base64
import io
import random

COLOURS = {"red": (215, 35, 35), "green": (35, 170, 60), "blue": (40, 70, 215), "yellow": (235, 205, 40)}
QUESTION = "What is the main colour of this picture? Answer with one word."
SIZE = 64


def picture(colour: str, rng: random.Random) -> bytes:
    """A PNG whose dominant colour is `colour`."""
    from PIL import Image, ImageDraw

    r, g, b = COLOURS[colour]
    jitter = [rng.randint(-25, 25) for _ in range(3)]
    base = tuple(max(0, min(255, c + j)) for c, j in zip((r, g, b), jitter, strict=True))
    image = Image.new("RGB", (SIZE, SIZE), base)
    draw = ImageDraw.Draw(image)
    others = [c for c in COLOURS if c != colour]
    for _ in range(rng.randint(1, 3)):
        x, y = rng.randint(0, SIZE - 12), rng.randint(0, SIZE - 12)
        w, h = rng.randint(4, 12), rng.randint(4, 12)
        draw.rectangle([x, y, x + w, y + h], fill=COLOURS[rng.choice(others)])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def decode(url: str) -> bytes:
    """The bytes of a data URL made by `data_url`."""
    return base64.b64decode(url.split(",", 1)[1])


def user_message(image_url: str) -> dict:
    image = {"type": "image_url", "image_url": {"url": image_url}}
    return {"role": "user", "content": [image, {"type": "text", "text": QUESTION}]}


def pictures(n: int, seed: int) -> list[tuple[bytes, str]]:
    """`n` pictures with their colour, the colours in turn."""
    rng = random.Random(seed)
    names = list(COLOURS)
    return [(picture(names[i % len(names)], rng), names[i % len(names)]) for i in range(n)]


def training_examples(n: int = 48, seed: int = 0) -> list[dict]:
    """Chat examples in OpenAI's vision fine-tuning format, images as data URLs."""
    return [
        {"messages": [user_message(data_url(png)), {"role": "assistant", "content": colour}]}
        for png, colour in pictures(n, seed)
    ]


def held_out(n: int = 16, seed: int = 1) -> list[tuple[bytes, str]]:
    """Pictures never seen in training (another seed), with the right answer."""
    return pictures(n, seed)


def is_right(answer: str, colour: str) -> bool:
    return answer.strip().lower().startswith(colour)
