"""GPU check of the training recipe (`trainers.lora_sft.LoRASFTRecipe`): the CUDA path of DeepSpeed + peft
that the CPU machines never run. For a GPU machine without the stack (no S3, no Ray): the training data comes
from a local folder, and the model is SmolLM2-135M's architecture with random weights (its weights are too
large to carry), with the real tokenizer. For each ZeRO stage it trains LoRA r=8 in bf16 on the codeword
chats, and checks that the loss falls, that the batches ran on the GPU, and that the saved adapter loads with
peft and gives the trained model's loss. Prints one JSON line per stage and a table.

    python bench/gpu_training_check.py --tokenizer DIR --out DIR     # DIR: config.json + tokenizer files

Run one stage per process (`--stages 2`): DeepSpeed keeps global state between engines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import FolderStore  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "codeword_train.jsonl"


class Recorder:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.messages: list[str] = []

    def started(self, message: str) -> None:
        self.messages.append(message)

    def message(self, message: str, level: str = "info") -> None:
        self.messages.append(message)

    def metrics(self, data: dict) -> None:
        self.rows.append(data)

    def checkpoint(self, step: int, key: str, metrics: dict) -> None:
        pass


def build_model(tokenizer_dir: Path, out: Path) -> Path:
    """SmolLM2-135M's architecture, seeded random weights, saved with the real tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tokenizer_dir), dtype=torch.bfloat16)
    path = out / "model"
    model.save_pretrained(path)
    for f in tokenizer_dir.iterdir():
        if f.name != "config.json" and f.is_file():
            shutil.copy(f, path / f.name)
    return path


def spec_for(stage: int, model: Path, data: bytes):
    from service.protocol.fine_tuning import TrainingSpec

    return TrainingSpec.model_validate(
        {
            "job_id": f"gpu-check-{stage}",
            "tenant": "default",
            "base_model": "smollm2-random",
            "base_model_path": str(model),
            "fine_tuned_model": f"smollm2-random:zero{stage}",
            "training_file": "file-train",
            "training_key": "train.jsonl",
            "training_sha256": hashlib.sha256(data).hexdigest(),
            "n_train_examples": 24,
            "n_train_tokens": 0,
            "hyperparameters": {"n_epochs": 8, "batch_size": 8, "learning_rate_multiplier": 1},
            "learning_rate": 2e-3,
            "seed": 7,
            "lora": {
                "r": 8,
                "alpha": 16,
                "dropout": 0.0,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            },
            "deepspeed": {"stage": stage},
            "resources": {"num_workers": 1, "cpus_per_worker": 4, "use_gpu": True},
            "max_seq_length": 256,
            "adapter_prefix": f"adapters/zero{stage}/",
            "checkpoint_prefix": f"checkpoints/zero{stage}/",
        }
    )


def adapter_loss(model: Path, adapter: Path, data: bytes) -> float:
    """The saved adapter, loaded with peft on a fresh base: its mean token loss on the training chats."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.data_format import parse_jsonl
    from trainers.lora_sft import _collate
    from trainers.tokenization import IGNORE_INDEX, tokenize_all

    tokenizer = AutoTokenizer.from_pretrained(model)
    examples = tokenize_all(tokenizer, parse_jsonl(data), 256)
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).cuda()
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        inputs = _collate(examples, pad, "cuda")
        n = int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
        return float(tuned(**inputs).loss) if n else float("nan")


def main() -> None:
    import torch
    import torch.distributed as dist

    from trainers.lora_sft import LoRASFTRecipe

    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stages", default="0,2,3", help="ZeRO stages, comma-separated")
    parser.add_argument("--port", default="29533")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no GPU"
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=args.port, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1"
    )
    dist.init_process_group("nccl")
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(args.tokenizer, args.out)
    data = DATA.read_bytes()
    store = FolderStore(args.out / "store")
    (store.root).mkdir(exist_ok=True)
    (store.root / "train.jsonl").write_bytes(data)
    results = []
    for stage in [int(s) for s in args.stages.split(",")]:
        recorder = Recorder()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = LoRASFTRecipe(spec_for(stage, model, data), store, recorder).run()
        seconds = time.perf_counter() - start
        losses = [r["train_loss"] for r in recorder.rows if "tokens_per_second" in r]
        speeds = sorted(r["tokens_per_second"] for r in recorder.rows if "tokens_per_second" in r)
        adapter = store.root / f"adapters/zero{stage}"
        row = {
            "stage": stage,
            "steps": result.steps,
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "adapter_loss": adapter_loss(model, adapter, data),
            "median_tokens_per_second": speeds[len(speeds) // 2],
            "seconds": round(seconds, 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
            "started": recorder.messages[0],
            "adapter_files": sorted(p.name for p in adapter.iterdir()),
        }
        # From random weights, 24 steps take the loss from ln(49152) = 10.8 to about 6.7 (seen on an H100).
        row["loss_falls"] = row["last_loss"] < 0.75 * row["first_loss"]
        print(json.dumps(row), flush=True)
        results.append(row)
    print(f"{'ZeRO':>4} {'steps':>5} {'loss first':>10} {'last':>7} {'adapter':>8} {'tok/s':>8} {'GiB':>5}")
    for r in results:
        gib = r["peak_gpu_mib"] / 1024
        print(
            f"{r['stage']:>4} {r['steps']:>5} {r['first_loss']:>10.3f} {r['last_loss']:>7.3f} "
            f"{r['adapter_loss']:>8.3f} {r['median_tokens_per_second']:>8.0f} {gib:>5.1f}"
        )
    (args.out / f"results-{args.stages.replace(',', '-')}.json").write_text(json.dumps(results, indent=2))
    assert all(r["loss_falls"] for r in results), "loss did not fall"


if __name__ == "__main__":
    main()
