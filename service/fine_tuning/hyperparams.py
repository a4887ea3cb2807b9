"""Resolution of "auto" hyperparameters. Pure."""

from __future__ import annotations

from service.protocol.fine_tuning import FineTuningJobCreate, Hyperparameters, ResolvedHyperparameters

# LoRA learns well at a higher rate than full fine-tuning; learning_rate_multiplier scales this.
BASE_LEARNING_RATE = 2e-4
DEFAULT_EPOCHS = 3
MAX_AUTO_BATCH = 8


def requested_hyperparameters(req: FineTuningJobCreate) -> Hyperparameters:
    """`method.supervised.hyperparameters` wins over the older top-level `hyperparameters`."""
    if req.method and req.method.supervised and req.method.supervised.hyperparameters:
        return req.method.supervised.hyperparameters
    return req.hyperparameters or Hyperparameters()


def resolve(hp: Hyperparameters, n_examples: int) -> ResolvedHyperparameters:
    """Concrete values for "auto": 3 epochs; a batch of about a tenth of the data (1 to 8); multiplier 1."""
    batch = hp.batch_size if hp.batch_size != "auto" else max(1, min(MAX_AUTO_BATCH, n_examples // 10))
    return ResolvedHyperparameters(
        n_epochs=hp.n_epochs if hp.n_epochs != "auto" else DEFAULT_EPOCHS,
        batch_size=min(batch, n_examples),
        learning_rate_multiplier=hp.learning_rate_multiplier
        if hp.learning_rate_multiplier != "auto"
        else 1.0,
    )
