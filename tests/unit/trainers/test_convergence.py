"""When a run stops early (trainers.convergence): a run of "auto" epochs once converged, any run once
diverged."""

import pytest

from trainers.convergence import (
    CONVERGED_EPOCHS,
    CONVERGED_LOSS,
    TrainingDiverged,
    chance_loss,
    check_not_diverged,
    converged,
    diverging_warning,
)


def curve(*losses: float) -> list[tuple[int, float]]:
    return list(enumerate(losses, start=1))


def test_two_epochs_with_every_step_below_the_threshold_have_converged() -> None:
    assert CONVERGED_EPOCHS == 2 and CONVERGED_LOSS == 0.01
    assert converged(curve(5.0, 0.4, 0.009, 0.002, 0.001, 0.0005), steps_per_epoch=2)
    assert converged(curve(0.001, 0.001), steps_per_epoch=1)


def test_one_step_at_or_above_it_or_too_few_epochs_have_not() -> None:
    assert not converged(curve(5.0, 0.4, 0.009, 0.01, 0.001, 0.0005), steps_per_epoch=2)  # 0.01 is not below
    assert not converged(curve(5.0, 0.4, 0.009, 0.002, 0.001, 0.0005), steps_per_epoch=3)  # an epoch of 0.4
    assert not converged(curve(0.001, 0.001), steps_per_epoch=2)  # one epoch so far
    assert not converged([], steps_per_epoch=1)


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_loss_that_is_no_number_ends_the_run_saying_what_to_change(loss: float) -> None:
    with pytest.raises(TrainingDiverged, match=r"loss was (nan|inf) at step 7: the training diverged") as err:
        check_not_diverged(7, loss, learning_rate_multiplier=100)
    assert "Lower learning_rate_multiplier (it was 100)" in str(err.value)
    check_not_diverged(7, 1e30, learning_rate_multiplier=100)  # large, but a number


def test_a_loss_above_random_guessing_is_warned_about_and_one_below_is_not() -> None:
    assert chance_loss(49152) == pytest.approx(10.80, abs=0.01)  # SmolLM2's vocabulary
    warning = diverging_warning(3, 26.13, 49152, learning_rate_multiplier=100)
    assert warning is not None and warning.startswith("The training loss was 26.13 at step 3, above 10.8,")
    assert "lower learning_rate_multiplier (it was 100)" in warning
    for sound in (5.36, 10.79, float("nan")):  # a pretrained model's start; just below; NaN fails the run
        assert diverging_warning(1, sound, 49152, learning_rate_multiplier=1) is None
