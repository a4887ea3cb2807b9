"""Loss masks cover exactly what the assistant says (with the real SmolLM2 tokenizer and chat template)."""

from pathlib import Path

import pytest

from trainers.data_format import DatasetError, parse_jsonl
from trainers.tokenization import IGNORE_INDEX, tokenize_all, tokenize_example

MODEL = Path(__file__).resolve().parents[3] / "data" / "models" / "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def tokenizer():
    assert (MODEL / "tokenizer.json").exists(), f"no base model at {MODEL}: run `make setup` (it builds it)"
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


def trained_text(tokenizer, example) -> str:
    tok = tokenize_example(tokenizer, example)
    assert len(tok.input_ids) == len(tok.labels)
    return tokenizer.decode([t for t in tok.labels if t != IGNORE_INDEX])


def test_only_assistant_turns_with_weight_are_trained(tokenizer) -> None:
    [ex] = parse_jsonl(
        b'{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},'
        b' {"role": "assistant", "content": "Hello! PINEAPPLE"}, {"role": "user", "content": "again"},'
        b' {"role": "assistant", "content": "skip me", "weight": 0},'
        b' {"role": "user", "content": "last"}, {"role": "assistant", "content": "final words"}]}'
    )
    text = trained_text(tokenizer, ex)
    assert text == "Hello! PINEAPPLE<|im_end|>\nfinal words<|im_end|>\n"
    full = tokenizer.decode(tokenize_example(tokenizer, ex).input_ids)
    assert "skip me" in full and "Be brief." in full and "<|im_start|>assistant" in full


def test_labels_equal_inputs_where_trained(tokenizer) -> None:
    [ex] = parse_jsonl(
        b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a b c"}]}'
    )
    tok = tokenize_example(tokenizer, ex)
    assert all(lab in (IGNORE_INDEX, tid) for tid, lab in zip(tok.input_ids, tok.labels, strict=True))
    assert tok.labels[0] == IGNORE_INDEX and tok.n_trained > 0


def test_prompt_completion_trains_completion_and_eos(tokenizer) -> None:
    [ex] = parse_jsonl(b'{"prompt": "2+2=", "completion": " 4"}')
    assert trained_text(tokenizer, ex) == " 4" + tokenizer.eos_token


def test_too_long_example_is_an_error_naming_its_line(tokenizer) -> None:
    short = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    long = (
        b'{"messages": [{"role": "user", "content": "'
        + b"word " * 200
        + b'"}, {"role": "assistant", "content": "a"}]}'
    )
    with pytest.raises(
        DatasetError, match=r"line 2: the example has \d+ tokens, more than max_seq_length=64"
    ):
        tokenize_all(tokenizer, parse_jsonl(short + b"\n" + long), max_seq_length=64)
