"""Pure pieces of fine-tuning: the state machine, batching, hyperparameter resolution."""

from pathlib import Path

import pytest

from service.fine_tuning import hyperparams
from service.fine_tuning.state import InvalidTransition, JobStatus, can_transition, check_transition
from service.protocol.fine_tuning import FineTuningJobCreate, Hyperparameters
from trainers.batching import epoch_batches, shard, steps_per_epoch
from trainers.checkpointing import checkpoint_steps

S = JobStatus


@pytest.mark.parametrize(
    "current, target, ok",
    [
        (S.VALIDATING_FILES, S.QUEUED, True),
        (S.QUEUED, S.RUNNING, True),
        (S.RUNNING, S.SUCCEEDED, True),
        (S.RUNNING, S.QUEUED, True),
        (S.QUEUED, S.CANCELLED, True),
        (S.RUNNING, S.FAILED, True),
        (S.QUEUED, S.SUCCEEDED, False),
        (S.VALIDATING_FILES, S.RUNNING, False),
        (S.SUCCEEDED, S.CANCELLED, False),
        (S.CANCELLED, S.RUNNING, False),
        (S.FAILED, S.QUEUED, False),
        (S.RUNNING, S.PAUSED, True),
        (S.QUEUED, S.PAUSED, True),
        (S.PAUSED, S.QUEUED, True),
        (S.PAUSED, S.CANCELLED, True),
        (S.PAUSED, S.FAILED, False),  # nothing runs while paused: a stopped run's failure is not the job's
        (S.PAUSED, S.RUNNING, False),
        (S.PAUSED, S.SUCCEEDED, False),
        (S.VALIDATING_FILES, S.PAUSED, False),
        (S.SUCCEEDED, S.PAUSED, False),
    ],
)
def test_transitions(current: JobStatus, target: JobStatus, ok: bool) -> None:
    assert can_transition(current, target) is ok


def test_terminal_states_and_error() -> None:
    assert {s for s in S if s.is_terminal} == {S.SUCCEEDED, S.FAILED, S.CANCELLED}
    with pytest.raises(InvalidTransition, match="a succeeded job cannot become cancelled"):
        check_transition(S.SUCCEEDED, S.CANCELLED)


