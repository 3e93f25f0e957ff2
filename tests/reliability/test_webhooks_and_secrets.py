"""The running daemon against hostile webhooks, and a canary secret that must stay secret.

Webhooks: unsigned, wrongly signed, replayed (same delivery id) and oversized (> 1 MiB)
deliveries are refused with a problem document and change nothing: no new run in the store, no
new note in Git. A correctly signed one is accepted (the control), and its replay is refused as a
duplicate.

Secrets: a cmd provisioner hands back a canary value as a secret output; the canary must never
appear in the daemon's stderr, notes, status branch, deploy branch (any Git object at all),
the ``/api/v1`` answers, ``/metrics``, ``reconciler plan``'s output, or the store file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import MakeRepo
from tests.e2e.test_cli_validate import RECONCILER
from tests.reliability.conftest import (
    Daemon,
    all_refs_text,
    config,
    final_phase,
    notes_count,
    plain_workload,
    sqlite_count,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

SECRET = "reliability-webhook-secret"
RUNS = "SELECT count(*) FROM runs"


def push_payload(repo_head: str, padding: int = 0) -> bytes:
    body = {
        "ref": "refs/heads/main",
        "before": "1" * 40,
        "after": repo_head,
        "repository": {"full_name": "shop/apps"},
        "padding": "x" * padding,
    }
    return json.dumps(body).encode()


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(daemon: Daemon, body: bytes, delivery: str, signature: str | None) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
    }
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return httpx.post(daemon.url + "/webhooks/github", content=body, headers=headers, timeout=30)


def test_hostile_webhooks_are_refused_and_change_nothing(
    make_repo: MakeRepo, env_names: Callable[[], str], daemons: Callable[..., Daemon]
) -> None:
    env = env_names()
    repo = make_repo()
    head = repo.commit({"reconciler.yaml": config(env), "apps/aa/score.yaml": plain_workload("aa")})
    daemon = daemons(repo, env={"RECONCILER_WEBHOOK_SECRET": SECRET})
    assert eventually(lambda: final_phase(repo, head, env), "the first note") == "Succeeded"
    db = repo.root / ".git" / "reconciler" / "state.db"
    runs, lines = sqlite_count(db, RUNS), notes_count(repo)
    body = push_payload(head)

    refused = {
        "unsigned": post(daemon, body, "d-unsigned", None),
        "wrongly signed": post(daemon, body, "d-wrong", signed(body, "not-the-secret")),
        "signed for another body": post(daemon, body, "d-other", signed(body + b" ")),
        "malformed signature": post(daemon, body, "d-malformed", "sha1=abc"),
    }
    for what, answer in refused.items():
        assert answer.status_code == 401, what
        assert answer.headers["content-type"].startswith("application/problem+json"), what
    huge = push_payload(head, padding=1024 * 1024 + 1)
    too_large = post(daemon, huge, "d-huge", signed(huge))
    assert too_large.status_code == 413
    assert "RCN-6" in too_large.text

    accepted = post(daemon, body, "d-good", signed(body))
    assert accepted.status_code == 202, accepted.text
    replayed = post(daemon, body, "d-good", signed(body))
    assert replayed.status_code == 200
    assert replayed.json()["status"] == "duplicate"

    metrics = daemon.get("/metrics").text
    assert 'result="unauthorized"} 4.0' in metrics
    assert 'result="too_large"} 1.0' in metrics
    assert 'result="duplicate"} 1.0' in metrics
    # Nothing changed: no run, no note (the accepted one named the head already reconciled).
    assert daemon.get("/readyz").status_code == 200
    assert sqlite_count(db, RUNS) == runs
    assert notes_count(repo) == lines
    assert daemon.alive()
    assert "Traceback" not in daemon.stderr


CANARY = "CANARY-reliability-5be1-93d0"
CANARY_PROVISIONER = f"""\
import json, sys
json.load(sys.stdin)
outputs = {{"token": "{CANARY}", "url": "https://api.example"}}
print(json.dumps({{"resource_state": {{}}, "resource_outputs": outputs, "shared_state": {{}}}}))
"""


def test_a_secret_output_never_leaves_the_secret_store(
    make_repo: MakeRepo,
    env_names: Callable[[], str],
    daemons: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    env = env_names()
    script = tmp_path / "canary.py"
    script.write_text(CANARY_PROVISIONER)
    provisioner = (
        f"- uri: cmd://python3\n  type: api-token\n  args: [{str(script)!r}]\n"
        "  expected_outputs: [token, url]\n  secret_outputs: [token]\n"
    )
    workload = (
        plain_workload("orders")
        .replace("resources:\n", "resources:\n  api:\n    type: api-token\n")
        .replace(
            "    variables:\n",
            "    variables:\n      TOKEN: ${resources.api.token}\n"
            "      AUTH: Bearer ${resources.api.token}\n      URL: ${resources.api.url}\n",
        )
    )
    repo = make_repo()
    head = repo.commit(
        {
            "reconciler.yaml": config(env) + "provisioners: [provisioners/*.yaml]\n",
            "provisioners/api.yaml": provisioner,
            "apps/orders/score.yaml": workload,
        }
    )
    daemon = daemons(repo)
    assert eventually(lambda: final_phase(repo, head, env), "the note") == "Succeeded", (
        daemon.stderr
    )
    # A second commit, so that the recorded secret is read back and re-resolved too.
    second = repo.commit({"apps/orders/score.yaml": workload.replace("nginx:1.27", "nginx:1.28")})
    assert eventually(lambda: final_phase(repo, second, env), "the second note") == "Succeeded"

    answers = [daemon.get(p).text for p in ("/api/v1/environments", "/api/v1/workloads")]
    db = repo.root / ".git" / "reconciler" / "state.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        run_ids = [r[0] for r in conn.execute("SELECT id FROM runs")]
    assert run_ids
    answers += [daemon.get(f"/api/v1/runs/{run_id}").text for run_id in run_ids]
    answers.append(daemon.get("/metrics").text)
    plan = subprocess.run(
        [RECONCILER, "plan", "--format", "json"],
        cwd=repo.root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert daemon.stop() == 0

    manifests = repo.git("show", f"reconciler/deploy/{env}:orders/manifests.yaml")
    assert "TOKEN" in manifests  # the variable is there, as a reference to a Secret
    leaks = {
        "daemon stderr": daemon.stderr,
        "git objects (notes, status and deploy branches)": all_refs_text(repo),
        "api answers": "\n".join(answers),
        "plan": plan.stdout + plan.stderr,
    }
    for file in db.parent.glob("state.db*"):
        leaks[file.name] = file.read_bytes().decode("latin-1")
    found = [where for where, text in leaks.items() if CANARY in text]
    assert found == []
