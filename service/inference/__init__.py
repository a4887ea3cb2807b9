"""Inference: chat and completions for base and fine-tuned models, through an engine (vLLM in `deploy`)."""
