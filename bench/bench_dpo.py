"""DPO throughput: the service's DPO jobs against TRL's `DPOTrainer` with peft on the same data and cores.

Every configuration trains SmolLM2-135M on the same 48 preference pairs (the sign-off task of
bench/preference_task.py, with fixed answers), LoRA r=8 on every linear layer, batch 8, 2 epochs, bf16
where the CPU has it, the reference's log-probabilities computed once before training, and the same loss
(sigmoid + the chosen answers' token loss, weight 1), back to back, each in its own process. Prints
steady-state tokens/s (chosen + rejected tokens; median over steps after the first) and the ratio to TRL,
and the first step's loss of each (the same initial model and batch size must give about the same number:
ln 2 plus the chosen answers' mean token loss).

    pip install --no-deps trl==1.16.0     # the baseline (its other dependencies come with the stack)
    .venv/bin/python bench/bench_dpo.py   # ~6 min on 2 cores
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import preference_task  # noqa: E402
from bench.common import MODELS_DIR, child, run_job, stack  # noqa: E402

MODEL = MODELS_DIR / "SmolLM2-135M-Instruct"
N_PAIRS, BATCH, EPOCHS, CORES, LR = 48, 8, 2, 2, 1e-4


def pairs() -> list[dict]:
    answers = [
        f"That is a good question, and the short answer is that it depends on {q.split()[-1].rstrip('?.')}."
        for q in preference_task.questions()[:N_PAIRS]
    ]
    return preference_task.pairs(list(zip(preference_task.questions()[:N_PAIRS], answers, strict=True)))


def run_trl() -> dict:
    """Baseline: TRL's DPOTrainer + peft in one process of CORES threads."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from service.platform.hardware import use_bf16

    torch.set_num_threads(CORES)
    tok = AutoTokenizer.from_pretrained(MODEL)
    bf16 = use_bf16()
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16 if bf16 else torch.float32)
    rows = [
        {
            "prompt": p["input"]["messages"],
            "chosen": p["preferred_output"],
            "rejected": p["non_preferred_output"],
        }
        for p in pairs()
    ]
    step_times: list[float] = []
    losses: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_times.append(time.perf_counter() - self.t0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    config = DPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=BATCH,
        num_train_epochs=EPOCHS,
        learning_rate=LR,
        beta=0.1,
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, 1.0],
        precompute_ref_log_probs=True,
        bf16=bf16,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        seed=0,
    )
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM", target_modules="all-linear"
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=lora,
        callbacks=[Timer()],
    )
    trainer.train()
    tokens = _tokens_per_step()
    return {"tokens_per_second": tokens / statistics.median(step_times[1:]), "first_loss": losses[0]}


def _tokens_per_step() -> float:
    """Chosen + rejected tokens of a mean batch, as the service's recipe tokenizes them."""
    from transformers import AutoTokenizer

    from trainers.data_format import parse_jsonl
    from trainers.tokenization import tokenize_all

    tok = AutoTokenizer.from_pretrained(MODEL)
    tokenized = tokenize_all(tok, parse_jsonl(preference_task.jsonl(pairs())), 1024)
    total = sum(len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in tokenized)
    return total / len(tokenized) * BATCH


def run_recipe() -> dict:
    """The service's DPO recipe (DeepSpeed ZeRO-2) in one process of CORES threads, without Ray or HTTP."""
    from service.protocol.fine_tuning import LoraOptions, ResolvedHyperparameters
    from tests.helpers import MemoryStore
    from tests.integration.helpers import spec_for
    from trainers.lora_dpo import LoRADPORecipe
    from trainers.reporter import NullReporter

    store = MemoryStore()
    info = store.put_bytes("d.jsonl", preference_task.jsonl(pairs()))
    hp = ResolvedHyperparameters(
        n_epochs=EPOCHS, batch_size=BATCH, learning_rate_multiplier=1, beta=0.1, sft_weight=1.0
    )
    spec = spec_for(info.key, info.sha256, 0).model_copy(
        update={"hyperparameters": hp, "learning_rate": LR, "method": "dpo", "lora": LoraOptions(alpha=16)}
    )
    reporter = NullReporter()
    LoRADPORecipe(spec, store, reporter, upload=False).run()
    steps = [d for kind, d in reporter.events if kind == "metrics" and "tokens_per_second" in d]
    return {
        "tokens_per_second": statistics.median(d["tokens_per_second"] for d in steps[1:]),
        "first_loss": steps[0]["train_loss"],
    }


def run_service() -> dict:
    """A DPO job through the full service (HTTP -> Ray job -> Ray Train -> DeepSpeed), default layout."""
    import httpx

    with stack(ray_num_cpus="4", served_models="") as (url, headers, _):
        base = url + "/v1"
        fid = httpx.post(
            f"{base}/files",
            headers=headers,
            data={"purpose": "fine-tune"},
            files={"file": ("d.jsonl", preference_task.jsonl(pairs()))},
            timeout=60,
        ).json()["id"]
        body = {
            "model": "SmolLM2-135M-Instruct",
            "training_file": fid,
            "seed": 0,
            "method": {
                "type": "dpo",
                "dpo": {
                    "hyperparameters": {
                        "n_epochs": EPOCHS,
                        "batch_size": BATCH,
                        "learning_rate_multiplier": LR / 1e-3,
                    }
                },
            },
        }
        posted, steps, _ = run_job(base, headers, body)
        return {
            "tokens_per_second": statistics.median(e["data"]["tokens_per_second"] for e in steps[1:]),
            "first_loss": steps[0]["data"]["train_loss"],
            "first_step_s": steps[0]["created_at"] - posted,
        }


CONFIGS = {
    "trl": ("TRL DPOTrainer + peft (baseline), 1 process x 2 threads", run_trl),
    "recipe": ("service recipe in-process (ZeRO-2), 1 process x 2 threads", run_recipe),
    "service": ("service job, default (2 workers x 1 thread)", run_service),
}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(CONFIGS[sys.argv[2]][1]()))
        return
    results = {name: child(__file__, name) for name in CONFIGS}
    base = results["trl"]["tokens_per_second"]
    print("| configuration | tokens/s | ratio | first step's loss | POST -> 1st step |")
    print("|---|---:|---:|---:|---:|")
    for name, (label, _) in CONFIGS.items():
        r = results[name]
        first = f"{r['first_step_s']:.0f} s" if "first_step_s" in r else ""
        ratio = r["tokens_per_second"] / base
        print(f"| {label} | {r['tokens_per_second']:.0f} | {ratio:.2f} | {r['first_loss']:.4f} | {first} |")


if __name__ == "__main__":
    main()
