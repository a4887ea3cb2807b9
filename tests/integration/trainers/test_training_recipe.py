"""The LoRA + DeepSpeed recipe run directly (one process, no Ray): seeded runs are reproducible."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from bench import vision_task
from service.protocol.fine_tuning import ResolvedHyperparameters
from tests.integration.helpers import DATA, RunningStack, greedy_on_pictures, spec_for, store_of, vllm_greedy
from tests.tiny_vlms import build_idefics3
from trainers.lora_sft import LoRASFTRecipe
from trainers.reporter import NullReporter


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
        assert not [e for e in reporter.events if e[0] == "warn"]  # a sound run is not warned
    assert len(runs[0]) == 2
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_a_run_whose_loss_goes_above_chance_is_warned_once_and_goes_on(dataset: tuple) -> None:
    """learning_rate_multiplier 100 (0.1): the loss falls at step 2, then leaves the model worse than random
    guessing (above ln 49152 = 10.8). It ended `succeeded` with nothing said; now the job's events warn."""

    store, key, sha = dataset
    hp = ResolvedHyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=100)
    spec = spec_for(key, sha, 7, epochs=2).model_copy(update={"hyperparameters": hp, "learning_rate": 0.1})
    reporter = NullReporter()
    result = LoRASFTRecipe(spec, store, reporter, upload=False).run()
    losses = dict(result.loss_curve)
    warnings = [text for kind, text in reporter.events if kind == "warn"]
    first = min(step for step, loss in losses.items() if loss > 10.8)
    assert len(warnings) == 1 and result.steps == 4, (losses, warnings)
    assert warnings[0].startswith(f"The training loss was {losses[first]:.4g} at step {first}, above 10.8")
    assert "lower learning_rate_multiplier (it was 100)" in warnings[0]


def test_a_dataset_changed_after_validation_is_refused_by_the_worker(dataset: tuple) -> None:
    store, key, sha = dataset
    from service.platform.storage import ChecksumMismatch

    # A copy of the validated dataset, changed afterwards (the module's dataset stays as it was).
    tampered = "tests/recipe-tampered.jsonl"
    store.put_bytes(tampered, store.get_bytes(key))
    store.put_bytes(tampered, b'{"prompt": "tampered", "completion": "x"}\n')  # not what the job validated
    with pytest.raises(ChecksumMismatch):
        LoRASFTRecipe(spec_for(tampered, sha, 1), store, NullReporter(), upload=False).run()


class Interrupted(Exception):
    pass


class InterruptAt(NullReporter):
    """Stops the run right after training step `step` (as a killed worker would, minus the process)."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def metrics(self, data: dict) -> None:
        super().metrics(data)
        if data["step"] == self.step:
            raise Interrupted


def test_an_interrupted_run_resumes_from_its_last_checkpoint_on_the_same_loss_curve(dataset: tuple) -> None:
    """8 examples, batch 4, 3 epochs: checkpoints at steps 2, 4 and 6. A run stopped after step 5 resumes
    from step 4 (optimizer and LR schedule restored) and trains steps 5 and 6 exactly as a run that was
    never stopped; only the newest training state is kept."""
    store, key, sha = dataset
    whole = NullReporter()
    LoRASFTRecipe(spec_for(key, sha, 7, epochs=3, name="whole"), store, whole).run()
    spec = spec_for(key, sha, 7, epochs=3, name="resumed")
    with pytest.raises(Interrupted):
        LoRASFTRecipe(spec, store, InterruptAt(5)).run()
    resumed = NullReporter()
    result = LoRASFTRecipe(spec, store, resumed).run()

    assert ("message", "Resumed from the checkpoint of step 4") in resumed.events
    expected = {d["step"]: d["train_loss"] for kind, d in whole.events if kind == "metrics"}
    got = {d["step"]: d["train_loss"] for kind, d in resumed.events if kind == "metrics"}
    assert sorted(got) == [5, 6]
    assert got == pytest.approx({5: expected[5], 6: expected[6]}, abs=1e-5)
    assert [s for s, _ in result.loss_curve] == [1, 2, 3, 4, 5, 6]  # the curve before the stop carried over
    assert [d["step"] for kind, d in resumed.events if kind == "checkpoint"] == [6]
    states = {o.key.split("/state/")[1].split("/")[0] for o in store.list(spec.checkpoint_prefix + "state/")}
    assert states == {"step-6"}
    adapters = {o.key.split("/")[1] for o in store.list("adapters/resumed:")}
    assert adapters == {"resumed:ckpt-step-2", "resumed:ckpt-step-4", "resumed:ckpt-step-6"}


class InterruptOnStop(NullReporter):
    """Stops the run when it says it has stopped early: after its last checkpoint, before its publish."""

    def message(self, message: str, level: str = "info") -> None:
        super().message(message, level)
        if message.startswith("Stopped after epoch"):
            raise Interrupted


def test_a_run_of_auto_epochs_stops_once_converged_and_a_resumed_one_trains_no_more(dataset: tuple) -> None:
    """8 examples, batch 4: 2 steps an epoch, at most 15 epochs. The run stops at the end of the first epoch
    that makes two in a row with every step below 0.01 (checkpointed there); interrupted before it could
    publish, the run resumed from that checkpoint trains nothing and publishes that step's adapter."""
    store, key, sha = dataset
    spec = spec_for(key, sha, 7, epochs=15, name="converged").model_copy(update={"stop_when_converged": True})
    stopping = InterruptOnStop()
    with pytest.raises(Interrupted):
        LoRASFTRecipe(spec, store, stopping).run()
    losses = [(d["step"], d["train_loss"]) for kind, d in stopping.events if kind == "metrics"]
    last = losses[-1][0]
    assert last < 30 and last % 2 == 0, losses  # stopped at an epoch's end, before the 15th
    assert all(loss < 0.01 for _, loss in losses[-4:]) and any(loss >= 0.01 for _, loss in losses[-6:-2])
    assert [d["step"] for kind, d in stopping.events if kind == "checkpoint"][-1] == last

    resumed = NullReporter()
    result = LoRASFTRecipe(spec, store, resumed).run()
    assert ("message", f"Resumed from the checkpoint of step {last}") in resumed.events
    assert resumed.losses == [] and result.steps == last and result.stopped_after_epoch == last // 2
    manifest = json.loads(store.get_bytes(spec.adapter_prefix + "manifest.json"))
    assert manifest["metrics"]["stopped_after_epoch"] == last // 2 and len(manifest["loss_curve"]) == last


