"""Training throughput: the service's fine-tuning jobs against a plain HF Trainer + peft script.

Every configuration trains the same model (SmolLM2-135M), data (64 synthetic chats of ~110 tokens),
LoRA (r=8 on every linear layer: the default), batch (8) and dtype (bf16 where the CPU has it), back to
back, each in its own process. Prints steady-state tokens/s (median over steps after the first) and the
ratio to the baseline, plus the service's fixed cost: time from POST /v1/fine_tuning/jobs to the first step.

    .venv/bin/python bench/bench_training.py            # everything (~10 min on 2 cores)
    .venv/bin/python bench/bench_training.py --quick    # baseline, recipe ZeRO-2, one service job
    .venv/bin/python bench/bench_training.py --checkpoints   # what checkpoints cost (~8 min)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MODELS_DIR, child, plain_trainer, run_job, stack  # noqa: E402

MODEL = MODELS_DIR / "SmolLM2-135M-Instruct"
N_EXAMPLES, BATCH, EPOCHS, CORES = 64, 8, 2, 2


def dataset_bytes() -> bytes:
    topics = ["rivers", "volcanoes", "bread", "chess", "comets", "bees", "glaciers", "violins"]
    lines = []
    for i in range(N_EXAMPLES):
        t = topics[i % len(topics)]
        q = f"Write two sentences about {t}, number {i}, in a calm tone, for a curious reader."
        a = (
            f"{t.capitalize()} are fascinating subjects that reward patient observation over many years. "
            f"Example {i}: people who study {t} often say the details matter more than anything else."
        )
        lines.append(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        )
    return "\n".join(lines).encode()


# One configuration per process ----------------------------------------------------------------------


def run_hf_trainer() -> dict:
    """Baseline: a plain single-process HF Trainer + peft script."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.platform.hardware import use_bf16
    from trainers.data_format import parse_jsonl
    from trainers.lora_sft import _collate
    from trainers.tokenization import tokenize_all

    torch.set_num_threads(CORES)
    tok = AutoTokenizer.from_pretrained(MODEL)
    examples = tokenize_all(tok, parse_jsonl(dataset_bytes()), 1024)
    bf16 = use_bf16()
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16 if bf16 else torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            task_type="CAUSAL_LM",
            target_modules="all-linear",  # the service's default
        ),
    )
    tokens = [0]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def collate(batch):
        out = _collate(batch, pad)
        tokens[0] += int(out["attention_mask"].sum())
        return out

    step_times = plain_trainer(model, examples, collate, BATCH, EPOCHS, 2e-4, bf16)
    tokens_per_step = tokens[0] / len(step_times)
    return {"tokens_per_second": tokens_per_step / statistics.median(step_times[1:])}


