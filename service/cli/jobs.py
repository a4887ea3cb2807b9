"""`tuneserve files ...` (upload, list, download, delete), `tuneserve finetune ...`, `tuneserve jobs ...`:
fine-tuning from the shell, with a progress bar that follows the job's event stream."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.cli.client import ApiClient, CliError, command, print_json
from service.cli.images import inline_local_images
from service.protocol.fine_tuning import METHODS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the commands to the main parser."""
    files = sub.add_parser("files", help="upload and list files").add_subparsers(
        required=True, metavar="ACTION"
    )
    up = files.add_parser("upload", help="upload a file")
    up.add_argument("path", type=Path)
    up.add_argument("--purpose", default="fine-tune")
    up.set_defaults(func=command(lambda api, a: print_json(_upload(api, a, a.path, a.purpose))))
    files.add_parser("list", help="list files").set_defaults(
        func=command(lambda api, a: print_json(api.call("GET", "/v1/files")["data"]))
    )
    down = files.add_parser("download", help="download a file's content")
    down.add_argument("file_id")
    down.add_argument("-o", "--output", type=Path, help="where to write it (default: its filename, here)")
    down.set_defaults(func=command(_download))
    delete = files.add_parser("delete", help="delete a file")
    delete.add_argument("file_id")
    delete.set_defaults(func=command(lambda api, a: print_json(api.call("DELETE", f"/v1/files/{a.file_id}"))))

    ft = sub.add_parser("finetune", help="fine-tune a model on a JSONL file and follow it")
    ft.add_argument("--model", required=True, help="base model id (see `GET /v1/models`)")
    ft.add_argument("--training-file", required=True, help="a local JSONL path or an uploaded file id")
    ft.add_argument("--validation-file", help="a local JSONL path or an uploaded file id")
    ft.add_argument(
        "--method",
        choices=METHODS,
        default="supervised",
        help="supervised: chat or prompt/completion examples; dpo: preference pairs "
        "(input, preferred_output, non_preferred_output)",
    )
    ft.add_argument("--suffix", help="part of the fine-tuned model's id")
    ft.add_argument("--epochs", type=int, help="default: chosen from the dataset's size")
    ft.add_argument("--batch-size", type=int, help="default: chosen from the dataset's size")
    ft.add_argument("--lr-multiplier", type=float, help="times the recipe's learning rate (default: auto)")
    ft.add_argument("--beta", type=float, help="dpo only: how close the model stays to where it started")
    ft.add_argument("--seed", type=int)
    ft.add_argument("--detach", action="store_true", help="return once the job is created")
    ft.set_defaults(func=command(_finetune))

    jobs = sub.add_parser("jobs", help="fine-tuning jobs").add_subparsers(required=True, metavar="ACTION")
    jobs.add_parser("list", help="list jobs").set_defaults(
        func=command(lambda api, a: print_json([_summary(j) for j in api.all("/v1/fine_tuning/jobs")]))
    )
    for name, help_text in [
        ("show", "show a job"),
        ("follow", "follow a job with a progress bar"),
        ("cancel", "cancel a job"),
        ("pause", "pause a job (it keeps its checkpoints)"),
        ("resume", "resume a paused job from its last checkpoint"),
    ]:
        p = jobs.add_parser(name, help=help_text)
        p.add_argument("job_id")
        p.set_defaults(action=name)
        p.set_defaults(func=command(_job_action))


def _summary(job: dict) -> dict:
    return {k: job.get(k) for k in ("id", "status", "model", "fine_tuned_model", "created_at", "error")}


def _upload(api: ApiClient, args: argparse.Namespace, path: Path, purpose: str) -> dict:
    """A training file's local pictures go inline (service.cli.images); anything else as it is."""
    if purpose == "fine-tune" and (inlined := inline_local_images(path)):
        content, count = inlined
        print(f"{path}: {count} local image(s) sent inline as data URLs", file=sys.stderr)
        return api.upload(path.name, content, purpose)
    with path.open("rb") as f:
        return api.upload(path.name, f, purpose)


def _download(api: ApiClient, args: argparse.Namespace) -> int:
    """Never over an existing file: a filename from the service is only a default, and only its last part."""
    file = api.call("GET", f"/v1/files/{args.file_id}")
    out = args.output or Path(Path(file["filename"]).name or args.file_id)
    if out.exists():
        raise CliError(f"{out} exists: give another --output")
    api.download(f"/v1/files/{args.file_id}/content", out)
    return print_json({"id": file["id"], "path": str(out), "bytes": out.stat().st_size})


def _file_id(api: ApiClient, args: argparse.Namespace, value: str | None) -> str | None:
    if value is None or value.startswith("file-"):
        return value
    return _upload(api, args, Path(value), "fine-tune")["id"]


def _finetune(api: ApiClient, args: argparse.Namespace) -> int:
    if args.beta is not None and args.method != "dpo":
        raise CliError("--beta is a DPO hyperparameter: add --method dpo")
    hyper = {
        k: v
        for k, v in {
            "n_epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate_multiplier": args.lr_multiplier,
            "beta": args.beta,
        }.items()
        if v is not None
    }
    body = {
        "model": args.model,
        "training_file": _file_id(api, args, args.training_file),
        "validation_file": _file_id(api, args, args.validation_file),
        "suffix": args.suffix,
        "seed": args.seed,
        "method": {"type": args.method, args.method: {"hyperparameters": hyper}},
    }
    job = api.call("POST", "/v1/fine_tuning/jobs", json={k: v for k, v in body.items() if v is not None})
    print(f"created {job['id']} ({job['status']})")
    return 0 if args.detach else _follow(api, args, job["id"])


def _job_action(api: ApiClient, args: argparse.Namespace) -> int:
    path = f"/v1/fine_tuning/jobs/{args.job_id}"
    if args.action == "show":
        return print_json(api.call("GET", path))
    if args.action in ("cancel", "pause", "resume"):
        return print_json(_summary(api.call("POST", f"{path}/{args.action}")))
    return _follow(api, args, args.job_id)


def _follow(api: ApiClient, args: argparse.Namespace, job_id: str) -> int:
    """Stream the job's events: messages above a progress bar of steps. Exit 0 if it succeeded."""
    from tqdm import tqdm

    bar = None
    for event in api.events("GET", f"/v1/fine_tuning/jobs/{job_id}/events?stream=true"):
        data = event.get("data") or {}
        if event["type"] == "metrics" and "tokens_per_second" in data:
            if bar is None:
                bar = tqdm(total=data["total_steps"], unit="step", dynamic_ncols=True)
            bar.update(data["step"] - bar.n)
            bar.set_postfix(loss=f"{data['train_loss']:.4f}", tok_s=f"{data['tokens_per_second']:.0f}")
        elif event["type"] == "message":
            (bar.write if bar else print)(f"[{event['level']}] {event['message']}")
    job = api.call("GET", f"/v1/fine_tuning/jobs/{job_id}")
    if bar is not None:
        if job["status"] == "succeeded":  # a run that converged early ends before its planned last step
            bar.total = bar.n
        bar.close()
    print(json.dumps(_summary(job), indent=2))
    return 0 if job["status"] == "succeeded" else 1
