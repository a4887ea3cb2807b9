"""Helpers shared by the integration tests: a stack started through the CLI, adapters made with peft and
registered the way a finished job registers its model, waiting for a fine-tuning job."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai

from service.fine_tuning.service import adapter_prefix
from service.platform.db import Database, FineTunedModelRow
from service.platform.net import free_port
from service.platform.settings import DEFAULT_BASE_MODEL, Settings
from service.platform.storage import ObjectStore, S3Credentials, store_credentials
from service.protocol.fine_tuning import (
    DeepSpeedOptions,
    LoraOptions,
    ResolvedHyperparameters,
    ResourceOptions,
    TrainingSpec,
)
from service.stack.supervisor import ray_auth_env, use_ray_auth

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
# Base models are built once by `make setup` and shared by every test data dir.
MODELS_DIR = Path(os.environ.get("TUNESERVE_TEST_MODELS_DIR", REPO / "data" / "models"))


@dataclass
class RunningStack:
    data_dir: Path
    port: int
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "api_key").read_text().strip()

    @property
    def state(self) -> dict:
        return json.loads((self.data_dir / "run" / "stack.json").read_text())

    def client(self, key: str | None = None) -> openai.OpenAI:
        """The official client, with the admin key unless told."""
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=key or self.admin_key, max_retries=0)

    def tenant_key(self, tenant: str) -> str:
        """A new API key of `tenant`, made through the CLI."""
        return json.loads(self.cli("keys", "create", "--tenant", tenant).stdout)["key"]

    def cli(
        self, *args: str, timeout: float = 300, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "service.cli", *args],
            input=input,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"tuneserve {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                f"{proc.stderr}\n--- stack log ---\n{self.log_tail()}"
            )
        return proc

    def up(self) -> None:
        # `up --detach` gives up after the stack's own TUNESERVE_STARTUP_TIMEOUT_S; this waits a bit longer
        # so its message (what did not start) is what a failing test shows.
        self.cli("up", "--detach", timeout=float(self.env.get("TUNESERVE_STARTUP_TIMEOUT_S", 300)) + 30)

    def down(self) -> None:
        self.cli("down", timeout=120, check=False)

    def get(self, path: str, key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.get(self.base_url + path, headers=headers, timeout=30)

    def log_tail(self, n: int = 40) -> str:
        log = self.data_dir / "run" / "stack.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else "(no log)"


def process_cmdlines() -> dict[int, str]:
    """Command lines of the live processes on this machine (zombies excluded)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "stat").read_text().split()[2] == "Z":
                continue
            out[int(proc.name)] = (
                (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except (OSError, IndexError):
            continue
    return out


def descendants(pid: int) -> list[int]:
    """The processes started by `pid`, their children and so on."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:  # "pid (name) state ppid ...": the name may hold spaces, so split after its ")"
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stack_pids(data_dir: Path) -> list[int]:
    """Every process whose command line mentions this stack's data dir or Ray temp dir."""
    from service.stack.supervisor import ray_temp_dir

    marks = (str(data_dir), ray_temp_dir(Settings(data_dir=data_dir)))
    return [pid for pid, cmd in process_cmdlines().items() if any(m in cmd for m in marks)]


def wait_until(condition, timeout: float, what: str) -> None:
    """Polls `condition` until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


@contextlib.contextmanager
def environ(updates: dict[str, str]) -> Iterator[None]:
    """These environment variables set for the block; as before after it."""
    saved = {name: os.environ.get(name) for name in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def ray_auth_of(stack: RunningStack) -> Iterator[None]:
    """This process speaks to `stack`'s Ray (its token) for the block; as before after it."""
    try:
        with environ(ray_auth_env(stack.data_dir)):
            use_ray_auth(stack.data_dir)  # and Ray reads its configuration again
            yield
    finally:
        from ray._raylet import Config

        Config.initialize("")


@contextlib.contextmanager
def second_node(stack: RunningStack, cpus: int = 2) -> Iterator[None]:
    """A second Ray node (its own raylet, on 127.0.0.2) joined to the stack's head until the block ends."""
    env = {**os.environ, **ray_auth_env(stack.data_dir)}  # the head refuses a node without the stack's token
    node = ray_node("127.0.0.2", cpus, env, f"--address={stack.state['ray_address']}")
    try:
        wait_until(
            lambda: (
                node.poll() is not None
                or "2 node(s)" in stack.get("/health").json()["components"]["ray"]["detail"]
            ),
            90,
            "the second node to join",
        )
        assert node.poll() is None, "the second Ray node exited"
        yield
    finally:
        stop_ray_node(node)


def ray_node(ip: str, cpus: int, env: dict[str, str], *args: str) -> subprocess.Popen:
    """A Ray node on this machine (`ray start --block`): a head when `args` has --head, else one joining the
    --address in `args`. Its own IP (else Ray sees one node), temp dir and agent port (else nodes on one
    machine collide); `stop_ray_node(..., lose=True)` kills its whole process tree at once, as a lost
    machine would."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--block",
            f"--node-ip-address={ip}",
            f"--num-cpus={cpus}",
            f"--temp-dir={tempfile.mkdtemp(prefix='ts-node-')}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
            *args,
        ],
        env={**env, "RAY_worker_niceness": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_ray_node(node: subprocess.Popen, lose: bool = False) -> None:
    """Stops a node of `ray_node`; `lose`: SIGKILL to every process of it at once (no goodbye to the head).
    Every process: Ray starts some in sessions of their own, so the process group is not all of the node."""
    if lose:
        for pid in [node.pid, *descendants(node.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    node.terminate()
    try:
        node.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()


def kill_training_workers() -> None:
    """SIGKILL every Ray Train worker on this machine (as a lost node would take them); there must be one."""
    workers = [pid for pid, cmd in process_cmdlines().items() if "RayTrainWorker" in cmd]
    assert workers, "no training worker runs"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)


def eval_of_samples(client: openai.OpenAI, outputs: list[str]) -> tuple[str, str]:
    """An eval whose items bring their own sample (no model) and pass when it says "yes", and a run of it
    over `outputs`: (eval id, run id)."""
    ev = client.evals.create(
        data_source_config={
            "type": "custom",
            "item_schema": {"type": "object"},
            "include_sample_schema": True,
        },
        testing_criteria=[
            {
                "type": "string_check",
                "name": "yes",
                "input": "{{sample.output_text}}",
                "reference": "yes",
                "operation": "eq",
            }
        ],
    )
    content = [{"item": {"n": i}, "sample": {"output_text": out}} for i, out in enumerate(outputs)]
    run = client.evals.runs.create(
        ev.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}}
    )
    return ev.id, run.id


def make_stack(data_dir: Path, serve: bool = False, **extra_env: str) -> RunningStack:
    """A stack's settings; without `serve` it deploys no vLLM engine (starts in ~15 s instead of ~90 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESERVE_")}
    port = free_port()
    env.update(
        {
            "TUNESERVE_DATA_DIR": str(data_dir),
            "TUNESERVE_PORT": str(port),
            "TUNESERVE_MODELS_DIR": str(MODELS_DIR),
            "TUNESERVE_RAY_NUM_CPUS": "4",
            **({} if serve else {"TUNESERVE_SERVED_MODELS": ""}),
            **extra_env,
        }
    )
    return RunningStack(data_dir, port, env)


BASE_PATH = MODELS_DIR / DEFAULT_BASE_MODEL
# A second bucket of the stack's S3 server that the session's stack may import adapters from.
SHARED_ADAPTERS = "shared-adapters"


@functools.cache
def _base_model():  # SmolLM2 in float32, loaded once per test session
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=torch.float32)


def make_adapter(folder: Path, seed: int, rank: int = 8, scale: float = 0.05) -> Path:
    """A LoRA adapter on q/v projections whose B matrices are random (seeded), so it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = copy.deepcopy(_base_model())  # peft changes the model it wraps
    peft_model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, scale)
    peft_model.save_pretrained(folder)
    return folder


def store_of(stack: RunningStack) -> ObjectStore:
    creds = store_credentials(Settings(data_dir=stack.data_dir))
    endpoint = stack.state["s3_endpoint_url"]
    return ObjectStore(
        S3Credentials(endpoint, creds.access_key_id, creds.secret_access_key, creds.region), "tuneserve"
    )


def register_adapter(stack: RunningStack, folder: Path, name: str, tenant: str = "default") -> str:
    """Upload `folder` and register it as `<base>:<name>` for `tenant`; returns the model id."""
    model_id = f"{DEFAULT_BASE_MODEL}:{name}"
    store_of(stack).put_folder(adapter_prefix(model_id), folder)
    db = Database(f"sqlite:///{stack.data_dir / 'tuneserve.db'}")
    with db.session() as s:
        s.add(
            FineTunedModelRow(
                id=model_id,
                tenant_id=tenant,
                base_model=DEFAULT_BASE_MODEL,
                adapter_prefix=adapter_prefix(model_id),
            )
        )
    return model_id


def greedy_on_pictures(
    model, processor, pictures: list[bytes], question: str, max_new_tokens: int = 4
) -> list[str]:
    """transformers' (+ peft's) greedy answers to `question` about each picture: the reference answers."""
    import io

    import torch
    from PIL import Image

    answers = []
    for picture in pictures:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        image = Image.open(io.BytesIO(picture)).convert("RGB")
        inputs = processor(text=[text], images=[image], return_tensors="pt")
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1] :]
        answers.append(processor.tokenizer.decode(new, skip_special_tokens=True))
    return answers


def greedy(model, tokenizer, question: str, max_new_tokens: int) -> str:
    """transformers' greedy answer of `model` (peft or not) to one user message: the reference answers."""
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def import_adapter(stack: RunningStack, folder: Path, suffix: str, key: str | None = None) -> str:
    """Import the PEFT folder through the API (a .tar.gz uploaded with purpose `adapter`, then
    POST /v1/models); returns the new model's id."""
    import io
    import tarfile

    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    file = stack.client(key).files.create(file=("adapter.tar.gz", packed.getvalue()), purpose="adapter")
    resp = httpx.post(
        stack.base_url + "/v1/models",
        json={"file": file.id, "base_model": DEFAULT_BASE_MODEL, "suffix": suffix},
        headers={"Authorization": f"Bearer {key or stack.admin_key}"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def adapter_config(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text())


def wait_job(client: openai.OpenAI, job_id: str, until: set[str], timeout: float = 600):
    """The job once its status is one of `until`; fails at once, with its error and last events, if it
    ends otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in until:
            return job
        if job.status in ("succeeded", "failed", "cancelled"):
            events = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=8).data]
            raise AssertionError(
                f"job {job.status} (waiting for {until}): {job.error}; last events: {events}"
            )
        assert time.monotonic() < deadline, f"job still {job.status} after {timeout:.0f} s"
        time.sleep(1)


def wait_eval_run(client: openai.OpenAI, eval_id: str, run_id: str, timeout: float = 300):
    """The eval run once it has ended."""
    deadline = time.monotonic() + timeout
    while (run := client.evals.runs.retrieve(run_id, eval_id=eval_id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, run
        time.sleep(0.5)
    return run


def three_checkpoint_job(client: openai.OpenAI, seed: int, epochs: int = 3, **create: object):
    """A job on 16 codeword examples, batches of 4, 3 epochs: 12 steps, checkpoints at steps 4, 8, 12 (one
    every 4 steps for other `epochs`)."""
    lines = (DATA / "codeword_train.jsonl").read_bytes().splitlines()[:16]
    train = client.files.create(file=("train16.jsonl", b"\n".join(lines)), purpose="fine-tune")
    return client.fine_tuning.jobs.create(
        model=DEFAULT_BASE_MODEL,
        training_file=train.id,
        hyperparameters={"n_epochs": epochs, "batch_size": 4},
        seed=seed,
        **create,
    )


def wait_first_checkpoint(client: openai.OpenAI, job_id: str, timeout: float = 300) -> list:
    """The job's checkpoints once it has one (a listed checkpoint is one the job can resume from)."""
    deadline = time.monotonic() + timeout
    while not (checkpoints := client.fine_tuning.jobs.checkpoints.list(job_id).data):
        assert time.monotonic() < deadline, client.fine_tuning.jobs.retrieve(job_id).status
        time.sleep(0.5)
    return checkpoints


def spec_for(
    key: str, sha256: str, seed: int, stage: int = 2, epochs: int = 1, name: str = "recipe"
) -> TrainingSpec:
    return TrainingSpec(
        job_id=f"ftjob-{name}",
        tenant="default",
        base_model=DEFAULT_BASE_MODEL,
        base_model_path=str(MODELS_DIR / DEFAULT_BASE_MODEL),
        fine_tuned_model=f"{DEFAULT_BASE_MODEL}:{name}",
        training_file="file-recipe",
        training_key=key,
        training_sha256=sha256,
        n_train_examples=8,
        n_train_tokens=0,
        hyperparameters=ResolvedHyperparameters(n_epochs=epochs, batch_size=4, learning_rate_multiplier=5),
        learning_rate=1e-3,
        seed=seed,
        lora=LoraOptions(alpha=16),
        deepspeed=DeepSpeedOptions(stage=stage),
        resources=ResourceOptions(num_workers=1, cpus_per_worker=2),
        max_seq_length=256,
        adapter_prefix=f"adapters/{name}/",
        checkpoint_prefix=f"jobs/{name}/checkpoints/",
    )


PG_BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _as_postgres(*cmd: str) -> list[str]:
    # PostgreSQL refuses to run as root; the Debian package provides a `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free port (Debian's `postgresql` binaries); its SQLAlchemy URL."""
    import pytest

    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="ts-pg-"))
    data = root / "data"
    shutil.chown(root, "postgres") if os.geteuid() == 0 else None
    port = free_port()
    initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run(_as_postgres(*initdb), check=True, capture_output=True)
    options = f"-p {port} -k {root} -h 127.0.0.1"
    start = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start"]
    subprocess.run(_as_postgres(*start), check=True, capture_output=True)
    try:
        ready = _as_postgres(str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port))
        wait_until(
            lambda: subprocess.run(ready, capture_output=True).returncode == 0, 30, "PostgreSQL to accept"
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        stop = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
        subprocess.run(_as_postgres(*stop), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def script_result(module: str, *args: str, prefix: str, env: dict[str, str] | None = None) -> object:
    """`python -m module args...` in a process of its own: the JSON on the line of its stdout that starts
    with `prefix` (Ray and vLLM write their own lines there too)."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith(prefix))
    return json.loads(line.removeprefix(prefix))


def vllm_greedy(
    folder: Path, questions: list[str | list[dict]], max_tokens: int, lora: Path | None = None
) -> list[str]:
    """vLLM's greedy answers (float32) to `questions` (texts, or conversations of OpenAI messages) from the
    model folder, with the LoRA adapter folder `lora` if given, in a process of its own
    (tests/integration/vllm_greedy.py)."""
    from tests.integration.vllm_greedy import RESULT

    args = [q if isinstance(q, str) else json.dumps(q) for q in questions]
    adapter = ["--lora", str(lora)] if lora else []
    return script_result(
        "tests.integration.vllm_greedy", str(folder), str(max_tokens), *adapter, *args, prefix=RESULT
    )
