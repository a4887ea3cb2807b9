"""Do the fine-tuning defaults teach a small dataset? Trains SmolLM2-135M on each task of bench/teach_tasks.py
with the service's own resolution of a job that sets nothing (`hyperparams.resolve_training`) and with a few
variants, then asks the held-out prompts (greedy) with the adapter and without. Prints a table: setting,
task, held-out accuracy (base -> tuned), steps, minutes. Each run is its own process (the training recipe
itself, one process, no Ray: what a job's worker runs).

    .venv/bin/python bench/sweep_defaults.py                      # defaults + variants (~30 min, 2 cores)
    .venv/bin/python bench/sweep_defaults.py --settings defaults  # the defaults alone (~8 min)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MODELS_DIR, FolderStore, child  # noqa: E402
from bench.teach_tasks import TASKS, jsonl  # noqa: E402

MODEL = MODELS_DIR / "SmolLM2-135M-Instruct"
# name -> what a job request sets (nothing, for the defaults); `before` is the previous defaults.
SETTINGS: dict[str, dict] = {
    "defaults": {},
    "every epoch": {},  # the defaults without the early stop of a converged run (trainers.convergence)
    "before": {  # and a linear decay of the learning rate, where the recipe now decays it along a cosine
        "hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 0.2},
        "lora": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    },
    "lr x0.5": {"hyperparameters": {"learning_rate_multiplier": 0.5}},
    "lr x2": {"hyperparameters": {"learning_rate_multiplier": 2}},
    "attention only": {"lora": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}},
}


def answers(model_path: Path, adapter: Path | None, questions: list[str]) -> list[str]:
    """Greedy answers (24 tokens at most) of the base model, or of the base with `adapter`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), 16):
            batch = tokenizer(
                prompts[start : start + 16], return_tensors="pt", padding=True, add_special_tokens=False
            )
            ids = model.generate(
                **batch, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
            out += tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


def accuracy(task_name: str, adapter: Path | None) -> tuple[float, list[str]]:
    task = TASKS[task_name]
    replies = answers(MODEL, adapter, [q for q, _ in task.held_out])
    right = [task.check(a, e) for a, (_, e) in zip(replies, task.held_out, strict=True)]
    return sum(right) / len(right), replies


def run_one(task_name: str, setting: str) -> dict:
    """Train `task` as a job with `setting` would, then ask its held-out prompts."""
    import torch

    from service.fine_tuning import hyperparams
    from service.protocol.fine_tuning import FineTuningJobCreate, TrainingSpec
    from trainers.lora_sft import LoRASFTRecipe
    from trainers.reporter import NullReporter

    torch.set_num_threads(2)
    if setting == "base":
        acc, replies = accuracy(task_name, None)
        return {"task": task_name, "setting": "base", "accuracy": acc, "sample": replies[:3]}
    task = TASKS[task_name]
    data = jsonl(task)
    request = json.loads(json.dumps(SETTINGS[setting]))
    if setting == "before":  # its batch was a tenth of the data (1 to 8)
        request["hyperparameters"]["batch_size"] = max(1, min(8, len(task.train) // 10))
    req = FineTuningJobCreate(model="base", training_file="file-x", **request)
    hp, learning_rate, lora = hyperparams.resolve_training(req, len(task.train))
    with tempfile.TemporaryDirectory() as tmp:
        store = FolderStore(Path(tmp))
        (store.root / "train.jsonl").write_bytes(data)
        spec = TrainingSpec(
            job_id="sweep",
            tenant="default",
            base_model="base",
            base_model_path=str(MODEL),
            fine_tuned_model="base:sweep",
            training_file="file-x",
            training_key="train.jsonl",
            training_sha256=hashlib.sha256(data).hexdigest(),
            n_train_examples=len(task.train),
            n_train_tokens=0,
            hyperparameters=hp,
            stop_when_converged=hyperparams.stops_when_converged(req) and setting != "every epoch",
            learning_rate=learning_rate,
            seed=7,
            lora=lora,
            deepspeed=req.deepspeed,
            resources=req.resources,
            max_seq_length=req.max_seq_length,
            adapter_prefix="adapter/",
            checkpoint_prefix="checkpoints/",
        )
        reporter = NullReporter()
        start = time.perf_counter()
        # No checkpoints or resume (FolderStore has no listing): train, then save the adapter.
        recipe = LoRASFTRecipe(spec, store, reporter, upload=False)
        result = recipe.run()
        recipe.save_checkpoint(spec.adapter_prefix)
        minutes = (time.perf_counter() - start) / 60
        acc, replies = accuracy(task_name, store.root / "adapter")
    return {
        "task": task_name,
        "setting": setting,
        "accuracy": acc,
        "steps": result.steps,
        "epochs": hp.n_epochs,
        "batch": hp.batch_size,
        "learning_rate": learning_rate,
        "target_modules": lora.target_modules,
        "final_loss": round(reporter.losses[-1], 4),
        "minutes": round(minutes, 2),
        "sample": replies[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=2, metavar=("TASK", "SETTING"))
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help="comma-separated, from: " + ", ".join(SETTINGS)
    )
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return
    rows = []
    for task in args.tasks.split(","):
        base = child(__file__, task, "base")
        for setting in args.settings.split(","):
            row = child(__file__, task, setting)
            row["base_accuracy"] = base["accuracy"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"{'setting':<16}{'task':<13}{'held-out: base -> tuned':>25}{'steps':>7}{'epochs':>7}", end="")
    print(f"{'batch':>6}{'lr':>9}{'minutes':>8}")
    for r in rows:
        acc = f"{r['base_accuracy']:.0%} -> {r['accuracy']:.0%}"
        print(
            f"{r['setting']:<16}{r['task']:<13}{acc:>25}{r['steps']:>7}{r['epochs']:>7}{r['batch']:>6}"
            f"{r['learning_rate']:>9.1e}{r['minutes']:>8.1f}"
        )


if __name__ == "__main__":
    main()
