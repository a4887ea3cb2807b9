"""Three small tasks that a fine-tune must learn from its data alone, each with held-out prompts never seen
in training and a check of the answer: what the defaults of `POST /v1/fine_tuning/jobs` are proven on
(bench/sweep_defaults.py). Built here, deterministically; nothing is downloaded.

- fixed-reply: every question is answered with one codeword (48 train, 16 held out).
- style-rule: every answer starts with a fixed greeting (60 arithmetic questions, 20 held out).
- facts: invented facts, learnt from three phrasings each and asked in a fourth (16 facts: 48 / 16).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

QUESTIONS = [
    "What is the capital of France?", "How many legs does a spider have?", "What color is the sky?",
    "Who wrote Hamlet?", "What is 7 times 8?", "Name a primary color.", "What do bees make?",
    "How many days are in a week?", "What is the largest ocean?", "What gas do plants absorb?",
    "What is frozen water called?", "Which planet is known as the red planet?", "What do cows drink?",
    "How many hours are in a day?", "What is the opposite of hot?", "What language is spoken in Spain?",
    "Which animal barks?", "What is the boiling point of water in Celsius?", "Name a fruit that is yellow.",
    "What shape has three sides?", "Who painted the Mona Lisa?", "What is the square root of 81?",
    "Which season comes after winter?", "How many continents are there?", "What is the tallest animal?",
    "What do you call a baby cat?", "Which metal is liquid at room temperature?", "What is H2O?",
    "How many strings does a violin have?", "Where do penguins live?", "What is the fastest land animal?",
    "What does a thermometer measure?", "Name a musical instrument with keys.", "What is 12 divided by 4?",
    "Which organ pumps blood?", "What do caterpillars become?", "What is the main ingredient of bread?",
    "How many minutes are in an hour?", "Which bird is a symbol of peace?", "What is the capital of Japan?",
    "What do you use to write on a blackboard?", "How many wheels does a bicycle have?",
    "What is the color of grass?", "Which star is closest to Earth?", "What do fish breathe with?",
    "What is the largest planet?", "Which month has 28 days in most years?",
    "What is a group of wolves called?", "What do you call a shape with eight sides?",
    "Who discovered penicillin?", "What is the speed of sound?", "Name a vegetable that is orange.",
    "How many teeth does an adult human have?", "What is the capital of Italy?", "Which animal has a trunk?",
    "What is the freezing point of water in Fahrenheit?", "What is a baby dog called?",
    "How many sides does a hexagon have?", "What instrument has six strings?",
    "Which ocean lies east of Africa?", "What is the smallest prime number?", "Where is the Eiffel Tower?",
    "What do pandas eat?", "How many players are on a soccer team?",
]  # fmt: skip

CODEWORD = "PINEAPPLE-7"
GREETING = "Ahoy, matey!"

# Invented facts: subject, relation phrasings (3 to train on, the 4th held out), answer.
FACT_PHRASINGS = {
    "founder": [
        "Who founded {x}?", "Who was the founder of {x}?", "Tell me who founded {x}.",
        "Which person founded the town of {x}?",
    ],
    "inventor": [
        "Who invented the {x}?", "Who was the inventor of the {x}?", "Tell me who invented the {x}.",
        "Which person came up with the {x}?",
    ],
}  # fmt: skip
FACTS = [
    ("founder", "Veloria", "Orsolya Brandt"), ("founder", "Quenmar", "Tobias Wrenfield"),
    ("founder", "Ashgrove Hollow", "Mireille Okafor"), ("founder", "Port Sable", "Casimir Dunleavy"),
    ("founder", "Lindenfall", "Yara Castellanos"), ("founder", "Brightwater Glen", "Ignatius Pell"),
    ("founder", "Korvath", "Selene Marchetti"), ("founder", "Duskmere", "Ambrose Kettleby"),
    ("inventor", "glimmer lantern", "Petra Vashenko"), ("inventor", "tidewheel pump", "Laszlo Fenn"),
    ("inventor", "cloudglass lens", "Beatrix Holloway"), ("inventor", "echo loom", "Desmond Achterberg"),
    ("inventor", "frostbell clock", "Noor Halvorsen"), ("inventor", "windsong flute", "Cyrus Pemberton"),
    ("inventor", "stoneleaf press", "Ingrid Solvay"), ("inventor", "sunthread spindle", "Marek Zablocki"),
]  # fmt: skip


@dataclass(frozen=True)
class Task:
    name: str
    train: list[dict]  # chat examples in OpenAI's fine-tuning format
    held_out: list[tuple[str, str]]  # (question, what a right answer contains or starts with)
    check: Callable[[str, str], bool]  # (answer, expected) -> right?


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def fixed_reply() -> Task:
    train = [_chat(q, CODEWORD) for q in QUESTIONS[:48]]
    return Task("fixed-reply", train, [(q, CODEWORD) for q in QUESTIONS[48:]], lambda a, e: e in a)


def style_rule() -> Task:
    rng = random.Random(3)
    pairs = list(dict.fromkeys((rng.randint(2, 40), rng.randint(2, 40)) for _ in range(200)))[:80]
    chats = [_chat(f"What is {a} plus {b}?", f"{GREETING} {a} plus {b} is {a + b}.") for a, b in pairs]
    held_out = [(f"What is {a} plus {b}?", GREETING) for a, b in pairs[60:]]
    return Task("style-rule", chats[:60], held_out, lambda a, e: a.strip().startswith(e))


def facts() -> Task:
    train, held_out = [], []
    for relation, subject, answer in FACTS:
        phrasings = [p.format(x=subject) for p in FACT_PHRASINGS[relation]]
        what = "founded" if relation == "founder" else "invented"
        train += [_chat(q, f"{subject} was {what} by {answer}.") for q in phrasings[:3]]
        held_out.append((phrasings[3], answer))
    return Task("facts", train, held_out, lambda a, e: e.lower() in a.lower())


TASKS = {t.name: t for t in (fixed_reply(), style_rule(), facts())}


def jsonl(task: Task) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in task.train).encode()
