"""Adapters in and out as archives: a PEFT adapter folder packed as .tar.gz or .zip, unpacked safely (only
the adapter's own files, by name, never a path from the archive), and checked against the base model it
is imported for: every LoRA pair must fit the base model's module of that name."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

from service.models.adapters import CONFIG_FILE, WEIGHTS_FILE, AdapterError, safetensors_header

ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
PEFT_PREFIX = "base_model.model."


def unpack_adapter(data: bytes, dest: Path, max_bytes: int) -> None:
    """Write the adapter files of the archive `data` (.tar, .tar.gz or .zip; the files at any depth, once)
    into `dest`. Other files are ignored; links, duplicates and files past `max_bytes` are refused."""
    found: dict[str, bytes] = {}

    def take(name: str, read) -> None:
        base = Path(name).name
        if base not in ADAPTER_FILES:
            return
        if base in found:
            raise AdapterError(f"the archive holds more than one {base}: upload one adapter at a time")
        found[base] = read(max_bytes + 1)  # what is read counts, not what the archive declares
        if len(found[base]) > max_bytes:
            raise AdapterError(f"its {base} is larger than {max_bytes} bytes")

    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    take(info.filename, archive.open(info).read)
    else:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                for member in archive.getmembers():
                    if member.isfile():
                        take(member.name, archive.extractfile(member).read)
        except tarfile.TarError:
            raise AdapterError("the file is not a .tar.gz, .tar or .zip archive") from None
    for name in ADAPTER_FILES:
        if name not in found:
            raise AdapterError(
                f"the archive has no {name} (a PEFT adapter folder holds {' and '.join(ADAPTER_FILES)})"
            )
        (dest / name).write_bytes(found[name])


def pack_adapter(folder: Path, files: list[Path]) -> bytes:
    """A .tar.gz of `files` (below `folder`), as `peft` saves a folder: flat."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for path in files:
            archive.add(path, arcname=path.relative_to(folder).as_posix())
    return out.getvalue()


def pack_folder(folder: Path, out: Path) -> Path:
    """An uncompressed .tar of every file below `folder` (weights barely compress), written to `out`."""
    with tarfile.open(out, mode="w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.add(path, arcname=path.relative_to(folder).as_posix())
    return out


def check_fits_base(adapter: Path, base_model: str, base_path: Path) -> None:
    """AdapterError unless each LoRA pair of `adapter` fits the module of that name in the base model
    (`base_path`, safetensors weights): an adapter trained for another model is refused here, not by vLLM."""
    base = {}
    for weights in sorted(base_path.glob("*.safetensors")):
        base.update(tensor_shapes(weights))
    pairs = 0
    for name, shape in tensor_shapes(adapter / WEIGHTS_FILE).items():
        for part, axis in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if not name.endswith(part):
                continue
            module = name.removeprefix(PEFT_PREFIX).removesuffix(part)
            target = base.get(module + ".weight")
            if target is None:
                raise AdapterError(
                    f"its module '{module}' is not a module of {base_model}: it was made for another model"
                )
            if len(shape) != 2 or shape[axis] != target[axis]:
                side = "inputs" if axis == 1 else "outputs"
                raise AdapterError(
                    f"its '{module}' has {shape[axis]} {side} where {base_model}'s has {target[axis]}: "
                    "it was made for another model"
                )
            pairs += 1
    if not pairs:
        raise AdapterError(f"its {WEIGHTS_FILE} holds no LoRA weights (lora_A / lora_B)")


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from a safetensors file's header (the weights are not read)."""
    header, _ = safetensors_header(path)
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
