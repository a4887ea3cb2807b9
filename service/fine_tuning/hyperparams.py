"""Resolution of "auto" hyperparameters and the other defaults of a job. Pure.

The defaults are proven on three small tasks by bench/sweep_defaults.py (bench/RESULTS.md): with nothing
set, a few dozen examples are learnt. The reasoning is in the README's fine-tuning section.
"""

from __future__ import annotations

import math

from service.protocol.fine_tuning import (
    FineTuningJobCreate,
    Hyperparameters,
    LoraOptions,
    ResolvedHyperparameters,
)

# LoRA (rank 8, alpha 16, every linear layer) learns a small dataset at a rate well above full fine-tuning's;
# learning_rate_multiplier scales it.
BASE_LEARNING_RATE = 1e-3
# "auto" epochs give about this many optimizer steps: small sets get more passes, large ones at least 3.
TARGET_STEPS = 120
MIN_EPOCHS, MAX_EPOCHS = 3, 30
# "auto" batch: about an eighth of the data, 1 to 8 (more does not fit a CPU's memory bandwidth well).
MAX_AUTO_BATCH = 8


def requested_hyperparameters(req: FineTuningJobCreate) -> Hyperparameters:
    """`method.supervised.hyperparameters` wins over the older top-level `hyperparameters`."""
    if req.method and req.method.supervised and req.method.supervised.hyperparameters:
        return req.method.supervised.hyperparameters
    return req.hyperparameters or Hyperparameters()


def resolve(hp: Hyperparameters, n_examples: int) -> ResolvedHyperparameters:
    """Concrete values for "auto": a batch of about an eighth of the data (1 to 8), enough epochs for about
    TARGET_STEPS steps (3 to 30), multiplier 1."""
    auto_batch = max(1, min(MAX_AUTO_BATCH, n_examples // 8))
    batch = min(hp.batch_size if hp.batch_size != "auto" else auto_batch, n_examples)
    steps_per_epoch = math.ceil(n_examples / batch)
    auto_epochs = max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))
    return ResolvedHyperparameters(
        n_epochs=hp.n_epochs if hp.n_epochs != "auto" else auto_epochs,
        batch_size=batch,
        learning_rate_multiplier=hp.learning_rate_multiplier
        if hp.learning_rate_multiplier != "auto"
        else 1.0,
    )


def resolve_training(
    req: FineTuningJobCreate, n_examples: int
) -> tuple[ResolvedHyperparameters, float, LoraOptions]:
    """What a job trains with: its hyperparameters, learning rate and LoRA options, nothing left "auto"."""
    hp = resolve(requested_hyperparameters(req), n_examples)
    lora = req.lora.model_copy(update={"alpha": req.lora.alpha or 2 * req.lora.r})
    return hp, BASE_LEARNING_RATE * hp.learning_rate_multiplier, lora