class WeightsGoNaNAfterStep(LoRASFTRecipe):
    """A run whose LoRA weights turn NaN after step `at`, as a diverged training's do."""

    at = 1

    def _train_step(self, step: int, epoch: int, batch: list[int]) -> None:
        super()._train_step(step, epoch, batch)
        if step == self.at:
            import torch

            with torch.no_grad():
                for param in self.engine.module.parameters():
                    if param.requires_grad:
                        param.fill_(float("nan"))


def test_a_diverged_run_fails_at_the_first_step_whose_loss_is_no_number(dataset: tuple) -> None:
    """It ended as `succeeded`, and its NaN adapter emptied every tenant's answers beside it in the engine."""
    from trainers.convergence import TrainingDiverged

    store, key, sha = dataset
    reporter = NullReporter()
    spec = spec_for(key, sha, 7, epochs=3, name="diverged")
    with pytest.raises(TrainingDiverged, match="loss was nan at step 2: the training diverged"):
        WeightsGoNaNAfterStep(spec, store, reporter).run()
    assert [d["step"] for kind, d in reporter.events if kind == "metrics"] == [1, 2]  # reported, then stopped
    assert store.list(spec.adapter_prefix) == []  # nothing published


def test_the_recipe_trains_idefics3_and_vllm_serves_its_adapter_as_transformers_answers(
    dataset: tuple, tmp_path: Path
) -> None:
    """A VLM family besides the test VLM's LLaVA (Idefics3, SmolVLM's architecture: its language model is
    `text_model`, each picture becomes crops; tests/tiny_vlms.py): the recipe as a job runs it trains it
    (DeepSpeed, the model's own processor, pictures of two sizes), and vLLM with the adapter answers new
    pictures exactly as transformers + peft do, greedy, which is not what the base answers."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    store = dataset[0]
    folder = build_idefics3(tmp_path / "idefics3")
    rows = [
        {"messages": [_asked(_png(rgb, size)), {"role": "assistant", "content": name}]}
        for name, rgb in vision_task.COLOURS.items()
        for size in ((64, 64), (96, 48))
    ]
    info = store.put_bytes("tests/idefics3.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    hp = ResolvedHyperparameters(n_epochs=8, batch_size=4, learning_rate_multiplier=1)
    spec = spec_for(info.key, info.sha256, 5, name="idefics3").model_copy(
        update={"base_model_path": str(folder), "vision": True, "hyperparameters": hp, "learning_rate": 1e-2}
    )
    result = LoRASFTRecipe(spec, store, NullReporter()).run()
    losses = [loss for _, loss in result.loss_curve]
    assert len(losses) == 16 and losses[-1] < losses[0] - 0.5, losses

    adapter = store.get_folder(spec.adapter_prefix, tmp_path / "adapter")
    pictures = [_png(rgb, (80, 80)) for rgb in vision_task.COLOURS.values()]
    processor = AutoProcessor.from_pretrained(folder)
    base = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter)
    adapted = greedy_on_pictures(model, processor, pictures, vision_task.QUESTION)
    with model.disable_adapter():
        assert greedy_on_pictures(model, processor, pictures, vision_task.QUESTION) != adapted
    chats = [[_asked(png)] for png in pictures]
    assert vllm_greedy(folder, chats, max_tokens=4, lora=adapter) == adapted


def _png(rgb: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, "PNG")
    return out.getvalue()


def _asked(png: bytes) -> dict:
    return vision_task.user_message(vision_task.data_url(png))
