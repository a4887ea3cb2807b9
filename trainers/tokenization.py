"""Examples -> token ids and labels, with loss only on what the model should learn to say.

Chat examples are rendered with the tokenizer's own chat template. The assistant spans are found in
character space (the text up to an assistant turn, rendered with the generation prompt, is a prefix of
the text including it), then the whole conversation is tokenized once with offsets, and a token is
trained on when it starts inside an assistant span with weight 1. That keeps the template's own role
headers out of the loss, trains the end-of-turn token (so the model learns to stop), and never
depends on how a tokenizer merges characters across the boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainers.data_format import DatasetError, Example

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    line: int
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is computed

    @property
    def n_trained(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def tokenize_example(tokenizer, example: Example) -> TokenizedExample:  # HF tokenizer
    if example.is_chat:
        return _tokenize_chat(tokenizer, example)
    return _tokenize_prompt_completion(tokenizer, example)


def tokenize_all(tokenizer, examples: list[Example], max_seq_length: int) -> list[TokenizedExample]:
    """Tokenize every example; an example longer than max_seq_length is an error naming its line."""
    out = []
    for ex in examples:
        tok = tokenize_example(tokenizer, ex)
        if len(tok.input_ids) > max_seq_length:
            raise DatasetError(
                ex.line,
                f"the example has {len(tok.input_ids)} tokens, more than max_seq_length={max_seq_length}; "
                "shorten it or raise max_seq_length",
            )
        out.append(tok)
    return out


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _tokenize_chat(tokenizer, example: Example) -> TokenizedExample:
    messages = [{"role": m.role, "content": m.content} for m in example.messages]
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(example.messages):
        if m.role != "assistant" or m.weight == 0:
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not upto.startswith(before):
            raise DatasetError(example.line, "the chat template renders this conversation inconsistently")
        spans.append((len(before), len(upto)))
    text = _render(tokenizer, messages, generation_prompt=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [
        tok if any(start <= s < end for start, end in spans) else IGNORE_INDEX
        for tok, (s, _e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
    ]
    return TokenizedExample(example.line, list(enc["input_ids"]), labels)


def _tokenize_prompt_completion(tokenizer, example: Example) -> TokenizedExample:
    prompt = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
    completion = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids = prompt + completion + eos
    labels = [IGNORE_INDEX] * len(prompt) + completion + eos
    return TokenizedExample(example.line, ids, labels)