def test_epoch_batches_cover_every_example_once_and_are_seeded() -> None:
    lengths = [5, 50, 7, 48, 6, 52, 9, 47, 8, 51, 10]
    batches = epoch_batches(lengths, 3, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert len(batches) == steps_per_epoch(len(lengths), 3) == 4
    assert batches == epoch_batches(lengths, 3, seed=1, epoch=0)
    assert batches != epoch_batches(lengths, 3, seed=1, epoch=1)


def test_length_grouping_reduces_padding() -> None:
    lengths = [10, 100] * 16
    batches = epoch_batches(lengths, 4, seed=0, epoch=0)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded == sum(lengths)  # short and long examples never share a batch


@pytest.mark.parametrize(
    "per_epoch, epochs, expected",
    [
        (2, 3, [2, 4, 6]),  # every epoch
        (100, 1, [100]),  # one epoch: its end
        (4, 30, [12, 24, 36, 48, 60, 72, 84, 96, 108, 120]),  # many short epochs: ten spread over the run
        (3, 4, [3, 6, 9, 12]),
    ],
)
def test_checkpoints_at_epoch_ends_at_most_ten(per_epoch: int, epochs: int, expected: list[int]) -> None:
    assert checkpoint_steps(per_epoch, epochs) == expected


def test_shard_gives_every_rank_data() -> None:
    assert shard([1, 2, 3, 4], 0, 2) == [1, 3] and shard([1, 2, 3, 4], 1, 2) == [2, 4]
    assert shard([7], 1, 2) == [7]


@pytest.mark.parametrize(
    "n_examples, epochs, batch",
    [
        (48, 15, 6),  # a small set: many passes, ~120 steps
        (200, 5, 8),
        (5000, 3, 8),  # a large one: at least 3 passes
        (5, 24, 1),
        (2, 30, 1),  # at most 30 passes
    ],
)
def test_auto_hyperparameters_give_small_sets_more_passes(n_examples: int, epochs: int, batch: int) -> None:
    hp = hyperparams.resolve(Hyperparameters(), n_examples)
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (epochs, batch, 1.0)


def test_given_hyperparameters_are_kept_and_everything_is_resolved() -> None:
    assert hyperparams.resolve(Hyperparameters(batch_size=64), n_examples=10).batch_size == 10
    assert hyperparams.resolve(Hyperparameters(n_epochs=2), n_examples=48).n_epochs == 2
    req = FineTuningJobCreate(model="m", training_file="f", hyperparameters={"learning_rate_multiplier": 2})
    hp, learning_rate, lora = hyperparams.resolve_training(req, 48)
    assert learning_rate == 2 * hyperparams.BASE_LEARNING_RATE and hp.n_epochs == 15
    assert (lora.r, lora.alpha, lora.target_modules) == (8, 16, ["all-linear"])


def test_lora_target_modules_may_be_one_name_as_peft_takes_it() -> None:
    lora = FineTuningJobCreate(model="m", training_file="f", lora={"target_modules": "all-linear"}).lora
    assert lora.target_modules == ["all-linear"]
    assert FineTuningJobCreate(
        model="m", training_file="f", lora={"target_modules": ["q_proj"]}
    ).lora.target_modules == ["q_proj"]


def test_method_hyperparameters_win_over_legacy_ones() -> None:
    req = FineTuningJobCreate(
        model="m",
        training_file="f",
        hyperparameters={"n_epochs": 2},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 5}}},
    )
    assert hyperparams.requested_hyperparameters(req).n_epochs == 5


def test_the_finish_is_estimated_from_the_pace_so_far() -> None:
    from service.fine_tuning.service import estimate_finish

    assert estimate_finish(started_at=1000, at=1060, step=20, total_steps=120) == 1060 + 300  # 3 s a step
    assert estimate_finish(started_at=1000, at=1000, step=0, total_steps=10) == 1000


def test_dpo_hyperparameters_resolve_with_beta_and_fewer_steps() -> None:
    from service.fine_tuning.hyperparams import resolve
    from service.protocol.fine_tuning import DpoHyperparameters, Hyperparameters

    hp = resolve(DpoHyperparameters(), 48, "dpo")
    assert (hp.batch_size, hp.n_epochs, hp.beta, hp.sft_weight) == (6, 3, 0.1, 1.0)
    assert resolve(DpoHyperparameters(beta=0.5, sft_weight=0), 48, "dpo").sft_weight == 0
    supervised = resolve(Hyperparameters(), 48)
    assert supervised.beta is None and supervised.n_epochs == 15


def test_a_method_takes_only_its_own_options() -> None:
    from pydantic import ValidationError

    from service.protocol.fine_tuning import Method

    assert (
        Method.model_validate({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}).hyperparameters.beta
        == 0.2
    )
    with pytest.raises(ValidationError, match="method.supervised is given but method.type is 'dpo'"):
        Method.model_validate({"type": "dpo", "supervised": {}})


def test_lora_targets_of_a_vision_model_are_its_language_models_layers() -> None:
    """The vision recipe puts LoRA on the language model only: a name only the vision tower has (SigLIP's
    `fc1`) is refused when the job is made, not found missing by the run."""
    from service.fine_tuning.dataset_check import unknown_target_modules
    from service.platform.settings import DEFAULT_BASE_MODEL, VISION_TEST_MODEL

    models = Path(__file__).resolve().parents[4] / "data" / "models"
    assert unknown_target_modules(models / VISION_TEST_MODEL, ["q_proj", "fc1", "all-linear"]) == ["fc1"]
    assert unknown_target_modules(models / DEFAULT_BASE_MODEL, ["q_proj", "down_proj", "nope"]) == ["nope"]
