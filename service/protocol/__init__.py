"""OpenAI-shaped request and response schemas. Pure pydantic: imports no torch, vllm or ray."""
