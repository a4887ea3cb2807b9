import json

import pytest

from trainers.data_format import DatasetError, parse_jsonl


def line(obj: object) -> str:
    return json.dumps(obj)


CHAT = {
    "messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
}


def test_chat_and_prompt_completion_parse() -> None:
    data = "\n".join([line(CHAT), "", line({"prompt": "p", "completion": "c"})]).encode()
    examples = parse_jsonl(data)
    assert [e.line for e in examples] == [1, 3]
    assert examples[0].is_chat and [m.role for m in examples[0].messages] == ["system", "user", "assistant"]
    assert not examples[1].is_chat and examples[1].completion == "c"


def test_content_parts_are_joined() -> None:
    obj = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "x"},
        ]
    }
    assert parse_jsonl(line(obj).encode())[0].messages[0].content == "ab"


def test_an_open_binary_file_is_read_line_by_line(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(line(CHAT) + "\n" + line(CHAT) + "\n")
    with path.open("rb") as f:
        assert len(parse_jsonl(f)) == 2


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{oops", "line 2: invalid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ('{"text": "x"}', 'line 2: expected {"messages"'),
        ('{"messages": []}', 'line 2: "messages" must be a non-empty list'),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "line 2: messages[0].role must be one of"),
        ('{"messages": [{"role": "user", "content": 3}]}', "line 2: messages[0].content must be a string"),
        (
            '{"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]}',
            "weight is only allowed on assistant",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]}',
            "weight must be 0 or 1",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]}',
            "no assistant message with weight 1",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}',
            "content is empty",
        ),
        ('{"prompt": "x"}', '"completion" must be a non-empty string'),
        ('{"prompt": 1, "completion": "y"}', '"prompt" must be a string'),
        ('{"messages": [{"role": "assistant", "content": "y"}], "extra": 1}', "unknown key(s) ['extra']"),
    ],
)
def test_first_bad_line_is_named_with_the_reason(bad: str, message: str) -> None:
    with pytest.raises(DatasetError) as err:
        parse_jsonl(f"{line(CHAT)}\n{bad}\n{line(CHAT)}\n".encode())
    assert message in str(err.value)
    assert err.value.line == 2


def test_a_byte_order_mark_at_the_start_is_read_past_and_elsewhere_is_an_error(tmp_path) -> None:
    """Notepad and Windows PowerShell's `Out-File -Encoding utf8` start UTF-8 files with one."""
    bom = "\ufeff".encode()
    assert len(parse_jsonl(bom + (line(CHAT) + "\n" + line(CHAT)).encode())) == 2
    path = tmp_path / "d.jsonl"
    path.write_bytes(bom + line(CHAT).encode() + b"\n")
    with path.open("rb") as f:  # an upload is read as a stream
        assert len(parse_jsonl(f)) == 1
    with pytest.raises(DatasetError, match="line 2: invalid JSON"):
        parse_jsonl(line(CHAT).encode() + b"\n" + bom + line(CHAT).encode())


def test_invalid_utf8_names_the_line() -> None:
    with pytest.raises(DatasetError, match="line 2: not valid UTF-8"):
        parse_jsonl(line(CHAT).encode() + b"\n\xff\xfe\n")


@pytest.mark.parametrize("data", [b"", b"\n  \n"])
def test_empty_file(data: bytes) -> None:
    with pytest.raises(DatasetError, match="no examples"):
        parse_jsonl(data)
