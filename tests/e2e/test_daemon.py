"""`reconciler run` as a platform team runs it: the real process on a real repository.

A fake forge (tests/support/fake_forge.py, speaking GitHub's commit-status API over real HTTP)
stands in for GitHub, which cannot run here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from reconciler.store import Store
from reconciler.store.envlock import environment_lock
from tests.conftest import MakeRepo
from tests.e2e.test_cli_validate import RECONCILER
from tests.support.daemon import DaemonProcess
from tests.support.fake_forge import FakeForge
from tests.support.gitrepos import GitRepo
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow
T = TypeVar("T")
BROKEN = "apiVersion: score.dev/v1b1\nmetadata:\n  name: aa\ncontainers: ["


def workload(name: str) -> str:
    return (
        "apiVersion: score.dev/v1b1\n"
        f"metadata:\n  name: {name}\n"
        "containers:\n  main:\n    image: nginx\n"
        "    variables:\n      CACHE: ${resources.cache.host}\n"
        "resources:\n  cache:\n    type: redis\n"
    )


def notes(repo: GitRepo, commit: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["git", "notes", "--ref=reconciler", "show", commit],
        cwd=repo.root,
        capture_output=True,
        text=True,
        check=False,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def final_note(repo: GitRepo, commit: str, env: str = "staging") -> dict[str, Any] | None:
    """The environment's verdict on the commit: its line without per-workload scope."""
    done = [
        n
        for n in notes(repo, commit)
        if n["environment"] == env and n["phase"] != "Running" and n.get("scope") == []
    ]
    return done[-1] if done else None


def phase_other_than(repo: GitRepo, commit: str, phase: str) -> dict[str, Any] | None:
    """The environment's verdict once it is no longer ``phase``."""
    note = final_note(repo, commit)
    return note if note is not None and note["phase"] != phase else None


def workload_notes(repo: GitRepo, commit: str, workload: str) -> list[dict[str, Any]]:
    """The lines of the runs that reconciled ``workload`` on the commit."""
    return [n for n in notes(repo, commit) if workload in (n.get("scope") or ())]


WEBHOOK_SECRET = "pr-s3cret"


class Daemon(DaemonProcess):
    def __init__(self, repo: GitRepo, forge: FakeForge) -> None:
        env = {"FORGE_TOKEN": forge.token, "RECONCILER_WEBHOOK_SECRET": WEBHOOK_SECRET}
        super().__init__(["--target-url", "https://ci.example"], cwd=repo.root, env=env)


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    with FakeForge() as fake:
        yield fake


def config(forge: FakeForge) -> str:
    return (
        "environments:\n  staging:\n    branch: main\n    resync: 1h\n"
        "reporters:\n  forge:\n    kind: github\n"
        f"    url: {forge.url}\n    repository: shop/apps\n    token_env: FORGE_TOKEN\n"
    )


def test_every_commit_gets_its_status_in_git_and_on_the_forge(
    make_repo: MakeRepo, forge: FakeForge
) -> None:
    repo = make_repo()
    first = repo.commit({"reconciler.yaml": config(forge), "apps/aa/score.yaml": workload("aa")})
    daemon = Daemon(repo, forge)
    try:
        note = eventually(lambda: final_note(repo, first), "the first commit's note")
        assert (note["phase"], note["sync"], note["health"]) == ("Succeeded", "Synced", "Healthy")
        status_file = repo.git("show", "reconciler/status:staging/aa.yaml")
        assert "Synced" in status_file
        assert "aa/manifests.yaml" in repo.git(
            "ls-tree", "-r", "--name-only", "reconciler/deploy/staging"
        )
        sent = eventually(
            lambda: [r for r in forge.requests if r.sha == first and r.body["state"] == "success"],
            "a success status on the forge",
        )
        states = [r.body["state"] for r in forge.requests if r.sha == first]
        assert states[0] == "pending"
        assert sent[0].body["context"] == "reconciler/staging"
        assert sent[0].body["target_url"].startswith("https://ci.example")
        metrics = httpx.get(daemon.url + "/metrics").text
        assert 'reconciler_runs_total{environment="staging",result="Succeeded"}' in metrics
        assert httpx.get(daemon.url + "/readyz").status_code == 200
        envs = httpx.get(daemon.url + "/api/v1/environments").json()
        assert [e["name"] for e in envs["items"]] == ["staging"]

        second = repo.commit(
            {
                "apps/aa/score.yaml": BROKEN,
                "apps/bb/score.yaml": workload("bb"),
            }
        )
        note = eventually(lambda: final_note(repo, second), "the broken commit's note")
        assert note["phase"] == "Failed"
        (failure,) = note["failures"]
        assert (failure["code"], failure["file"], failure["line"]) == (
            "RCN-1001",
            "apps/aa/score.yaml",
            4,
        )
        (run_of_bb,) = workload_notes(repo, second, "bb")
        assert (run_of_bb["phase"], run_of_bb["scope"]) == ("Succeeded", ["bb"])
        assert run_of_bb["workloads"]["bb"]["sync"] == "Synced"
        deployed = repo.git("ls-tree", "-r", "--name-only", "reconciler/deploy/staging")
        assert "bb/manifests.yaml" in deployed  # the other workload still reconciled
        assert "aa/manifests.yaml" in deployed  # and the broken one was left as it was
        eventually(
            lambda: [r for r in forge.requests if r.sha == second and r.body["state"] == "failure"],
            "a failure status on the forge",
        )
    finally:
        code = daemon.stop()
    assert code == 0


