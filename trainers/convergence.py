"""When a run stops before its last step: its training loss has converged (a run whose number of epochs
was left "auto"), or it has diverged (any run); and when a run that goes on is warned that it may be
diverging. Pure.

"auto" epochs aim at about 120 optimizer steps (`service.fine_tuning.hyperparams`), which a hard small
task needs; an easy one is learnt in a fraction of them (a fixed reply or a picture's colour: every
step's loss below 0.01 after three or four of fifteen epochs), and the rest of the run changes nothing but
the bill. A run stops once every step of its last CONVERGED_EPOCHS epochs had a loss below CONVERGED_LOSS.
Epochs a user sets are trained to the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CONVERGED_LOSS = 0.01  # mean token loss of a step: the answers are given with ~99 % probability per token
CONVERGED_EPOCHS = 2


def converged(loss_curve: Sequence[tuple[int, float]], steps_per_epoch: int) -> bool:
    """Whether the steps of the last CONVERGED_EPOCHS epochs (the curve's tail, at an epoch's end) all had
    a training loss below CONVERGED_LOSS."""
    window = steps_per_epoch * CONVERGED_EPOCHS
    return len(loss_curve) >= window and all(loss < CONVERGED_LOSS for _, loss in loss_curve[-window:])


class TrainingDiverged(RuntimeError):
    """The training loss is no longer a number: the weights have gone NaN or infinite, and every later
    step and the adapter would be too. Such an adapter is refused by the service (models.adapters)."""


def check_not_diverged(step: int, loss: float, learning_rate_multiplier: float) -> None:
    """Raise TrainingDiverged, saying what to change, unless `loss` (step `step`'s) is a finite number."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the training loss was {loss} at step {step}: the training diverged. Lower "
            f"learning_rate_multiplier (it was {learning_rate_multiplier:g}) and start a new job"
        )


def chance_loss(vocab_size: int) -> float:
    """The mean token loss of a model that guesses uniformly among its vocabulary: ln(vocab_size). A
    pretrained model starts far below it (SmolLM2 on chat data: 1-5 against 10.8)."""
    return math.log(vocab_size)


def diverging_warning(step: int, loss: float, vocab_size: int, learning_rate_multiplier: float) -> str | None:
    """What to tell a user whose run's loss at `step` is above chance: the weights are being wrecked
    (typically a learning rate too high), though the run may still come back down and finish."""
    chance = chance_loss(vocab_size)
    if not loss > chance:
        return None
    return (
        f"The training loss was {loss:.4g} at step {step}, above {chance:.3g}, the loss of guessing at "
        f"random among the model's {vocab_size} tokens: the training may be diverging. If the result is "
        f"poor, lower learning_rate_multiplier (it was {learning_rate_multiplier:g}) and start a new job"
    )