def run_recipe(stage: int, epochs: int = EPOCHS, checkpoints: bool = False) -> dict:
    """The service's recipe (DeepSpeed) in one process, without Ray or HTTP. With `checkpoints`, it saves
    its checkpoints (adapter + training state, at the default interval) to the S3 server and publishes, as
    a job does; `wall_tokens_per_second` then counts the time they take."""
    from service.platform.net import free_port
    from service.platform.settings import Settings
    from service.platform.storage import ObjectStore, S3Credentials, start_embedded_s3, wait_for_store
    from service.protocol.fine_tuning import (
        DeepSpeedOptions,
        LoraOptions,
        ResolvedHyperparameters,
        ResourceOptions,
        TrainingSpec,
    )
    from trainers.lora_sft import LoRASFTRecipe
    from trainers.reporter import NullReporter

    settings = Settings(data_dir=Path(tempfile.mkdtemp()), s3_bucket="bench")
    creds = S3Credentials(None, "benchkey1", "benchsecret1", "us-east-1")
    port = free_port()
    rclone = start_embedded_s3(settings, creds, port, settings.resolved_data_dir / "rclone.log")
    try:
        store = ObjectStore(
            S3Credentials(f"http://127.0.0.1:{port}", "benchkey1", "benchsecret1", "us-east-1"), "bench"
        )
        wait_for_store(store, rclone)
        info = store.put_bytes("d.jsonl", dataset_bytes())
        spec = TrainingSpec(
            job_id="ftjob-bench",
            tenant="b",
            base_model="m",
            base_model_path=str(MODEL),
            fine_tuned_model="m:b",
            training_file="f",
            training_key="d.jsonl",
            training_sha256=info.sha256,
            n_train_examples=N_EXAMPLES,
            n_train_tokens=0,
            hyperparameters=ResolvedHyperparameters(
                n_epochs=epochs, batch_size=BATCH, learning_rate_multiplier=1
            ),
            learning_rate=2e-4,
            seed=0,
            lora=LoraOptions(alpha=16),
            deepspeed=DeepSpeedOptions(stage=stage),
            resources=ResourceOptions(num_workers=1, cpus_per_worker=CORES),
            max_seq_length=1024,
            adapter_prefix="a/",
            checkpoint_prefix="c/",
        )
        reporter = NullReporter()
        recipe = LoRASFTRecipe(spec, store, reporter, upload=checkpoints)
        saving = _timed(recipe, "_checkpoint")
        recipe.setup()
        started = time.perf_counter()
        recipe.train()
        if checkpoints:
            recipe.publish()
        wall = time.perf_counter() - started
        tps = [d["tokens_per_second"] for kind, d in reporter.events if kind == "metrics"]
        saved = sum(kind == "checkpoint" for kind, _ in reporter.events)
        return {
            "tokens_per_second": statistics.median(tps[1:]),
            "wall_tokens_per_second": recipe.result.trained_tokens / wall,
            "checkpoints": saved,
            "checkpoint_s": sum(saving),
            "wall_s": wall,
        }
    finally:
        rclone.terminate()


def _timed(obj, method: str) -> list[float]:
    """Wrap obj.method to record how long each call takes; the durations, filled as calls happen."""
    durations: list[float] = []
    original = getattr(obj, method)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - started)

    setattr(obj, method, timed)
    return durations