def test_webhooks_must_be_signed(make_repo: MakeRepo, forge: FakeForge) -> None:
    repo = make_repo()
    repo.commit({"reconciler.yaml": config(forge), "apps/aa/score.yaml": workload("aa")})
    daemon = Daemon(repo, forge)
    try:
        answer = httpx.post(daemon.url + "/webhooks/github", content=b"{}")
        assert answer.status_code in (401, 404)
        assert answer.headers["content-type"].startswith("application/problem+json")
    finally:
        assert daemon.stop() == 0


def test_drift_is_reported_and_self_healed(make_repo: MakeRepo, forge: FakeForge) -> None:
    repo = make_repo()
    heal = config(forge).replace("    resync: 1h\n", "    resync: 1s\n    self_heal: true\n")
    first = repo.commit({"reconciler.yaml": heal, "apps/aa/score.yaml": workload("aa")})
    daemon = Daemon(repo, forge)
    try:
        eventually(lambda: final_note(repo, first), "the first commit's note")
        deployed = repo.git("rev-parse", "reconciler/deploy/staging")
        # Someone removes the workload's folder from the deploy branch by hand.
        tree = repo.git("mktree", "--missing")  # an empty tree
        tampered = repo.git("commit-tree", tree, "-p", deployed, "-m", "hand edit")
        repo.git("update-ref", "refs/heads/reconciler/deploy/staging", tampered, deployed)
        healed = eventually(
            lambda: (
                "aa/manifests.yaml"
                in repo.git("ls-tree", "-r", "--name-only", "reconciler/deploy/staging")
            ),
            "the deploy branch healed",
        )
        assert healed
        metrics = httpx.get(daemon.url + "/metrics").text
        assert "reconciler_drifted_resources" in metrics
    finally:
        assert daemon.stop() == 0


def pull_request(url: str, action: str, number: int, head: str, head_ref: str) -> httpx.Response:
    body = json.dumps(
        {
            "action": action,
            "number": number,
            "repository": {"full_name": "shop/apps"},
            "pull_request": {
                "head": {"sha": head, "ref": head_ref, "repo": {"full_name": "shop/apps"}},
                "base": {"ref": "main"},
            },
        }
    ).encode()
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": f"{action}-{head}",
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    return httpx.post(url + "/webhooks/github", content=body, headers=headers)


def test_pull_requests_get_one_preview_comment_kept_up_to_date(
    make_repo: MakeRepo, forge: FakeForge
) -> None:
    repo = make_repo()
    first = repo.commit({"reconciler.yaml": config(forge), "apps/aa/score.yaml": workload("aa")})
    daemon = Daemon(repo, forge)
    try:
        eventually(lambda: final_note(repo, first), "the main branch reconciled")
        repo.git("checkout", "-q", "-b", "feature")
        head = repo.commit({"apps/bb/score.yaml": workload("bb")})
        assert pull_request(daemon.url, "opened", 7, head, "feature").status_code == 202
        (comment,) = eventually(lambda: list(forge.comments.values()), "a preview comment")
        assert comment.number == 7
        assert "bb" in comment.body
        assert "<!-- reconciler:preview" in comment.body
        again = repo.commit({"apps/cc/score.yaml": workload("cc")})
        assert pull_request(daemon.url, "synchronize", 7, again, "feature").status_code == 202
        eventually(lambda: "cc" in next(iter(forge.comments.values())).body, "the comment updated")
        assert len(forge.comments) == 1
        assert "reconciler/deploy/staging" in repo.git("branch", "--list", "reconciler/*")
        deployed = repo.git("ls-tree", "-r", "--name-only", "reconciler/deploy/staging")
        assert "bb/manifests.yaml" not in deployed  # nothing is applied for a pull request
    finally:
        assert daemon.stop() == 0


def test_branches_matching_a_pattern_get_a_preview_note(
    make_repo: MakeRepo, forge: FakeForge
) -> None:
    repo = make_repo()
    settings = "environments:\n  staging:\n    branch: main\n    resync: 1h\n"
    settings += "previews:\n  branches: ['feature/*']\n"
    first = repo.commit({"reconciler.yaml": settings, "apps/aa/score.yaml": workload("aa")})
    daemon = Daemon(repo, forge)
    try:
        eventually(lambda: final_note(repo, first), "the main branch reconciled")
        repo.git("checkout", "-q", "-b", "feature/more")
        head = repo.commit({"apps/bb/score.yaml": workload("bb")})

        def preview_note() -> str | None:
            shown = subprocess.run(
                ["git", "notes", "--ref=reconciler-preview", "show", head],
                cwd=repo.root,
                capture_output=True,
                text=True,
                check=False,
            )
            return shown.stdout if shown.returncode == 0 else None

        note = eventually(preview_note, "the preview note on the branch head")
        assert "bb" in note
        assert "<!-- reconciler:preview" in note
        deployed = repo.git("ls-tree", "-r", "--name-only", "reconciler/deploy/staging")
        assert "bb/manifests.yaml" not in deployed
    finally:
        assert daemon.stop() == 0


