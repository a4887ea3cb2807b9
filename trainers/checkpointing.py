"""Resumable training: when checkpoints are taken, and the training state that lets a run continue.

The adapter of the checkpoint at step N lies beside the job's model, as the model
`<fine-tuned model>:ckpt-step-N` (PEFT format, where the serving side loads `base:name` models from):

    adapters/<base>/<name>:ckpt-step-{N}/

and the job's checkpoint prefix holds the state that resumes the run:

    state/step-{N}/rank-{r}/           DeepSpeed's checkpoint of rank r: optimizer, LR scheduler and the
                                       trainable weights (frozen base weights are not written)
    state/step-{N}/progress.json       written last, by rank 0, once every rank has uploaded

A state counts only once its progress file exists, so a run interrupted while saving resumes from the
state before. Only the newest complete state is kept. The data order (`trainers.batching`) and the
dropout masks (seeded per step) are functions of the seed and the step, so a resumed run continues with
the same batches and the same randomness as an uninterrupted one.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from service.platform.storage import ObjectStore

PROGRESS_FILE = "progress.json"
RANK_MARKER = "rank.txt"
DEEPSPEED_TAG = "state"
MAX_CHECKPOINTS = 10


@dataclass
class Progress:
    """Where a run stands at a checkpoint; enough, with DeepSpeed's state, to continue it."""

    step: int
    world: int
    trained_tokens: int = 0
    loss_curve: list[list[float]] = field(default_factory=list)  # [step, training loss]
    valid_losses: list[list[float]] = field(default_factory=list)  # [step, validation loss]


def checkpoint_steps(steps_per_epoch: int, n_epochs: int, limit: int = MAX_CHECKPOINTS) -> list[int]:
    """The steps at which a run saves a checkpoint: at the end of an epoch, at most `limit` of them spread
    over the run (many short epochs would otherwise spend more time saving than training), always the last."""
    ends = [steps_per_epoch * (e + 1) for e in range(n_epochs)]
    gap = ends[-1] / limit
    chosen: list[int] = []
    for end in ends[:-1]:
        if end - (chosen[-1] if chosen else 0) >= gap:
            chosen.append(end)
    return chosen + [ends[-1]]


def adapter_key(adapter_prefix: str, step: int) -> str:
    """Where a checkpoint's adapter goes: beside the job's model (`adapters/b/m/` ->
    `adapters/b/m:ckpt-step-N/`), so that the model id `b:m:ckpt-step-N` is served from it like any
    `base:adapter` id."""
    return f"{adapter_prefix.rstrip('/')}:ckpt-step-{step}/"


def _state_key(checkpoint_prefix: str, step: int) -> str:
    return f"{checkpoint_prefix}state/step-{step}/"


def latest_progress(store: ObjectStore, checkpoint_prefix: str) -> Progress | None:
    """The newest complete training state of a job, if any."""
    steps = [
        int(o.key.removeprefix(f"{checkpoint_prefix}state/step-").split("/")[0])
        for o in store.list(f"{checkpoint_prefix}state/")
        if o.key.endswith("/" + PROGRESS_FILE)
    ]
    if not steps:
        return None
    data = json.loads(store.get_bytes(_state_key(checkpoint_prefix, max(steps)) + PROGRESS_FILE))
    return Progress(**data)


def save_state(engine, store: ObjectStore, checkpoint_prefix: str, progress: Progress, rank: int) -> None:
    """Every rank writes its part of DeepSpeed's checkpoint; rank 0 then marks the state complete and
    deletes the older ones. Collective: every rank calls it."""
    import torch.distributed as dist

    key = _state_key(checkpoint_prefix, progress.step)
    with tempfile.TemporaryDirectory() as tmp, _trainable_module_state(engine):
        engine.save_checkpoint(tmp, tag=DEEPSPEED_TAG, exclude_frozen_parameters=True, save_latest=False)
        # A rank may have nothing to write (without ZeRO partitions, rank 0 writes all): the marker makes
        # every rank's folder exist, so a missing one means a lost upload.
        folder = Path(tmp) / DEEPSPEED_TAG
        folder.mkdir(exist_ok=True)
        (folder / RANK_MARKER).write_text(str(rank))
        store.put_folder(f"{key}rank-{rank}/", folder)
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        store.put_bytes(key + PROGRESS_FILE, json.dumps(asdict(progress)).encode(), "application/json")
        older = {o.key.split("/state/")[1].split("/")[0] for o in store.list(f"{checkpoint_prefix}state/")}
        for name in older - {f"step-{progress.step}"}:
            store.delete_prefix(f"{checkpoint_prefix}state/{name}/")


@contextmanager
def _trainable_module_state(engine) -> Iterator[None]:
    """DeepSpeed's `exclude_frozen_parameters` misses a frozen weight tied to another (SmolLM2's output head
    shares the embedding: `named_parameters` lists it once, the state dict twice), which made each state
    57 MB heavier than its 28 MB of optimizer. While saving, the engine's module state holds only the
    trainable tensors: the base weights come from the base model when a run resumes."""
    full = engine.module_state_dict
    trainable = {name for name, p in engine.module.named_parameters() if p.requires_grad}

    def trainable_only(*args, **kwargs):
        return {k: v for k, v in full(*args, **kwargs).items() if k in trainable}

    engine.module_state_dict = trainable_only
    try:
        yield
    finally:
        del engine.module_state_dict  # the class's method again


def load_state(engine, store: ObjectStore, checkpoint_prefix: str, progress: Progress) -> None:
    """Restore DeepSpeed's checkpoint (every rank's files: ZeRO may read its peers' partitions)."""
    key = _state_key(checkpoint_prefix, progress.step)
    with tempfile.TemporaryDirectory() as tmp:
        for rank in range(progress.world):
            store.get_folder(f"{key}rank-{rank}/", Path(tmp) / DEEPSPEED_TAG)
        engine.load_checkpoint(tmp, tag=DEEPSPEED_TAG, load_module_strict=False)
