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
# DPO (bench/RESULTS.md, "DPO defaults"): each step sees twice the sequences, and a preference is learnt
# in fewer steps (48 pairs: 3 epochs of 8 steps). beta as in the DPO paper and TRL. Plain DPO (sft_weight 0)
# on pairs that differ only in an added line taught SmolLM2 to stop ending answers instead of adding the
# line, at every rate tried; with the preferred answers' likelihood in the loss (RPO, weight 1) it learnt
# the line on every held-out question.
DPO_TARGET_STEPS = 20
DEFAULT_BETA = 0.1
DEFAULT_SFT_WEIGHT = 1.0
# "auto" batch: about an eighth of the data, 1 to 8 (more does not fit a CPU's memory bandwidth well).
MAX_AUTO_BATCH = 8


def requested_hyperparameters(req: FineTuningJobCreate) -> Hyperparameters:
    """The method's hyperparameters win over the older top-level `hyperparameters`."""
    if req.method and req.method.hyperparameters:
        return req.method.hyperparameters
    return req.hyperparameters or Hyperparameters()


def stops_when_converged(req: FineTuningJobCreate) -> bool:
    """Whether the run may end before its last epoch once its loss has converged (trainers.convergence):
    when the number of epochs was left to the service."""
    return requested_hyperparameters(req).n_epochs == "auto"


def method_of(req: FineTuningJobCreate) -> str:
    return req.method.type if req.method else "supervised"


def resolve(hp: Hyperparameters, n_examples: int, method: str = "supervised") -> ResolvedHyperparameters:
    """Concrete values for "auto": a batch of about an eighth of the data (1 to 8), enough epochs for about
    TARGET_STEPS steps (3 to 30; DPO: DPO_TARGET_STEPS), multiplier 1; DPO's beta DEFAULT_BETA."""
    auto_batch = max(1, min(MAX_AUTO_BATCH, n_examples // 8))
    batch = min(hp.batch_size if hp.batch_size != "auto" else auto_batch, n_examples)
    steps_per_epoch = math.ceil(n_examples / batch)
    target = DPO_TARGET_STEPS if method == "dpo" else TARGET_STEPS
    auto_epochs = max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(target / steps_per_epoch)))
    beta = getattr(hp, "beta", "auto")
    sft_weight = getattr(hp, "sft_weight", "auto")
    return ResolvedHyperparameters(
        n_epochs=hp.n_epochs if hp.n_epochs != "auto" else auto_epochs,
        batch_size=batch,
        learning_rate_multiplier=hp.learning_rate_multiplier
        if hp.learning_rate_multiplier != "auto"
        else 1.0,
        beta=(DEFAULT_BETA if beta == "auto" else beta) if method == "dpo" else None,
        sft_weight=(DEFAULT_SFT_WEIGHT if sft_weight == "auto" else sft_weight) if method == "dpo" else None,
    )


def resolve_training(
    req: FineTuningJobCreate, n_examples: int
) -> tuple[ResolvedHyperparameters, float, LoraOptions]:
    """What a job trains with: its hyperparameters, learning rate and LoRA options, nothing left "auto"."""
    method = method_of(req)
    hp = resolve(requested_hyperparameters(req), n_examples, method)
    lora = req.lora.model_copy(update={"alpha": req.lora.alpha or 2 * req.lora.r})
    return hp, BASE_LEARNING_RATE * hp.learning_rate_multiplier, lora
