"""Examples -> token ids and labels, with loss only on what the model should learn to say.

Chat examples are rendered with the tokenizer's own chat template. The assistant spans are found in
character space (the text up to an assistant turn, rendered with the generation prompt, is a prefix of
the text including it), then the whole conversation is tokenized once with offsets, and a token is
trained on when it starts inside an assistant span with weight 1. That keeps the template's own role
headers out of the loss, trains the end-of-turn token (so the model learns to stop), and never
depends on how a tokenizer merges characters across the boundaries.

Tools, tool calls and tool results go through the template when it renders tools itself; otherwise they
are first written as text in the one format serving uses too (`service.protocol.tool_format`).

A preference (DPO) example becomes two sequences, the input followed by the preferred output and by the
non-preferred one, each trained on its output only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from service.protocol.tool_format import as_text_messages, renders_tools
from trainers.data_format import DatasetError, Example, Message

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    line: int
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is computed

    @property
    def n_trained(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass(frozen=True)
class PreferencePair:
    """A preference example: the input with the preferred output, and with the non-preferred one."""

    line: int
    chosen: TokenizedExample
    rejected: TokenizedExample

    @property
    def input_ids(self) -> list[int]:  # the longer sequence, for batching by length
        return max(self.chosen.input_ids, self.rejected.input_ids, key=len)

    @property
    def n_trained(self) -> int:
        return self.chosen.n_trained + self.rejected.n_trained


def tokenize_example(tokenizer, example: Example) -> TokenizedExample | PreferencePair:  # HF tokenizer
    if example.is_preference:
        return PreferencePair(
            example.line,
            _tokenize_chat(tokenizer, example, example.messages + example.preferred, len(example.messages)),
            _tokenize_chat(
                tokenizer, example, example.messages + example.non_preferred, len(example.messages)
            ),
        )
    if example.is_chat:
        return _tokenize_chat(tokenizer, example, example.messages)
    return _tokenize_prompt_completion(tokenizer, example)


def tokenize_all(
    tokenizer, examples: list[Example], max_seq_length: int
) -> list[TokenizedExample] | list[PreferencePair]:
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


def render_chat(tokenizer, messages: list[dict], tools: list[dict] | None, generation_prompt: bool) -> str:
    """The conversation as the model sees it, tools included (see the module's docstring)."""
    if tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        if renders_tools(tokenizer.chat_template):
            return tokenizer.apply_chat_template(
                [_arguments_as_objects(m) for m in messages],
                tools=tools or None,
                tokenize=False,
                add_generation_prompt=generation_prompt,
            )
        messages = as_text_messages(messages, tools)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _arguments_as_objects(message: dict) -> dict:
    """Templates that render tool calls expect their arguments as objects (vLLM hands them over so too)."""
    if not message.get("tool_calls"):
        return message
    calls = [
        {**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
        for c in message["tool_calls"]
    ]
    return {**message, "tool_calls": calls}


def _tokenize_chat(
    tokenizer, example: Example, conversation: tuple[Message, ...], train_from: int = 0
) -> TokenizedExample:
    """Loss on the assistant messages (weight 1) from index `train_from` on."""
    messages = [m.as_openai() for m in conversation]
    tools = list(example.tools)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(conversation):
        if i < train_from or m.role != "assistant" or m.weight == 0:
            continue
        before = render_chat(tokenizer, messages[:i], tools, generation_prompt=True)
        upto = render_chat(tokenizer, messages[: i + 1], tools, generation_prompt=False)
        if not upto.startswith(before):
            raise DatasetError(example.line, "the chat template renders this conversation inconsistently")
        spans.append((len(before), len(upto)))
    text = render_chat(tokenizer, messages, tools, generation_prompt=False)
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