def run_service(configs: list[dict]) -> list[dict]:
    """Jobs through the full service (HTTP -> Ray job -> Ray Train -> DeepSpeed), one after another."""
    import httpx

    results = []
    with stack(ray_num_cpus="4", served_models="") as (url, headers, _):
        base = url + "/v1"
        fid = httpx.post(
            f"{base}/files",
            headers=headers,
            data={"purpose": "fine-tune"},
            files={"file": ("d.jsonl", dataset_bytes())},
            timeout=60,
        ).json()["id"]
        for cfg in configs:
            body = {
                "model": "SmolLM2-135M-Instruct",
                "training_file": fid,
                "seed": 0,
                "hyperparameters": {"n_epochs": EPOCHS, "batch_size": BATCH},
                "deepspeed": {"stage": cfg["stage"]},
                "resources": {"num_workers": cfg["workers"], "cpus_per_worker": CORES // cfg["workers"]},
            }
            posted, steps, events = run_job(base, headers, body)
            first_step = steps[0]["created_at"] - posted  # event times have 1 s resolution
            tps = [e["data"]["tokens_per_second"] for e in steps]
            results.append(
                {
                    "tokens_per_second": statistics.median(tps[1:]),
                    "first_step_s": first_step,
                    "timeline": _timeline(posted, events, steps[0]),
                }
            )
    return results


def _timeline(posted: float, events: list[dict], first_step: dict) -> list[tuple[str, float, str]]:
    """Where the time from POST to the first step goes: (phase, seconds, detail), from the job's events."""

    def at(prefix: str) -> dict:
        return next(e for e in events if e["message"].startswith(prefix))

    marks = [
        ("POST -> submitted to Ray (scheduler)", at("Submitted to Ray")),
        ("-> driver up (Ray job start, imports, ray.init)", at("Run started on Ray")),
        ("-> workers set up (worker start, setup)", at("Training started")),
        ("-> first step done", first_step),
    ]
    rows, last = [], posted
    for label, event in marks:
        detail = event["message"].split("set up in ", 1)[1] if "set up in " in event["message"] else ""
        rows.append((label, event["created_at"] - last, detail))
        last = event["created_at"]
    return rows


# The table --------------------------------------------------------------------------------------------


def run(name: str, *args: str) -> dict | list:
    return child(__file__, name, *args, env={"OMP_NUM_THREADS": str(CORES)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs="+")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--checkpoints", action="store_true", help="only the cost of checkpoints: 120 steps with and without"
    )
    args = parser.parse_args()
    if args.one:
        name, *rest = args.one
        if name == "hf":
            print(json.dumps(run_hf_trainer()))
        elif name == "recipe":
            print(json.dumps(run_recipe(int(rest[0]))))
        elif name == "checkpoints":
            print(json.dumps(run_recipe(2, epochs=15, checkpoints=rest[0] == "on")))
        elif name == "service":
            print(json.dumps(run_service(json.loads(rest[0]))))
        return

    if args.checkpoints:
        # The default job on this data: 15 epochs of 8 steps, checkpoints at ten epoch ends.
        off, on = run("checkpoints", "off"), run("checkpoints", "on")
        print(f"\n{'120 steps, ZeRO-2, in-process':<44} {'tokens/s (wall)':>16} {'ratio':>6} {'saved':>6}")
        for label, res in (
            ("without checkpoints (baseline)", off),
            ("with checkpoints + training state", on),
        ):
            ratio = res["wall_tokens_per_second"] / off["wall_tokens_per_second"]
            print(
                f"{label:<44} {res['wall_tokens_per_second']:>16.0f} {ratio:>6.3f} {res['checkpoints']:>12}"
            )
        # The direct measure, immune to the machine's noise between the two runs: the share of the
        # checkpointed run's wall clock spent inside its checkpoints.
        share = on["checkpoint_s"] / on["wall_s"]
        print(
            f"time inside checkpoints: {on['checkpoint_s']:.1f} s of {on['wall_s']:.0f} s "
            f"({share:.1%}; {on['checkpoint_s'] / max(on['checkpoints'], 1):.2f} s each)"
        )
        return

    rows = [("plain HF Trainer + peft (baseline), 1 process x 2 threads", run("hf"))]
    stages = [2] if args.quick else [0, 2, 3]
    rows += [(f"recipe in-process, DeepSpeed ZeRO-{s}, 1 x 2 threads", run("recipe", str(s))) for s in stages]
    service_cfgs = (
        [{"stage": 2, "workers": 2}]
        if args.quick
        else [
            {"stage": 0, "workers": 1},
            {"stage": 2, "workers": 1},
            {"stage": 3, "workers": 1},
            {"stage": 2, "workers": 2},
        ]
    )
    for cfg, res in zip(service_cfgs, run("service", json.dumps(service_cfgs)), strict=True):
        threads = CORES // cfg["workers"]
        default = " (default)" if cfg == {"stage": 2, "workers": 2} else ""
        label = f"service job, ZeRO-{cfg['stage']}, {cfg['workers']} worker(s) x {threads} threads{default}"
        rows.append((label, res))
    base = rows[0][1]["tokens_per_second"]
    print(f"\n{'configuration':<64} {'tokens/s':>9} {'ratio':>6} {'POST->1st step':>15}")
    for label, res in rows:
        first = f"{res['first_step_s']:.1f} s" if res.get("first_step_s") else ""
        tps = res["tokens_per_second"]
        print(f"{label:<64} {tps:>9.0f} {tps / base:>6.2f} {first:>15}")
    for label, res in rows:
        if res.get("timeline"):
            print(f"\nwhere the fixed cost goes, {label} (event times: 1 s resolution)")
            for phase, seconds, detail in res["timeline"]:
                print(f"  {phase:<52} {seconds:>5.0f} s  {detail}")


if __name__ == "__main__":
    main()
