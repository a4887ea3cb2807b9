"""`tuneserve models list | show | import | download | delete`: the models a key may use, and adapters in
and out of the service (`tuneserve models prepare`, which builds base model folders, is main.py's).

`import` takes a PEFT adapter folder, a .tar.gz / .zip of one, or an `s3://` folder under a prefix the
admin allows; `download` writes a model's PEFT folder, or with `--merged` a Hugging Face folder with the
adapter folded into the base weights, into a local folder."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from service.cli.client import ApiClient, CliError, command, print_json

# What the service reads from an adapter's folder (service.models.archives takes only these two).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
DTYPES = ("auto", "bfloat16", "float16", "float32")


def register(actions: argparse._SubParsersAction) -> None:
    """Add the API's actions to the `models` command."""
    actions.add_parser("list", help="list the models this key may use").set_defaults(func=command(_list))
    show = actions.add_parser("show", help="show a model with its lineage (base, job, data, evals)")
    show.add_argument("model")
    show.set_defaults(func=command(_show))

    imp = actions.add_parser("import", help="import a PEFT LoRA adapter as a model")
    imp.add_argument(
        "adapter",
        help="a PEFT adapter folder, a .tar.gz or .zip of one, or s3://bucket/prefix/ the admin allows",
    )
    imp.add_argument("--base", required=True, help="the base model it was trained on")
    imp.add_argument("--suffix", help="part of the new model's id")
    imp.set_defaults(func=command(_import))

    down = actions.add_parser(
        "download", help="download a model's adapter, or the model merged, into a folder"
    )
    down.add_argument("model")
    down.add_argument(
        "--merged",
        action="store_true",
        help="the adapter folded into the base weights: a Hugging Face folder for transformers or vLLM",
    )
    down.add_argument("--dtype", choices=DTYPES, default="auto", help="--merged only: the weights' precision")
    down.add_argument(
        "-o",
        "--output",
        type=Path,
        help="the folder to write (new or empty; default: ./MODEL or ./MODEL-merged)",
    )
    down.set_defaults(func=command(_download))

    delete = actions.add_parser("delete", help="delete a fine-tuned or imported model and its adapter")
    delete.add_argument("model")
    delete.set_defaults(func=command(_delete))


def _list(api: ApiClient, args: argparse.Namespace) -> int:
    models = api.call("GET", "/v1/models")["data"]
    fields = ("id", "type", "parent", "owned_by", "modalities")
    return print_json([{k: m.get(k) for k in fields} for m in models])


def _show(api: ApiClient, args: argparse.Namespace) -> int:
    return print_json(api.call("GET", f"/v1/models/{args.model}"))


def _delete(api: ApiClient, args: argparse.Namespace) -> int:
    return print_json(api.call("DELETE", f"/v1/models/{args.model}"))


def _import(api: ApiClient, args: argparse.Namespace) -> int:
    body = {"base_model": args.base, "suffix": args.suffix}
    if args.adapter.startswith("s3://"):
        body["source"] = args.adapter
    else:
        name, content = adapter_archive(Path(args.adapter))
        body["file"] = api.upload(name, content, "adapter")["id"]
    return print_json(api.call("POST", "/v1/models", json={k: v for k, v in body.items() if v is not None}))


def adapter_archive(path: Path) -> tuple[str, bytes]:
    """What to upload for an adapter at `path`: an archive as it is, or a folder's adapter files packed."""
    if path.is_file():
        return path.name, path.read_bytes()
    if not path.is_dir():
        raise CliError(f"{path}: no such folder or archive")
    missing = [f for f in ADAPTER_FILES if not (path / f).is_file()]
    if missing:
        raise CliError(f"{path} is not a PEFT adapter folder: it has no {' and no '.join(missing)}")
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as archive:
        for file in ADAPTER_FILES:
            archive.add(path / file, arcname=file)
    return f"{path.name or 'adapter'}.tar.gz", packed.getvalue()


def _download(api: ApiClient, args: argparse.Namespace) -> int:
    if args.dtype != "auto" and not args.merged:
        raise CliError("--dtype is for --merged (an adapter downloads as it was trained)")
    name = args.model.replace(":", "_").replace("/", "_")
    out = args.output or Path(f"{name}-merged" if args.merged else name)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CliError(f"{out} exists and is not an empty folder: give another --output")
    params = {"format": "merged", "dtype": args.dtype} if args.merged else None
    waiting = (
        f"merging {args.model} into its base model (a minute or more for a large model)"
        if args.merged
        else ""
    )
    with tempfile.TemporaryDirectory(prefix="tuneserve-download-") as tmp:
        archive = Path(tmp) / "model.tar"
        api.download(f"/v1/models/{args.model}/content", archive, params, waiting=waiting)
        out.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archive) as tar:  # .tar or .tar.gz, by its content
                tar.extractall(out, filter="data")  # no paths outside `out`, no links out, no devices
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(out, ignore_errors=True)
            raise CliError(f"could not unpack the download into {out}: {exc}") from None
    print(
        json.dumps({"model": args.model, "folder": str(out), "files": sorted(p.name for p in out.iterdir())})
    )
    return 0
