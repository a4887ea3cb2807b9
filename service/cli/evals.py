"""`tuneserve evals ...`: run a suite or an eval on a model with a progress bar, and compare runs."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from service.cli.client import ApiClient, command, print_json

ACTIVE = ("queued", "in_progress")


def register(sub: argparse._SubParsersAction) -> None:
    evals = sub.add_parser("evals", help="evaluate models and compare runs").add_subparsers(
        required=True, metavar="ACTION"
    )
    evals.add_parser("suites", help="list the built-in suites").set_defaults(
        func=command(
            lambda api, a: print_json(
                [
                    {k: x[k] for k in ("name", "items", "description", "license")}
                    for x in api.call("GET", "/v1/evals/suites")["data"]
                ]
            )
        )
    )
    run = evals.add_parser("run", help="run a suite or an eval on a model and follow it")
    run.add_argument("--model", required=True, help="a base or fine-tuned model id")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", help="a built-in suite (`tuneserve evals suites`)")
    which.add_argument("--eval", dest="eval_id", help="an eval id")
    run.add_argument("--items", type=Path, help="a local JSONL file of items (default: the suite's)")
    run.add_argument("--detach", action="store_true", help="return once the run is created")
    run.set_defaults(func=command(_run))

    compare = evals.add_parser("compare", help="put runs of one eval side by side")
    compare.add_argument("--eval", dest="eval_id", required=True)
    compare.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    compare.set_defaults(func=command(_compare))


def _run(api: ApiClient, args: argparse.Namespace) -> int:
    eval_id = args.eval_id or _suite_eval(api, args, args.suite)
    data_source: dict = {"type": "completions", "model": args.model}
    if args.items is not None:
        with args.items.open("rb") as f:
            file = api.upload(args.items.name, f, "evals")
        data_source["source"] = {"type": "file_id", "id": file["id"]}
    run = api.call("POST", f"/v1/evals/{eval_id}/runs", json={"data_source": data_source})
    print(f"created {run['id']} of {eval_id} ({run['progress']['total']} items)")
    if args.detach:
        return 0
    run = _follow(api, args, eval_id, run)
    for c in run["per_testing_criteria_results"]:
        score = "" if c["mean_score"] is None else f"  mean score {c['mean_score']:.3f}"
        counts = f"{c['passed']} passed, {c['failed']} failed, {c['errored']} errored"
        print(f"{c['testing_criteria']}: {counts}{score}")
    print(
        json.dumps(
            {k: run[k] for k in ("id", "eval_id", "model", "status", "result_counts", "error")}, indent=2
        )
    )
    return 0 if run["status"] == "completed" else 1


def _suite_eval(api: ApiClient, args: argparse.Namespace, suite: str) -> str:
    """The caller's eval of a suite (the newest), made if there is none: runs of it stay comparable."""
    mine = [e for e in api.all("/v1/evals", order="desc") if e.get("suite") == suite]
    if mine:
        return mine[0]["id"]
    return api.call("POST", "/v1/evals", json={"suite": suite})["id"]


def _follow(api: ApiClient, args: argparse.Namespace, eval_id: str, run: dict) -> dict:
    from tqdm import tqdm

    path = f"/v1/evals/{eval_id}/runs/{run['id']}"
    with tqdm(total=run["progress"]["total"], unit="item", dynamic_ncols=True) as bar:
        while run["status"] in ACTIVE:
            time.sleep(1)
            run = api.call("GET", path)
            counts = run["result_counts"]
            bar.update(run["progress"]["completed"] - bar.n)
            bar.set_postfix(passed=counts["passed"], failed=counts["failed"], errored=counts["errored"])
    return run


def _compare(api: ApiClient, args: argparse.Namespace) -> int:
    query = "&".join(f"run_ids={r}" for r in args.run_ids)
    cmp = api.call("GET", f"/v1/evals/{args.eval_id}/compare?{query}")
    print(format_comparison(cmp))
    return 0


def format_comparison(cmp: dict) -> str:
    """A text table: pass rate (and mean score) per criterion and run, then the items that changed."""
    runs = cmp["runs"]
    width = max(12, *(len(r["model"]) for r in runs))
    lines = ["criterion".ljust(32) + "".join(r["model"][-width:].rjust(width + 2) for r in runs)]
    for c in cmp["criteria"]:
        cells = [
            "-" if rate is None else f"{rate:.0%}" + ("" if score is None else f" ({score:.2f})")
            for rate, score in zip(c["pass_rate"], c["mean_score"], strict=True)
        ]
        lines.append(c["testing_criteria"][:32].ljust(32) + "".join(cell.rjust(width + 2) for cell in cells))
    lines.append(f"\n{len(cmp['changed_items'])} item(s) changed status:")
    for item in cmp["changed_items"][:20]:
        statuses = " -> ".join(str(s) for s in item["status"])
        lines.append(
            f"  #{item['datasource_item_id']} {statuses}: {json.dumps(item['datasource_item'])[:80]}"
        )
    return "\n".join(lines)
