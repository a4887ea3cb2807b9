"""Models: base models (built and listed), the tenant's fine-tuned models, adapter checks before serving."""
