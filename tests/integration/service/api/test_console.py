"""The web console in a real headless browser (Debian's chromium driven by Playwright) against the running
stack: sign in, start a job from an uploaded file and watch its loss curve grow, chat with the new model
in the playground and keep the chat, make a training file of it, fill a vector store and search it, run a
suite, run a batch; a wrong key and another tenant's resources. The main pages' screenshots are written to docs/console/ (the README shows them)."""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import DATA, REPO, RunningStack, make_adapter

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / "docs" / "console"
# As the machines' probe runs it: headless, no sandbox (root), and none of Chromium's own network calls,
# which this closed network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (make browser)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, stack: RunningStack):
    context = browser.new_context(base_url=stack.base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], errors  # no uncaught script error on any page


def sign_in(page, key: str) -> None:
    page.goto("/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def poll(what: str, check, timeout: float = 600, every: float = 0.5):
    """`check()`'s first truthy value, polled from Python (the page's CSP forbids evaluated strings)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return value


def test_a_wrong_key_is_refused_with_a_clear_message(page) -> None:
    sign_in(page, "sk-not-a-key")
    alert = page.get_by_role("alert").filter(has_text="That key was refused")
    alert.wait_for()
    assert "API key" in alert.inner_text() or "key" in alert.inner_text().lower()
    assert page.locator("#nav").is_hidden()


def test_a_tenant_fine_tunes_chats_retrieves_and_evaluates_in_the_browser(
    page, stack: RunningStack, tmp_path: Path
) -> None:
    key = stack.tenant_key("console")
    sign_in(page, key)
    page.get_by_role("heading", name="Fine-tuning").wait_for()

    # A bad file: the API's message, naming the line, next to the form.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    page.get_by_label("Training data (JSONL)").set_input_files(str(bad))
    page.get_by_role("button", name="Start").click()
    error = page.get_by_role("alert").filter(has_text="line")
    error.wait_for()
    assert "line 1" in error.inner_text() or "line 2" in error.inner_text(), error.inner_text()

    # Chat examples sent for DPO: the method reaches the API, which asks for preference pairs.
    good = tmp_path / "train.jsonl"
    good.write_text("\n".join((DATA / "codeword_train.jsonl").read_text().splitlines()[:8]) + "\n")
    page.get_by_label("Training data (JSONL)").set_input_files(str(good))
    page.get_by_label("Method").select_option("dpo")
    page.get_by_role("button", name="Start").click()
    page.get_by_role("alert").filter(has_text="preferred_output").wait_for()

    # Supervised: 8 examples, 2 epochs of 8 steps; the job page follows it live.
    page.get_by_label("Method").select_option("supervised")
    page.get_by_label("Training data (JSONL)").set_input_files(str(good))
    page.get_by_label("Epochs").fill("2")
    page.get_by_label("Suffix").fill("console")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**/#/jobs/ftjob-*")
    job_id = page.url.rsplit("/", 1)[1]
    chart = page.locator("svg.chart")

    def points() -> int:
        return int(chart.get_attribute("data-train-points") or 0) if chart.count() else 0

    first = poll("the first point of the loss curve", points)
    grown = poll("the curve to grow while the job runs", lambda: points() > first and points())
    assert grown > first
    assert "null" not in page.locator("main").inner_text()  # no absent value written as text
    shot(page, "job")
    page.locator(".status.succeeded").first.wait_for(timeout=600_000)
    assert points() == 16
    model = f"{DEFAULT_BASE_MODEL}:console-"
    page.get_by_role("link", name=model).first.wait_for()

    # The new model in the playground: a streamed answer.
    page.get_by_role("link", name=model).first.click()
    page.get_by_role("heading", name="Playground").wait_for()
    assert page.locator("select[name=model]").input_value().startswith(model)
    page.get_by_label("Message").fill("What is the capital of France?")
    page.get_by_label("Max tokens").fill("8")
    page.get_by_label("Keep these chats").check()
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".answer")
    poll("a streamed answer", lambda: answer.count() and answer.first.inner_text().strip())
    shot(page, "playground")
    page.locator(".answer[aria-busy='false']").wait_for()  # the stream has ended
    said = answer.first.inner_text()

    # Kept: listed among the stored chats, and made into a training file to fine-tune on.
    page.get_by_role("link", name="Stored chats").click()
    page.get_by_role("heading", name="Stored chats").wait_for()
    row = page.locator("main table tbody tr").first
    row.wait_for()
    assert model in row.inner_text() and "source=playground" in row.inner_text()
    assert " ".join(said.split())[:20] in " ".join(row.inner_text().split())  # its stored answer
    page.get_by_role("button", name="Make a training file").click()
    page.get_by_role("link", name="Fine-tune on it").wait_for()
    shot(page, "stored-chats")
    page.get_by_role("link", name="Fine-tune on it").click()
    page.get_by_text("Training file: file-").wait_for()

    # A vector store: a document uploaded, ingested and found by a search.
    page.get_by_role("link", name="Vector stores").click()
    page.get_by_label("Name").fill("handbook")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url("**/#/vector-stores/vs_*")
    doc = tmp_path / "handbook.md"
    doc.write_text(
        "# Travel\n\nEmployees book flights through the travel desk at least two weeks ahead.\n\n"
        "# Equipment\n\nLaptops are replaced every three years; ask the helpdesk for a new one.\n"
    )
    page.get_by_label("Documents to add").set_input_files(str(doc))
    page.locator(".status.completed").first.wait_for(timeout=120_000)
    page.get_by_label("Query").fill("how often are laptops replaced?")
    page.get_by_role("button", name="Search").click()
    hit = page.get_by_role("region", name="Search results")
    hit.get_by_text("handbook.md").first.wait_for()
    assert "three years" in hit.inner_text()
    shot(page, "vector-store")

    # A built-in suite on the base model: the run's pass rate.
    page.get_by_role("link", name="Evals").click()
    page.get_by_label("Model to evaluate").select_option(DEFAULT_BASE_MODEL)
    page.locator("button[data-suite='json-answers']").click()
    page.wait_for_url("**/#/evals/*/runs/*")
    page.locator(".status.completed").first.wait_for(timeout=300_000)
    rate = page.locator("[data-pass-rate]").first
    assert rate.inner_text().endswith("%"), rate.inner_text()
    shot(page, "eval-run")
    page.get_by_role("link", name="Fine-tuning").click()
    page.get_by_role("link", name=job_id).wait_for()
    shot(page, "jobs")

    # Another tenant sees none of it.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, stack.tenant_key("console-other"))
    page.get_by_role("heading", name="Fine-tuning").wait_for()
    page.get_by_role("heading", name="Jobs").wait_for()
    assert job_id not in page.locator("main").inner_text()
    page.get_by_role("link", name="Models").click()
    page.get_by_role("heading", name="Models", exact=True).wait_for()
    assert model not in page.locator("main").inner_text()
    page.get_by_role("link", name="Vector stores").click()
    page.get_by_role("heading", name="Vector stores").wait_for()
    assert "handbook" not in page.locator("main").inner_text()
    assert page.locator("#nav-admin").is_hidden()  # a tenant key has no admin page


def test_a_tenant_imports_downloads_and_deletes_an_adapter_in_the_browser(
    page, stack: RunningStack, tmp_path: Path
) -> None:
    folder = make_adapter(tmp_path / "team-adapter", seed=5)
    archive, broken = tmp_path / "team-adapter.tar.gz", tmp_path / "broken.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="team-adapter")
    with tarfile.open(broken, "w:gz") as tar:
        tar.add(folder / "adapter_config.json", arcname="adapter_config.json")  # no weights
    key = stack.tenant_key("console-models")
    sign_in(page, key)
    page.get_by_role("heading", name="Fine-tuning").wait_for()
    page.get_by_role("link", name="Models").click()
    page.get_by_role("heading", name="Import an adapter").wait_for()

    # An archive without its weights: the API's reason, next to the form.
    page.get_by_label("PEFT adapter").set_input_files(str(broken))
    page.get_by_role("button", name="Import").click()
    page.get_by_role("alert").filter(has_text="no adapter_model.safetensors").wait_for()

    page.get_by_label("PEFT adapter").set_input_files(str(archive))
    page.get_by_label("Suffix").fill("team")
    page.get_by_role("button", name="Import").click()
    heading = page.get_by_role("heading", name=f"{DEFAULT_BASE_MODEL}:team-")
    heading.wait_for()  # the model's own page
    model = heading.inner_text()
    assert f"Base model: {DEFAULT_BASE_MODEL}" in page.locator("main").inner_text()

    # Its adapter downloads as it went in.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download adapter").click()
    saved = tmp_path / "downloaded.tar.gz"
    download.value.save_as(saved)
    with tarfile.open(saved) as tar:
        weights = tar.extractfile("adapter_model.safetensors").read()
    assert weights == (folder / "adapter_model.safetensors").read_bytes()

    # Deleted after the browser's confirmation: gone from the list and from the API.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url("**/#/models")
    page.get_by_role("heading", name="All models").wait_for()
    assert model not in page.locator("main").inner_text()
    assert stack.get(f"/v1/models/{model}", key=key).status_code == 404


def test_a_tenant_runs_a_batch_and_downloads_its_answers_in_the_browser(
    page, stack: RunningStack, tmp_path: Path
) -> None:
    def line(custom_id: str) -> str:
        body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        return json.dumps(
            {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
        )

    sign_in(page, stack.tenant_key("console-batches"))
    page.get_by_role("heading", name="Fine-tuning").wait_for()
    page.get_by_role("link", name="Batches").click()
    page.get_by_role("heading", name="Batches").wait_for()

    # A file with a bad line: the API's message names it, and nothing runs.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line("a") + "\n" + line("a") + "\n")
    page.get_by_label("Requests").set_input_files(str(bad))
    page.get_by_role("button", name="Run").click()
    page.get_by_role("alert").filter(has_text="line 2").wait_for()

    good = tmp_path / "requests.jsonl"
    good.write_text(line("a") + "\n" + line("b") + "\n")
    page.get_by_label("Requests").set_input_files(str(good))
    page.get_by_role("button", name="Run").click()
    page.wait_for_url("**/#/batches/batch_*")
    page.locator(".status.completed").wait_for(timeout=300_000)
    assert "2 of 2 requests answered" in page.locator("main").inner_text()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download answers").click()
    saved = tmp_path / "answers.jsonl"
    download.value.save_as(saved)
    answers = [json.loads(x) for x in saved.read_text().splitlines()]
    assert sorted(a["custom_id"] for a in answers) == ["a", "b"]
    assert all(a["response"]["status_code"] == 200 for a in answers)


def test_the_admin_sees_health_and_makes_a_key(page, stack: RunningStack) -> None:
    sign_in(page, stack.admin_key)
    page.get_by_role("link", name="Admin").click()
    page.get_by_role("heading", name="API keys").wait_for()
    assert "ray" in page.locator("main table").first.inner_text()  # the stack's components
    page.get_by_label("Tenant", exact=True).fill("made-in-console")
    page.get_by_role("button", name="Create key").click()
    made = page.get_by_text("Key for made-in-console (shown once)")
    made.wait_for()
    new_key = made.locator("code").inner_text()
    tenants = [k["tenant"] for k in json.loads(stack.cli("keys", "list").stdout)]
    assert stack.get("/v1/models", key=new_key).status_code == 200 and "made-in-console" in tenants
    # Disable the new tenant from its row (its key is refused at once), then enable it again.
    page.locator("button[data-tenant='made-in-console']").click()
    page.locator("button[data-tenant='made-in-console']", has_text="Enable").wait_for()
    assert stack.get("/v1/models", key=new_key).status_code == 403
    page.locator("button[data-tenant='made-in-console']").click()
    page.locator("button[data-tenant='made-in-console']", has_text="Disable").wait_for()
    assert stack.get("/v1/models", key=new_key).status_code == 200
    shot(page, "admin")
