"""Supervised LoRA fine-tuning with DeepSpeed ZeRO: the recipe that runs on every Ray Train worker.

`LoRASFTRecipe` reads top to bottom: setup (data, the model with a LoRA adapter, DeepSpeed), train (epochs
and steps, metrics reported from rank 0; validation and a checkpoint each epoch), save the final adapter
with its manifest. It also runs outside Ray (one process) for tests and benches.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from service.platform.hardware import use_bf16
from service.platform.net import free_port
from service.platform.storage import ObjectStore, S3Credentials
from service.protocol.fine_tuning import ADAPTER_MANIFEST, JobContext, TrainingSpec
from trainers.batching import epoch_batches, shard, steps_per_epoch
from trainers.checkpointing import (
    Progress,
    adapter_key,
    checkpoint_steps,
    latest_progress,
    load_state,
    save_state,
)
from trainers.convergence import (
    CONVERGED_EPOCHS,
    CONVERGED_LOSS,
    check_not_diverged,
    converged,
    diverging_warning,
)
from trainers.data_format import parse_jsonl
from trainers.reporter import Reporter
from trainers.tokenization import IGNORE_INDEX, TokenizedExample, tokenize_all
from trainers.vision import VisionExample, collate_image_inputs, data_url_loader, tokenize_all_vision

WARMUP_FRACTION = 0.05
FINAL_LR_FRACTION = 0.1


@dataclass
class RunResult:
    trained_tokens: int = 0
    steps: int = 0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    valid_losses: list[tuple[int, float]] = field(default_factory=list)
    stopped_after_epoch: int | None = None  # converged before its last epoch (trainers.convergence)


class LoRASFTRecipe:
    """Supervised LoRA fine-tuning in torchtune's shape: `setup` loads data, model and optimizer, `train` runs
    the epochs, `evaluate` measures validation loss, `save_checkpoint` writes an adapter. `run` does all."""

    def __init__(
        self,
        spec: TrainingSpec,
        store: ObjectStore,
        reporter: Reporter,
        *,
        rank: int = 0,
        world: int = 1,
        upload: bool = True,
    ) -> None:
        self.spec = spec
        self.store = store
        self.reporter = reporter
        self.rank = rank
        self.world = world
        self.warned_diverging = False  # a run warns once that its loss went above chance
        self.upload = upload
        self.result = RunResult()

    def run(self) -> RunResult:
        self.setup()
        self.train()
        if self.upload:
            self.publish()
        return self.result

    def setup(self) -> None:
        started = time.perf_counter()
        # DeepSpeed's autotuner imports mlflow when it is installed (it is: the service's tracking): 4 of the
        # 5.6 s a worker spent importing deepspeed, for a feature runs never use. DeepSpeed goes without it.
        with _hidden("mlflow"):
            import deepspeed
        import torch

        _skip_deepspeed_shm_op()
        phases: dict[str, float] = {"imports": time.perf_counter() - started}
        spec = self.spec
        threads = spec.resources.cpus_per_worker
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        _seed_everything(spec.seed)
        mark = time.perf_counter()
        _ensure_process_group()
        phases["process group"] = time.perf_counter() - mark

        mark = time.perf_counter()
        processor = _load_processor(spec.base_model_path) if spec.vision else None
        tokenizer = processor.tokenizer if processor is not None else _load_tokenizer(spec.base_model_path)
        examples = partial(_load_examples, spec, self.store, processor or tokenizer)
        self.train_set = examples(spec.training_key, spec.training_sha256)
        self.valid_set = examples(spec.validation_key, spec.validation_sha256) if spec.validation_key else []
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.vocab_size = len(tokenizer)
        phases["data"] = time.perf_counter() - mark
        mark = time.perf_counter()
        model = _load_lora_model(spec, self.store)
        self.dtype = next(model.parameters()).dtype
        phases["model"] = time.perf_counter() - mark
        mark = time.perf_counter()
        hp = spec.hyperparameters
        self.micro_batch = max(1, math.ceil(hp.batch_size / self.world))
        self.per_epoch = steps_per_epoch(len(self.train_set), hp.batch_size)
        self.total_steps = self.per_epoch * hp.n_epochs
        self.checkpoint_steps = set(checkpoint_steps(self.per_epoch, hp.n_epochs))
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=spec.learning_rate, weight_decay=0.0
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(self.total_steps))
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=_deepspeed_config(spec, self.micro_batch),
        )
        phases["DeepSpeed"] = time.perf_counter() - mark
        mark = time.perf_counter()
        if self.prepare():
            phases["reference"] = time.perf_counter() - mark
        nodes = _gather_hosts()
        if self.rank == 0:
            ready = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
            self.reporter.started(
                f"Training started: {len(self.train_set)} examples, {hp.n_epochs} epochs, {self.total_steps} "
                f"steps, {self.world} worker(s) on {', '.join(sorted(set(nodes)))}, ZeRO stage "
                f"{spec.deepspeed.stage}, {_dtype_name(model)}; set up in "
                f"{time.perf_counter() - started:.1f} s ({ready})"
            )
        self.start_step = self._resume() if self.upload else 0

    def prepare(self) -> bool:
        """Work a method does with the model as it starts, before any step or resumed state (DPO: the
        reference's log-probabilities); whether there was any."""
        return False

    def train(self) -> None:
        spec, engine, result = self.spec, self.engine, self.result
        hp = spec.hyperparameters
        lengths = [len(t.input_ids) for t in self.train_set]
        per_epoch = self.per_epoch
        step = self.start_step
        if self._stops_after(step):
            # Resumed from the checkpoint where the run had stopped early (its publish was cut off): it trains
            # no more, as the uninterrupted run did not.
            result.stopped_after_epoch, result.steps = step // per_epoch, step
            return
        for epoch in range(step // per_epoch, hp.n_epochs):
            engine.train()
            batches = epoch_batches(lengths, hp.batch_size, spec.seed, epoch)
            for batch in batches[step - epoch * per_epoch :]:
                step += 1
                self._train_step(step, epoch, batch)
                # every rank has the same all-reduced loss: all of them stop here together
                check_not_diverged(step, result.loss_curve[-1][1], hp.learning_rate_multiplier)
            epoch_metrics = {"epoch": epoch + 1, "train_loss": result.loss_curve[-1][1]}
            if self.valid_set:
                valid = self.evaluate()
                result.valid_losses.append((step, valid["valid_loss"]))
                epoch_metrics.update(valid)
                self._report(step, epoch, train_loss=epoch_metrics["train_loss"], **valid)
            stop = self._stops_after(step)
            if stop:
                self.checkpoint_steps.add(step)  # the run's last step: its checkpoint may become the model
            if self.upload and step in self.checkpoint_steps:
                self._checkpoint(step, epoch_metrics)
            if stop:
                result.stopped_after_epoch = epoch + 1
                if self.rank == 0:
                    self.reporter.message(
                        f"Stopped after epoch {epoch + 1} of {hp.n_epochs} (step {step} of "
                        f"{self.total_steps}): the training loss was below {CONVERGED_LOSS} at every step "
                        f"of the last {CONVERGED_EPOCHS} epochs (n_epochs was auto; set it to train them all)"
                    )
                break
        result.steps = step

    def _stops_after(self, step: int) -> bool:
        """Whether a run of "auto" epochs ends at `step`, an epoch's end before its last: its loss has
        converged. Every rank sees the same (all-reduced) losses, so all of them stop after the same epoch."""
        return (
            self.spec.stop_when_converged
            and step < self.total_steps
            and converged(self.result.loss_curve, self.per_epoch)
        )

    def _train_step(self, step: int, epoch: int, batch: list[int]) -> None:
        import torch

        engine, result = self.engine, self.result
        t0 = time.perf_counter()
        # Dropout draws from a generator seeded by the step: a resumed run draws what the first would have.
        torch.manual_seed(hash((self.spec.seed, step, self.rank)) % 2**63)
        examples = [self.train_set[i] for i in shard(batch, self.rank, self.world)]
        inputs = _collate(examples, self.pad_id, engine.device, self.dtype)
        loss = engine(**inputs).loss
        engine.backward(loss)
        engine.step()
        n_tokens = int(inputs["attention_mask"].sum())
        n_trained = int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
        totals = _all_reduce_sum([loss.item() * n_trained, n_trained, n_tokens], engine.device)
        elapsed = time.perf_counter() - t0
        train_loss = totals[0] / max(totals[1], 1)
        result.trained_tokens += int(totals[2])
        result.loss_curve.append((step, train_loss))
        self._report(
            step,
            epoch,
            train_loss=train_loss,
            learning_rate=self.scheduler.get_last_lr()[0],
            tokens_per_second=round(totals[2] / elapsed, 1),
        )
        self._warn_if_diverging(step, train_loss)

    def _warn_if_diverging(self, step: int, token_loss: float) -> None:
        """A warning event, once a run, at the first step whose mean token loss is above chance."""
        if self.rank != 0 or self.warned_diverging:
            return
        lrm = self.spec.hyperparameters.learning_rate_multiplier
        warning = diverging_warning(step, token_loss, self.vocab_size, lrm)
        if warning is not None:
            self.warned_diverging = True
            self.reporter.message(warning, level="warn")

    def _checkpoint(self, step: int, metrics: dict) -> None:
        """The adapter as a model of its own and the state that resumes the run from here; reported once
        both are written, so that a listed checkpoint is one the job can continue from."""
        key = adapter_key(self.spec.adapter_prefix, step)
        self.save_checkpoint(key)
        progress = Progress(
            step=step,
            world=self.world,
            trained_tokens=self.result.trained_tokens,
            loss_curve=[list(p) for p in self.result.loss_curve],
            valid_losses=[list(p) for p in self.result.valid_losses],
        )
        save_state(self.engine, self.store, self.spec.checkpoint_prefix, progress, self.rank)
        if self.rank == 0:
            self.reporter.checkpoint(step, key, metrics)

    def _resume(self) -> int:
        """Continue from the job's newest complete training state, if an earlier run left one; the step to
        start after."""
        progress = latest_progress(self.store, self.spec.checkpoint_prefix)
        if progress is None:
            return 0
        if progress.world != self.world:
            if self.rank == 0:
                self.reporter.message(
                    f"Not resuming from step {progress.step}: it was saved by {progress.world} worker(s), "
                    f"this run has {self.world}; starting over",
                    level="warn",
                )
            return 0
        load_state(self.engine, self.store, self.spec.checkpoint_prefix, progress)
        self.result.trained_tokens = progress.trained_tokens
        self.result.loss_curve = [(int(s), v) for s, v in progress.loss_curve]
        self.result.valid_losses = [(int(s), v) for s, v in progress.valid_losses]
        if self.rank == 0:
            self.reporter.message(f"Resumed from the checkpoint of step {progress.step}")
        return progress.step

    def publish(self) -> None:
        """Upload the model: the final adapter, or with a validation file the checkpoint of the lowest
        validation loss (checkpoint retention always keeps that one)."""
        manifest = _manifest(self.spec, self.result, self.world)
        saved = [p for p in self.result.valid_losses if p[0] in self.checkpoint_steps]
        best = min(saved, key=lambda p: p[1], default=None)
        if best is None or best[0] == self.result.steps:
            self.save_checkpoint(self.spec.adapter_prefix, manifest=manifest)
            return
        if self.rank != 0:
            return
        step, loss = best
        manifest["selected_checkpoint"] = {"step": step, "valid_loss": loss}
        with tempfile.TemporaryDirectory() as tmp:
            self.store.get_folder(adapter_key(self.spec.adapter_prefix, step), tmp)
            Path(tmp, ADAPTER_MANIFEST).write_text(json.dumps(manifest, indent=2))
            self.store.put_folder(self.spec.adapter_prefix, tmp, unchecked=(ADAPTER_MANIFEST,))
        self.reporter.message(
            f"Published the checkpoint of step {step}: the lowest validation loss ({loss:.4f})"
        )

    def evaluate(self) -> dict[str, float]:
        """`valid_loss`: the mean token loss over the validation set, summed over the workers."""
        import torch

        engine = self.engine
        engine.eval()
        total = [0.0, 0.0]
        indices = list(range(len(self.valid_set)))
        mine = shard(indices, self.rank, self.world) if len(indices) >= self.world else indices[:1]
        with torch.no_grad():
            for start in range(0, len(mine), self.micro_batch):
                examples = [self.valid_set[i] for i in mine[start : start + self.micro_batch]]
                inputs = _collate(examples, self.pad_id, engine.device, self.dtype)
                n = int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
                total[0] += engine(**inputs).loss.item() * n
                total[1] += n
        engine.train()
        summed = _all_reduce_sum(total, engine.device)
        return {"valid_loss": summed[0] / max(summed[1], 1)}

    def save_checkpoint(self, prefix: str, manifest: dict | None = None) -> None:
        """Gather the LoRA weights (ZeRO-3 partitions them) and upload them from rank 0 in PEFT format."""
        import deepspeed

        trainable = [p for p in self.engine.module.parameters() if p.requires_grad]
        gather = (
            deepspeed.zero.GatheredParameters(trainable, modifier_rank=None)
            if self.spec.deepspeed.stage == 3
            else nullcontext()
        )
        with gather:
            if self.rank != 0:
                return
            with tempfile.TemporaryDirectory() as tmp:
                self.engine.module.save_pretrained(tmp)
                if manifest is not None:
                    Path(tmp, ADAPTER_MANIFEST).write_text(json.dumps(manifest, indent=2))
                self.store.put_folder(prefix, tmp, unchecked=(ADAPTER_MANIFEST,))

    def _report(self, step: int, epoch: int, **metrics: float) -> None:
        if self.rank == 0:
            self.reporter.metrics(
                {
                    "step": step,
                    "total_steps": self.total_steps,
                    "epoch": epoch + 1,
                    **metrics,
                    "trained_tokens": self.result.trained_tokens,
                }
            )


def store_from_context(context: JobContext) -> ObjectStore:
    creds = S3Credentials(
        context.s3_endpoint_url, context.s3_access_key_id, context.s3_secret_access_key, context.s3_region
    )
    return ObjectStore(creds, context.s3_bucket)


# Pieces ---------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def _hidden(module: str) -> Iterator[None]:
    """`import <module>` fails inside (unless it was imported before) and works as usual afterwards."""
    if module in sys.modules:
        yield
        return
    sys.modules[module] = None  # the import system's mark of a module that must not be imported
    try:
        yield
    finally:
        if module in sys.modules and sys.modules[module] is None:
            del sys.modules[module]


def _skip_deepspeed_shm_op() -> None:
    """DeepSpeed's communication backend JIT-compiles its shared-memory all-reduce op on CPU machines when it
    starts (45-57 s the first time on a machine, a ninja check of ~2 s at each later start); only
    `inference_all_reduce` uses it, which training never calls. The backend looks the op up in
    `deepspeed.ops.__compatible_ops__` (a table probed on first access, by running compilers): a table
    that marks it incompatible skips the build and the probe."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__ = {"deepspeed_shm_comm": False}


def _ensure_process_group() -> None:
    """Ray Train sets up torch.distributed; a standalone run gets a one-process group (NCCL on a GPU)."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _load_tokenizer(path: str):  # a Hugging Face tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _load_processor(path: str):  # a Hugging Face processor (tokenizer + image processor)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)


def _load_examples(
    spec: TrainingSpec, store: ObjectStore, tokenizer_or_processor, key: str, sha256: str | None
) -> list[TokenizedExample] | list[VisionExample]:
    examples = parse_jsonl(store.get_bytes(key, sha256=sha256), image_domains=spec.image_url_domains)
    if not spec.vision:
        return tokenize_all(tokenizer_or_processor, examples, spec.max_seq_length)
    files = {file_id: store.get_bytes(k) for file_id, k in spec.image_files.items()}
    return tokenize_all_vision(tokenizer_or_processor, examples, data_url_loader(files), spec.max_seq_length)


def _load_lora_model(spec: TrainingSpec, store: ObjectStore):  # a PeftModel
    """The base model with a new LoRA adapter, or with the adapter of the model training continues from."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if use_bf16() else torch.float32
    if spec.vision:
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(spec.base_model_path, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(spec.base_model_path, dtype=dtype)
    model.config.use_cache = False
    if spec.parent_adapter_prefix:
        with tempfile.TemporaryDirectory() as tmp:
            store.get_folder(spec.parent_adapter_prefix, tmp)
            return PeftModel.from_pretrained(model, tmp, is_trainable=True)
    targets = spec.lora.target_modules
    lora = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=_lora_targets(model, spec.vision, targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _lora_targets(model, vision: bool, targets: list[str]) -> str | list[str]:
    if vision:
        return language_model_targets(model, targets)
    # peft knows "all-linear" as the whole value only, not as a name in a list
    return "all-linear" if "all-linear" in targets else targets


def language_model_targets(model, targets: list[str]) -> str:
    """For a vision-language model, LoRA on its language model only (the vision tower and the projector stay
    as built: vLLM serves LoRA on the language model and refuses trained extra modules, so what is trained
    here is exactly what is served): peft's regex over module names, the linear layers named in `targets`
    ("all-linear": every one of them) under the language model."""
    import re

    import torch

    decoder = model.get_decoder()  # LLaVA's and Qwen2-VL's `language_model`, Idefics3's `text_model`
    prefix = next(name for name, module in model.named_modules() if module is decoder)
    linear = {
        name.rsplit(".", 1)[-1]
        for name, module in decoder.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    names = sorted(linear if "all-linear" in targets else linear & set(targets))
    if not names:
        raise ValueError(
            f"none of the LoRA target modules {targets} is a linear layer of the language model "
            f"(it has {', '.join(sorted(linear))})"
        )
    return rf"(.*\.)?{re.escape(prefix)}\..*\.({'|'.join(re.escape(n) for n in names)})"


def _dtype_name(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _deepspeed_config(spec: TrainingSpec, micro_batch: int) -> dict:
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": use_bf16()},
        "zero_optimization": {"stage": spec.deepspeed.stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _lr_lambda(total_steps: int) -> Callable[[int], float]:
    """Linear warmup over the first WARMUP_FRACTION of the steps, then a cosine decay to FINAL_LR_FRACTION."""
    warmup = max(1, int(total_steps * WARMUP_FRACTION))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _collate(
    examples: list[TokenizedExample] | list[VisionExample],
    pad_id: int,
    device: object = "cpu",
    pixel_dtype: object = None,
) -> dict:
    """A padded batch on `device` (DeepSpeed puts the model on the accelerator, not its inputs)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
    for key in dict.fromkeys(k for e in examples for k in getattr(e, "token_inputs", {})):
        values = torch.zeros((len(examples), width), dtype=torch.long)
        for row, e in enumerate(examples):
            row_values = e.token_inputs.get(key, [])
            values[row, : len(row_values)] = torch.tensor(row_values, dtype=torch.long)
        batch[key] = values.to(device)
    image_inputs = [e.image_inputs() for e in examples if isinstance(e, VisionExample)]
    image_inputs = [inputs for inputs in image_inputs if inputs]
    if image_inputs:
        batch.update(collate_image_inputs(image_inputs, device, pixel_dtype))
    return batch


def _gather_hosts() -> list[str]:
    """The node address of every rank (to show where the workers run)."""
    import torch.distributed as dist

    host = os.environ.get("RAY_NODE_IP_ADDRESS") or _node_ip()
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [host]
    hosts: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(hosts, host)
    return hosts


def _node_ip() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    import socket

    return socket.gethostname()


def _all_reduce_sum(values: list[float], device: object = "cpu") -> list[float]:
    """Summed over the workers; on `device`, since NCCL reduces only CUDA tensors."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def _manifest(spec: TrainingSpec, result: RunResult, world: int) -> dict:
    from importlib.metadata import version

    return {
        "fine_tuned_model": spec.fine_tuned_model,
        "base_model": spec.base_model,
        "parent_model": spec.parent_model,
        "job_id": spec.job_id,
        "tenant": spec.tenant,
        "created_at": int(time.time()),
        "tuneserve_version": version("tuneserve"),
        "dataset": {
            "training_file": spec.training_file,
            "training_sha256": spec.training_sha256,
            "validation_file": spec.validation_file,
            "validation_sha256": spec.validation_sha256,
            "n_examples": spec.n_train_examples,
            "n_tokens": spec.n_train_tokens,
        },
        "method": spec.method,
        "hyperparameters": spec.hyperparameters.model_dump(exclude_none=True),
        "learning_rate": spec.learning_rate,
        "seed": spec.seed,
        "lora": spec.lora.model_dump(),
        "deepspeed": spec.deepspeed.model_dump(),
        "num_workers": world,
        "max_seq_length": spec.max_seq_length,
        "metrics": {
            "final_train_loss": result.loss_curve[-1][1] if result.loss_curve else None,
            "final_valid_loss": result.valid_losses[-1][1] if result.valid_losses else None,
            "trained_tokens": result.trained_tokens,
            "steps": len(result.loss_curve),
            "stopped_after_epoch": result.stopped_after_epoch,
        },
        "loss_curve": [[s, round(v, 6)] for s, v in result.loss_curve],
        "valid_loss_curve": [[s, round(v, 6)] for s, v in result.valid_losses],
    }