FLAKY = """\
import json, pathlib, sys
request = json.load(sys.stdin)
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.write_text("failed once")
    sys.stderr.write("temporarily unavailable\\n")
    sys.exit(75)
outputs = {"url": "https://quota"}
print(json.dumps({"resource_state": {}, "resource_outputs": outputs, "shared_state": {}}))
"""


def test_a_step_that_fails_once_is_retried_and_counted(
    make_repo: MakeRepo, forge: FakeForge, tmp_path: Path
) -> None:
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY)
    provisioner = (
        f"- uri: cmd://python3\n  type: quota\n"
        f"  args: [{str(script)!r}, {str(tmp_path / 'marker')!r}]\n"
    )
    app = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: aa\n"
        "containers:\n  main:\n    image: nginx\n"
        "    variables:\n      QUOTA: ${resources.quota.url}\n"
        "resources:\n  quota:\n    type: quota\n"
    )
    repo = make_repo()
    first = repo.commit(
        {
            "reconciler.yaml": config(forge)
            + "retries: {max_attempts: 3, initial_backoff: 10ms, max_backoff: 50ms}\n"
            + "provisioners: [provisioners/*.yaml]\n",
            "provisioners/quota.yaml": provisioner,
            "apps/aa/score.yaml": app,
        }
    )
    daemon = Daemon(repo, forge)
    try:
        note = eventually(lambda: final_note(repo, first), "the commit's verdict")
        assert note["phase"] == "Succeeded"
        metrics = httpx.get(daemon.url + "/metrics").text
        retries = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("reconciler_step_retries_total ")
        ]
        assert retries == [1.0]
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("resync", ["1s", "1h"])
def test_approval_holds_the_commit_once_and_reconciler_approve_carries_it_out(
    make_repo: MakeRepo, forge: FakeForge, resync: str
) -> None:
    """With a resync an hour away, the verdict after approval still comes within seconds:
    the daemon notices the approved run's writes in the store."""
    repo = make_repo()
    gated = config(forge).replace(
        "    resync: 1h\n", f"    resync: {resync}\n    approval: required\n"
    )
    first = repo.commit({"reconciler.yaml": gated, "apps/aa/score.yaml": workload("aa")})
    daemon = Daemon(repo, forge)
    try:
        note = eventually(lambda: final_note(repo, first), "the commit's verdict")
        assert note["phase"] == "WaitingApproval"
        assert {r.body["state"] for r in forge.requests if r.sha == first} == {"pending"}
        approved = subprocess.run(
            [RECONCILER, "approve", note["run_id"]],
            cwd=repo.root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert "aa/manifests.yaml" in repo.git(
            "ls-tree", "-r", "--name-only", "reconciler/deploy/staging"
        )
        settled = eventually(
            lambda: phase_other_than(repo, first, "WaitingApproval"),
            "the verdict after approval",
        )
        assert settled["phase"] == "Succeeded"
        eventually(
            lambda: "success" in {r.body["state"] for r in forge.requests if r.sha == first},
            "the forge's status after approval",
        )
        metrics = httpx.get(daemon.url + "/metrics").text
        # One run waited; resyncs while it waited did not run it again and again.
        assert (
            'reconciler_runs_total{environment="staging",result="WaitingApproval"} 1.0' in metrics
        )
    finally:
        assert daemon.stop() == 0


def test_a_command_holding_the_environment_holds_the_daemon_back(
    make_repo: MakeRepo, forge: FakeForge
) -> None:
    """``reconciler apply`` (here its claim, taken in this process) and the daemon never
    apply one environment at once: the daemon waits for the command, then reconciles."""
    repo = make_repo()
    first = repo.commit({"reconciler.yaml": config(forge), "apps/aa/score.yaml": workload("aa")})
    daemon = Daemon(repo, forge)
    store = Store.open(f"sqlite:///{repo.root / '.git' / 'reconciler' / 'state.db'}")
    try:
        eventually(lambda: final_note(repo, first), "the first commit's verdict")
        with environment_lock(store, "staging", wait=30):
            second = repo.commit({"apps/bb/score.yaml": workload("bb")})
            eventually(
                lambda: any("environment claimed by a command" in line for line in daemon.lines),
                "the daemon to find the environment claimed",
            )
            assert not workload_notes(repo, second, "bb")
            assert "bb/manifests.yaml" not in repo.git(
                "ls-tree", "-r", "--name-only", "reconciler/deploy/staging"
            )
        note = eventually(lambda: final_note(repo, second), "the verdict once the command ended")
        assert note["phase"] == "Succeeded"
        assert "bb/manifests.yaml" in repo.git(
            "ls-tree", "-r", "--name-only", "reconciler/deploy/staging"
        )
    finally:
        store.close()
        assert daemon.stop() == 0
