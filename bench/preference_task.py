"""A preference a DPO job must learn from pairs alone: answers that end with a fixed sign-off line are
preferred to the same answers without it. The base model never signs off, so the held-out rate of the
behaviour says what the job taught. Built here, deterministically; nothing is downloaded.

The pairs are made from the model's own answers (what OpenAI's DPO guide recommends, and what works: on
answers written by someone else, a 135M model learnt to stop ending its answers rather than to sign them,
bench/RESULTS.md). `questions()` are asked of the parent model first, then `pairs()` builds the lines from
its finished answers. Held out are questions no pair asks.
"""

from __future__ import annotations

import json

from bench.teach_tasks import QUESTIONS

SIGN_OFF = "-- Ada"
SYSTEM = "Answer in one short sentence."

CAPITALS = [
    "France", "Japan", "Italy", "Spain", "Germany", "Egypt", "Canada", "Kenya", "Peru", "Norway", "Greece",
    "Chile", "Poland", "Cuba", "Ireland", "Austria", "Brazil", "India", "Mexico", "Sweden",
]  # fmt: skip
N_HELD_OUT = 12


def signed(answer: str) -> str:
    return f"{answer}\n\n{SIGN_OFF}"


def is_signed(answer: str) -> bool:
    return SIGN_OFF in answer


def messages(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def questions() -> list[str]:
    """What the pairs ask (the parent model answers them first)."""
    return QUESTIONS[:-N_HELD_OUT] + [f"What is the capital of {c}?" for c in CAPITALS]


def held_out() -> list[str]:
    return QUESTIONS[-N_HELD_OUT:]


def pairs(answered: list[tuple[str, str]]) -> list[dict]:
    """Preference lines from (question, the model's own finished answer)."""
    return [
        {
            "input": {"messages": messages(question)},
            "preferred_output": [{"role": "assistant", "content": signed(answer.strip())}],
            "non_preferred_output": [{"role": "assistant", "content": answer.strip()}],
        }
        for question, answer in answered
        if answer.strip()
    ]


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()
