"""Retrieval in chat: the question to retrieve for, and the messages with the sources put in. Pure."""

from __future__ import annotations

INSTRUCTION = (
    "Answer the user's question using the sources below when they are relevant, and cite the sources "
    "you use as [1], [2], ...\n\nSources:\n"
)


def last_user_text(messages: list[dict]) -> str:
    """The text of the last user message ('' if there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def augment(messages: list[dict], sources: list[tuple[str, str]]) -> list[dict]:
    """`messages` with numbered sources ((filename, text) pairs) in the system message: added to the first
    system message if there is one (many chat templates allow only one), else a new one in front."""
    if not sources:
        return messages
    listed = "\n\n".join(f"[{i}] ({name}) {text}" for i, (name, text) in enumerate(sources, 1))
    block = INSTRUCTION + listed
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{block}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]
