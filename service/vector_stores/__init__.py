"""Vector stores: OpenAI's API over `rag`."""
