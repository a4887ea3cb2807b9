"""Tool calling a supervised fine-tune must learn: two functions, `get_weather(city)` and
`convert(amount, from, to)`; requests are answered with a call naming the right function with the right
arguments, and a tool's result with a sentence that uses it. Built here, deterministically; nothing is
downloaded. Held-out requests name cities and amounts no example has.
"""

from __future__ import annotations

import json
import random

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert",
            "description": "Convert money between currencies (USD, EUR, GBP, JPY).",
            "parameters": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number"},
                    "from": {"type": "string"},
                    "to": {"type": "string"},
                },
                "required": ["amount", "from", "to"],
            },
        },
    },
]
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Rome", "Berlin", "Madrid", "Dublin", "Vienna"]
HELD_OUT_CITIES = ["Nairobi", "Havana", "Warsaw", "Athens"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY"]
AMOUNTS = [5, 10, 20, 25, 50, 75, 100, 200, 250, 500]
HELD_OUT_AMOUNTS = [30, 40, 60, 150]
WEATHER_ASKS = ["What is the weather in {city}?", "How is the weather in {city} today?"]
CONVERT_ASKS = ["Convert {amount} {src} to {dst}.", "How much is {amount} {src} in {dst}?"]
SKIES = ["sunny", "cloudy", "rainy", "windy"]


def call(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def weather_request(city: str, rng: random.Random) -> tuple[str, str, dict]:
    return rng.choice(WEATHER_ASKS).format(city=city), "get_weather", {"city": city}


def convert_request(rng: random.Random, amounts: list[int] = AMOUNTS) -> tuple[str, str, dict]:
    src, dst = rng.sample(CURRENCIES, 2)
    amount = rng.choice(amounts)
    ask = rng.choice(CONVERT_ASKS).format(amount=amount, src=src, dst=dst)
    return ask, "convert", {"amount": amount, "from": src, "to": dst}


def _example(ask: str, name: str, arguments: dict, rng: random.Random, with_result: bool) -> dict:
    messages = [
        {"role": "user", "content": ask},
        {"role": "assistant", "content": None, "tool_calls": [call("call_1", name, arguments)]},
    ]
    if with_result:
        if name == "get_weather":
            degrees, sky = rng.randint(-5, 35), rng.choice(SKIES)
            result = json.dumps({"temperature_c": degrees, "sky": sky})
            answer = f"It is {degrees} degrees and {sky} in {arguments['city']}."
        else:
            value = round(arguments["amount"] * rng.uniform(0.5, 1.5), 2)
            result = json.dumps({"amount": value, "currency": arguments["to"]})
            answer = f"{arguments['amount']} {arguments['from']} is {value} {arguments['to']}."
        messages += [{"role": "tool", "tool_call_id": "call_1", "content": result}]
        messages += [{"role": "assistant", "content": answer}]
    return {"messages": messages, "tools": TOOLS}


def training_examples(n: int = 24, seed: int = 0) -> list[dict]:
    """Half weather, half conversion; every third one goes on with the tool's result and an answer."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            ask, name, arguments = weather_request(CITIES[(i // 2) % len(CITIES)], rng)
        else:
            ask, name, arguments = convert_request(rng)
        out.append(_example(ask, name, arguments, rng, with_result=i % 3 == 0))
    return out


def held_out(seed: int = 1) -> list[tuple[str, str, dict]]:
    """(request, expected function, expected arguments) the training data never has."""
    rng = random.Random(seed)
    requests = [weather_request(city, rng) for city in HELD_OUT_CITIES]
    return requests + [convert_request(rng, [amount]) for amount in HELD_OUT_AMOUNTS]


def is_right_call(name: str, arguments: str, expected_name: str, expected: dict) -> bool:
    try:
        return name == expected_name and json.loads(arguments) == expected
    except (TypeError, ValueError):
        return False


def jsonl(examples: list[dict]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in examples).encode()
