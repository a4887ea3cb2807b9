"""`tuneserve models ...`, `tuneserve files ...` and `tuneserve finetune --method` as a user runs them
(conftest.py: the CLI's main() over real HTTP to the app, with the real base model's weights and an
in-memory object store)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, auth
from tests.unit.service.models.test_imports import adapter


def test_an_adapter_folder_goes_in_and_comes_out_the_same(cli, tmp_path: Path) -> None:
    folder = adapter(tmp_path / "my-adapter")
    code, out, err = cli("models", "import", str(folder), "--base", DEFAULT_BASE_MODEL, "--suffix", "cli")
    assert code == 0, err
    model = json.loads(out)["id"]
    assert model.startswith(f"{DEFAULT_BASE_MODEL}:cli-")

    code, out, _ = cli("models", "list")
    assert {
        "id": model,
        "type": "llm",
        "parent": DEFAULT_BASE_MODEL,
        "owned_by": "default",
        "modalities": ["text"],
    } in json.loads(out)
    code, out, _ = cli("models", "show", model)
    assert json.loads(out)["lineage"]["base_model"] == DEFAULT_BASE_MODEL

    code, out, err = cli("models", "download", model, "-o", str(tmp_path / "back"))
    assert code == 0, err
    assert json.loads(out)["files"] == ["adapter_config.json", "adapter_model.safetensors"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (tmp_path / "back" / name).read_bytes() == (folder / name).read_bytes()
    # A folder that holds something is never written into.
    code, _, err = cli("models", "download", model, "-o", str(folder))
    assert code == 1 and "not an empty folder" in err

    code, out, _ = cli("models", "delete", model)
    assert code == 0 and json.loads(out)["deleted"] is True
    code, _, err = cli("models", "show", model)
    assert code == 1 and model in err  # the API's 404, in one line


def test_bad_imports_and_downloads_say_what_is_wrong(cli, tmp_path: Path) -> None:
    folder = adapter(tmp_path / "half")
    (folder / "adapter_model.safetensors").unlink()
    code, _, err = cli("models", "import", str(folder), "--base", DEFAULT_BASE_MODEL)
    assert code == 1 and "has no adapter_model.safetensors" in err
    code, _, err = cli("models", "import", str(tmp_path / "nowhere"), "--base", DEFAULT_BASE_MODEL)
    assert code == 1 and "no such folder or archive" in err
    # The API's own check: q_proj's LoRA does not fit this base model (its input is not 576 wide).
    wide = adapter(tmp_path / "wide", v_inputs=1000)
    code, _, err = cli("models", "import", str(wide), "--base", DEFAULT_BASE_MODEL)
    assert code == 1 and err.startswith("tuneserve: error: ") and "v_proj" in err
    code, _, err = cli("models", "download", f"{DEFAULT_BASE_MODEL}:nope-1", "--dtype", "float32")
    assert code == 1 and "--merged" in err


def test_finetune_sends_the_method_the_user_names(cli, tmp_path: Path) -> None:
    """A supervised dataset sent as DPO is refused by the API for its first line: the method got there."""
    data = tmp_path / "sft.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    )
    code, _, err = cli(
        "finetune", "--model", DEFAULT_BASE_MODEL, "--training-file", str(data), "--method", "dpo", "--detach"
    )
    assert code == 1 and "line 1" in err and "preferred_output" in err, err
    code, _, err = cli(
        "finetune", "--model", DEFAULT_BASE_MODEL, "--training-file", str(data), "--beta", "0.2"
    )
    assert code == 1 and "--method dpo" in err


def test_a_file_downloads_as_uploaded_and_is_deleted(cli, tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "train.jsonl"
    data.write_bytes(b'{"prompt": "a", "completion": "b"}\n' * 50)
    code, out, err = cli("files", "upload", str(data))
    assert code == 0, err
    file_id = json.loads(out)["id"]
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, out, err = cli("files", "download", file_id)  # named as uploaded, in the working folder
    assert code == 0, err
    assert (here / "train.jsonl").read_bytes() == data.read_bytes()
    code, _, err = cli("files", "download", file_id)
    assert code == 1 and "exists" in err  # never over a file
    code, _, _ = cli("files", "delete", file_id)
    assert code == 0
    code, _, err = cli("files", "download", file_id, "-o", str(here / "again.jsonl"))
    assert code == 1 and file_id in err and not (here / "again.jsonl").exists()


def test_a_suite_keeps_its_one_eval_past_the_first_page_of_evals(cli, port: int) -> None:
    """`evals run --suite` reuses the tenant's eval of the suite, so that its runs stay comparable, however
    many evals the tenant made since (the list API gives 100 a page)."""

    def run_suite() -> str:
        code, out, err = cli(
            "evals", "run", "--suite", "easy-choices", "--model", DEFAULT_BASE_MODEL, "--detach"
        )
        assert code == 0, err
        return out.split(" of ", 1)[1].split()[0]  # "created evalrun_... of eval_... (N items)"

    first = run_suite()
    time.sleep(1.1)  # created_at counts seconds: the others are strictly newer, so the suite's eval is last
    custom = {
        "name": "other",
        "data_source_config": {"type": "custom", "item_schema": {"type": "object", "properties": {}}},
        "testing_criteria": [
            {
                "type": "string_check",
                "name": "x",
                "input": "{{sample.output_text}}",
                "reference": "x",
                "operation": "eq",
            }
        ],
    }
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth(ADMIN)) as http:
        for _ in range(100):
            http.post("/v1/evals", json=custom).raise_for_status()
    assert run_suite() == first
