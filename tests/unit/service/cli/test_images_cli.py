"""`tuneserve files upload` and `finetune` with a vision dataset that names its pictures by path: the
pictures reach the service inline, byte for byte, and a missing one is named with its line before
anything is uploaded."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from PIL import Image

from service.cli.images import data_url


def picture(path: Path, colour: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)
    return path


def example(url: str, answer: str) -> str:
    user = [{"type": "text", "text": "Which colour?"}, {"type": "image_url", "image_url": {"url": url}}]
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return json.dumps({"messages": messages}) + "\n"


def file_ids(cli) -> set[str]:
    code, out, err = cli("files", "list")
    assert code == 0, err
    return {f["id"] for f in json.loads(out)}


def test_pictures_named_by_path_go_inline_and_other_urls_stay(cli, tmp_path: Path) -> None:
    red = picture(tmp_path / "pics" / "red.png", "red")
    blue = picture(tmp_path / "elsewhere" / "blue.png", "blue")
    given = example(data_url(blue), "blue")  # already inline: sent as written
    data = tmp_path / "train.jsonl"
    data.write_text(example("pics/red.png", "red") + given + example(str(blue), "blue"))
    code, out, err = cli("files", "upload", str(data))
    assert code == 0, err
    assert "2 local image(s) sent inline" in err
    stored = tmp_path / "stored.jsonl"
    code, _, err = cli("files", "download", json.loads(out)["id"], "-o", str(stored))
    assert code == 0, err
    lines = stored.read_text().splitlines(keepends=True)
    assert lines[1] == given
    for line, source in ((lines[0], red), (lines[2], blue)):
        url = json.loads(line)["messages"][0]["content"][1]["image_url"]["url"]
        head, encoded = url.split(",", 1)
        assert head == "data:image/png;base64" and base64.b64decode(encoded) == source.read_bytes()


def test_a_missing_picture_is_named_with_its_line_and_nothing_is_uploaded(cli, tmp_path: Path) -> None:
    picture(tmp_path / "red.png", "red")
    data = tmp_path / "train.jsonl"
    data.write_text(example("red.png", "red") + example("gone/nope.png", "blue"))
    before = file_ids(cli)
    code, _, err = cli(
        "finetune", "--model", "SmolLM2-135M-Instruct", "--training-file", str(data), "--detach"
    )
    assert code == 1 and "line 2" in err and "'gone/nope.png' is not a file" in err, err
    assert file_ids(cli) == before
