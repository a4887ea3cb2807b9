"""The LoRA + DeepSpeed recipe run directly (one process, no Ray): seeded runs are reproducible."""

from __future__ import annotations

import pytest

from service.platform.settings import DEFAULT_BASE_MODEL
from service.protocol.fine_tuning import (
    DeepSpeedOptions,
    LoraOptions,
    ResolvedHyperparameters,
    ResourceOptions,
    TrainingSpec,
)
from tests.integration.helpers import DATA, MODELS_DIR, RunningStack, store_of
from trainers.lora_sft import LoRASFTRecipe
from trainers.reporter import NullReporter


def spec_for(key: str, sha256: str, seed: int, stage: int = 2) -> TrainingSpec:
    return TrainingSpec(
        job_id="ftjob-recipe",
        tenant="default",
        base_model=DEFAULT_BASE_MODEL,
        base_model_path=str(MODELS_DIR / DEFAULT_BASE_MODEL),
        fine_tuned_model=f"{DEFAULT_BASE_MODEL}:recipe",
        training_file="file-recipe",
        training_key=key,
        training_sha256=sha256,
        n_train_examples=8,
        n_train_tokens=0,
        hyperparameters=ResolvedHyperparameters(n_epochs=1, batch_size=4, learning_rate_multiplier=5),
        learning_rate=1e-3,
        seed=seed,
        lora=LoraOptions(alpha=16),
        deepspeed=DeepSpeedOptions(stage=stage),
        resources=ResourceOptions(cpus_per_worker=2),
        max_seq_length=256,
        adapter_prefix="adapters/recipe/",
        checkpoint_prefix="jobs/recipe/",
    )


@pytest.fixture(scope="module")
def dataset(stack: RunningStack) -> tuple:
    store = store_of(stack)
    lines = (DATA / "codeword_train.jsonl").read_bytes().splitlines()[:8]
    info = store.put_bytes("tests/recipe.jsonl", b"\n".join(lines))
    return store, info.key, info.sha256


def test_same_seed_same_loss_curve_other_seed_another(dataset: tuple) -> None:
    store, key, sha = dataset
    runs = []
    for seed in (11, 11, 12):
        reporter = NullReporter()
        LoRASFTRecipe(spec_for(key, sha, seed), store, reporter, upload=False).run()
        runs.append(reporter.losses)
    assert len(runs[0]) == 2
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_a_dataset_changed_after_validation_is_refused_by_the_worker(dataset: tuple) -> None:
    store, key, sha = dataset
    from service.platform.storage import ChecksumMismatch

    # A copy of the validated dataset, changed afterwards (the module's dataset stays as it was).
    tampered = "tests/recipe-tampered.jsonl"
    store.put_bytes(tampered, store.get_bytes(key))
    store.put_bytes(tampered, b'{"prompt": "tampered", "completion": "x"}\n')  # not what the job validated
    with pytest.raises(ChecksumMismatch):
        LoRASFTRecipe(spec_for(tampered, sha, 1), store, NullReporter(), upload=False).run()
