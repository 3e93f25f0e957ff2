"""`reconciler apply` end to end: the real process, a real Git repository, the real PostgreSQL.

Every assertion is on what a user would check: databases and roles in PostgreSQL, files on the
deploy branch, the command's exit code and output.
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from reconciler.providers.postgres import names_for
from reconciler.store import Store
from reconciler.store.leases import LeaseManager
from tests.conftest import MakeRepo
from tests.e2e.test_cli_validate import RECONCILER
from tests.support.fake_kube import FakeKube
from tests.support.gitrepos import GitRepo

pytestmark = pytest.mark.slow

ADMIN = os.environ.get("RECONCILER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def workload(name: str, image: str = "nginx:1.27") -> str:
    return f"""\
apiVersion: score.dev/v1b1
metadata:
  name: {name}
containers:
  main:
    image: {image}
    variables:
      DB_HOST: ${{resources.db.host}}
      DB_NAME: ${{resources.db.name}}
      DB_URL: postgres://${{resources.db.username}}:${{resources.db.password}}@${{resources.db.host}}/${{resources.db.name}}
resources:
  db:
    type: postgres
"""


@pytest.fixture
def env_name() -> Iterator[str]:
    """A fresh environment name, so that databases never collide with another test's."""
    name = f"e2e-{secrets.token_hex(4)}"
    yield name
    with psycopg.connect(f"{ADMIN}/postgres", autocommit=True) as admin:
        prefix = name.replace("-", "_") + "%"
        for (db,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix,)
        ):
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        for (role,) in admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (prefix,)
        ):
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def run(
    repo: GitRepo, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "RECONCILER_POSTGRES_URL": f"{ADMIN}/postgres",
        **(env or {}),
    }
    return subprocess.run(
        [RECONCILER, *args],
        cwd=repo.root,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def databases(env: str) -> set[str]:
    prefix = env.replace("-", "_") + "%"
    with psycopg.connect(f"{ADMIN}/postgres", autocommit=True) as admin:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix,))
        return {r[0] for r in rows}


def config(env: str, extra: str = "") -> str:
    return f"environments:\n  {env}:\n    branch: main\n{extra}"


def deploy_file(repo: GitRepo, env: str, path: str) -> str:
    return repo.git("show", f"reconciler/deploy/{env}:{path}")


def test_apply_converges_and_follows_every_change(make_repo: MakeRepo, env_name: str) -> None:
    repo = make_repo()
    repo.commit(
        {
            "reconciler.yaml": config(env_name),
            "apps/orders/score.yaml": workload("orders"),
            "apps/billing/score.yaml": workload("billing"),
        }
    )
    first = run(repo, "apply", "--auto-approve")
    assert first.returncode == 0, first.stdout + first.stderr
    orders_db = names_for(env_name, "postgres.default#orders.db")
    billing_db = names_for(env_name, "postgres.default#billing.db")
    assert databases(env_name) == {orders_db, billing_db}
    manifests = deploy_file(repo, env_name, "orders/manifests.yaml")
    assert f"value: {orders_db}" in manifests  # DB_NAME resolved with the real output
    assert "secretKeyRef" in manifests or "$(__secret_" in manifests

    again = run(repo, "apply", "--auto-approve")
    assert again.returncode == 0
    assert "no changes" in again.stdout

    repo.commit({"apps/orders/score.yaml": workload("orders", "nginx:1.28")})
    changed = run(repo, "apply", "--auto-approve")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "image: nginx:1.28" in deploy_file(repo, env_name, "orders/manifests.yaml")
    assert databases(env_name) == {orders_db, billing_db}

    repo.commit({"apps/billing/score.yaml": None})
    removed = run(repo, "apply", "--auto-approve")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert databases(env_name) == {orders_db}
    files = repo.git("ls-tree", "-r", "--name-only", f"reconciler/deploy/{env_name}").split()
    assert not [f for f in files if f.startswith("billing/")]
    assert repo.git("status", "--porcelain") == ""


def test_approval_gate_waits_then_applies(make_repo: MakeRepo, env_name: str) -> None:
    repo = make_repo()
    repo.commit(
        {
            "reconciler.yaml": config(env_name, "    approval: required\n"),
            "apps/orders/score.yaml": workload("orders"),
        }
    )
    waiting = run(repo, "apply")
    assert waiting.returncode == 3, waiting.stdout + waiting.stderr
    assert databases(env_name) == set()
    run_id = waiting.stdout.split("reconciler approve ")[-1].strip()
    approved = run(repo, "approve", run_id)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert len(databases(env_name)) == 1
    assert "Succeeded" in run(repo, "runs").stdout


def test_apply_refuses_while_another_process_reconciles_the_environment(
    make_repo: MakeRepo, env_name: str
) -> None:
    """A daemon's run holds a workload's lease; ``apply`` neither resumes nor races that run:
    with ``--lock-timeout 0`` it refuses at once, naming the holder, and changes nothing."""
    repo = make_repo()
    repo.commit({"reconciler.yaml": config(env_name), "apps/orders/score.yaml": workload("orders")})
    store = Store.open(f"sqlite:///{repo.root / '.git' / 'reconciler' / 'state.db'}")
    try:
        replica = LeaseManager(store, "replica-7", 300.0)
        assert replica.try_acquire(f"workload/{env_name}/orders")
        refused = run(repo, "apply", "--auto-approve", "--lock-timeout", "0")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert (
            f"error RCN-5011 environment '{env_name}' is being reconciled by replica-7 "
            "(workload orders)"
        ) in refused.stderr
        assert store.list_runs(env_name) == []
        assert databases(env_name) == set()
        replica.release_all()
        applied = run(repo, "apply", "--auto-approve", "--lock-timeout", "0")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert replica.try_acquire(f"environment/{env_name}")  # the command let it go
    finally:
        store.close()


def _steps_checkpointed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as conn:
            return int(
                conn.execute("SELECT count(*) FROM steps WHERE status != 'Pending'").fetchone()[0]
            )
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("trial", range(int(os.environ.get("RECONCILER_KILL_TRIALS", "4"))))
def test_killed_apply_resumes_without_duplicates(
    make_repo: MakeRepo, env_name: str, trial: int
) -> None:
    """SIGKILL after the k-th checkpoint (k seeded), then apply again until it converges."""
    rng = __import__("random").Random(trial)
    repo = make_repo()
    apps = {f"apps/w{i}/score.yaml": workload(f"w{i}") for i in range(3)}
    repo.commit({"reconciler.yaml": config(env_name), **apps})
    db = repo.root / ".git" / "reconciler" / "state.db"
    kill_after = rng.randint(1, 6)
    env = {**os.environ, "NO_COLOR": "1", "RECONCILER_POSTGRES_URL": f"{ADMIN}/postgres"}
    proc = subprocess.Popen(
        [RECONCILER, "apply", "--auto-approve"],
        cwd=repo.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and _steps_checkpointed(db) < kill_after:
        assert time.monotonic() < deadline, "the apply made no progress"
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for _ in range(3):
        resumed = run(repo, "apply", "--auto-approve")
        if resumed.returncode == 0:
            break
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    expected = {names_for(env_name, f"postgres.default#w{i}.db") for i in range(3)}
    assert databases(env_name) == expected
    files = repo.git("ls-tree", "-r", "--name-only", f"reconciler/deploy/{env_name}").split()
    assert sorted(f.split("/")[0] for f in files if f.endswith("manifests.yaml")) == [
        "w0",
        "w1",
        "w2",
    ]
    assert "no changes" in run(repo, "apply", "--auto-approve").stdout


FAILING = """\
import json, sys
request = json.load(sys.stdin)
sys.stderr.write("quota exceeded for " + request["resource_uid"] + "\\n")
sys.exit(75)
"""

CANARY_PROVISIONER = """\
import json, sys
json.load(sys.stdin)
outputs = {"token": "CANARY-9c1e-7f2a", "url": "https://api"}
print(json.dumps({"resource_state": {}, "resource_outputs": outputs, "shared_state": {}}))
"""


def cmd_provisioner(script: Path, type_: str, secret: bool = False) -> str:
    secret_line = "  secret_outputs: [token]\n" if secret else ""
    return (
        f"- uri: cmd://python3\n  type: {type_}\n  args: [{str(script)!r}]\n"
        f"  expected_outputs: [token, url]\n{secret_line}"
    )


def test_failing_step_retries_then_rolls_back(
    make_repo: MakeRepo, env_name: str, tmp_path: Path
) -> None:
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    repo = make_repo()
    extra = (
        "    on_failure: rollback\n"
        "retries: {max_attempts: 3, initial_backoff: 10ms, max_backoff: 50ms}\n"
    )
    app = (
        workload("orders")
        .replace("resources:\n", "resources:\n  quota:\n    type: quota\n")
        .replace("    variables:\n", "    variables:\n      QUOTA: ${resources.quota.url}\n")
    )
    repo.commit(
        {
            "reconciler.yaml": config(env_name, extra) + "provisioners: [provisioners/*.yaml]\n",
            "provisioners/quota.yaml": cmd_provisioner(script, "quota"),
            "apps/orders/score.yaml": app,
        }
    )
    result = run(repo, "apply", "--auto-approve")
    assert result.returncode == 1
    assert "RCN-3003" in result.stdout
    assert "quota exceeded" in result.stdout
    assert "after 3 attempts" in result.stdout
    assert databases(env_name) == set()  # the database the run created was rolled back
    shown = run(repo, "runs")
    assert "Failed" in shown.stdout


def test_no_secret_leaves_the_secret_store(
    make_repo: MakeRepo, env_name: str, tmp_path: Path
) -> None:
    script = tmp_path / "canary.py"
    script.write_text(CANARY_PROVISIONER)
    repo = make_repo()
    app = (
        workload("orders")
        .replace("resources:\n", "resources:\n  api:\n    type: api-token\n")
        .replace("    variables:\n", "    variables:\n      TOKEN: ${resources.api.token}\n")
    )
    repo.commit(
        {
            "reconciler.yaml": config(env_name) + "provisioners: [provisioners/*.yaml]\n",
            "provisioners/api.yaml": cmd_provisioner(script, "api-token", secret=True),
            "apps/orders/score.yaml": app,
        }
    )
    outputs = [run(repo, "plan"), run(repo, "apply", "--auto-approve"), run(repo, "runs")]
    assert outputs[1].returncode == 0, outputs[1].stdout + outputs[1].stderr
    for out in outputs:
        assert "CANARY-9c1e-7f2a" not in out.stdout + out.stderr
    grep = subprocess.run(
        [
            "git",
            "grep",
            "-c",
            "CANARY-9c1e-7f2a",
            *repo.git("for-each-ref", "--format=%(refname)").split(),
        ],
        cwd=repo.root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert grep.stdout == ""
    for file in (repo.root / ".git" / "reconciler").glob("state.db*"):
        assert b"CANARY-9c1e-7f2a" not in file.read_bytes()
    manifests = deploy_file(repo, env_name, "orders/manifests.yaml")
    assert "TOKEN" in manifests


HOOK = """\
name: {name}
params:
  marker: {{type: string, default: "{marker}"}}
steps:
  - id: touch
    type: shell
    command: "echo {name} >> {{{{ params.marker }}}} && exit {code}"
"""


def test_hooks_run_around_the_apply_and_a_failing_one_stops_it(
    make_repo: MakeRepo, env_name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "hooks.log"
    repo = make_repo()
    hooks = "    hooks:\n      before_apply: [check]\n      after_apply: [announce]\n"
    repo.commit(
        {
            "reconciler.yaml": config(env_name, hooks),
            "workflows/check.yaml": HOOK.format(name="check", marker=marker, code=0),
            "workflows/announce.yaml": HOOK.format(name="announce", marker=marker, code=0),
            "apps/orders/score.yaml": workload("orders"),
        }
    )
    done = run(repo, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    assert marker.read_text().split() == ["check", "announce"]
    assert len(databases(env_name)) == 1

    repo.commit(
        {
            "workflows/check.yaml": HOOK.format(name="check", marker=marker, code=3),
            "apps/billing/score.yaml": workload("billing"),
        }
    )
    stopped = run(repo, "apply", "--auto-approve")
    assert stopped.returncode == 1
    assert "RCN-3055" in stopped.stdout
    assert len(databases(env_name)) == 1  # nothing of the new commit was applied


def test_the_kubernetes_target_applies_to_a_cluster(
    make_repo: MakeRepo, env_name: str, tmp_path: Path
) -> None:
    """The cluster is a FAKE Kubernetes API server speaking the real HTTP API
    (tests/support/fake_kube.py); everything else is real."""
    with FakeKube(token="kube-token") as kube:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
            f"clusters: [{{name: fake, cluster: {{server: '{kube.url}'}}}}]\n"
            "users: [{name: bot, user: {token: kube-token}}]\n"
            "contexts: [{name: fake, context: {cluster: fake, user: bot}}]\n"
        )
        repo = make_repo()
        app = workload("orders").replace("resources:\n  db:\n    type: postgres\n", "")
        app = "\n".join(line for line in app.splitlines() if "DB_" not in line) + "\n"
        app = app.replace("    variables:\n", "    variables:\n      MODE: live\n")
        repo.commit(
            {
                "reconciler.yaml": config(env_name, "    target: kubernetes\n"),
                "apps/orders/score.yaml": app,
            }
        )
        done = run(repo, "apply", "--auto-approve", env={"KUBECONFIG": str(kubeconfig)})
        assert done.returncode == 0, done.stdout + done.stderr
        deployment = kube.get("apps/v1", "deployments", env_name, "orders")
        labels = deployment["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "score-reconciler"
        containers = deployment["spec"]["template"]["spec"]["containers"]
        assert {"name": "MODE", "value": "live"} in containers[0]["env"]
        assert repo.git("branch", "--list", f"reconciler/deploy/{env_name}") == ""


BLOCKING = """\
import json, os, sys, time
json.load(sys.stdin)
open(os.environ["STARTED"], "w").close()
while not os.path.exists(os.environ["GATE"]):
    time.sleep(0.01)
print(json.dumps({"resource_state": {}, "resource_outputs": {"url": "u"}, "shared_state": {}}))
"""


def test_sigterm_checkpoints_exits_non_zero_and_the_next_apply_resumes(
    make_repo: MakeRepo, env_name: str, tmp_path: Path
) -> None:
    script = tmp_path / "blocking.py"
    script.write_text(BLOCKING)
    started, gate = tmp_path / "started", tmp_path / "gate"
    repo = make_repo()
    app = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: orders\n"
        "containers:\n  main:\n    image: nginx\n    variables:\n      URL: ${resources.slow.url}\n"
        "resources:\n  slow:\n    type: slow\n"
    )
    provisioner = f"- uri: cmd://python3\n  type: slow\n  args: [{str(script)!r}]\n"
    repo.commit(
        {
            "reconciler.yaml": config(env_name) + "provisioners: [provisioners/*.yaml]\n",
            "provisioners/slow.yaml": provisioner,
            "apps/orders/score.yaml": app,
        }
    )
    env = {**os.environ, "NO_COLOR": "1", "STARTED": str(started), "GATE": str(gate)}
    proc = subprocess.Popen(
        [RECONCILER, "apply", "--auto-approve"],
        cwd=repo.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the provisioner never started"
    proc.send_signal(signal.SIGTERM)
    gate.touch()  # the running step may finish; nothing new starts
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert "RCN-3005" in out  # interrupted: apply again to resume
    resumed = run(repo, "apply", "--auto-approve", env={"STARTED": str(started), "GATE": str(gate)})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "orders/manifests.yaml" in repo.git(
        "ls-tree", "-r", "--name-only", f"reconciler/deploy/{env_name}"
    )


def simple(name: str, image: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {name}\n"
        f"containers:\n  main:\n    image: {image}\n"
    )


def test_rollback_pins_a_workload_until_a_newer_commit_changes_it(
    make_repo: MakeRepo, env_name: str
) -> None:
    repo = make_repo()
    good = repo.commit(
        {"reconciler.yaml": config(env_name), "apps/web/score.yaml": simple("web", "web:1")}
    )
    assert run(repo, "apply", "--auto-approve").returncode == 0
    repo.commit({"apps/web/score.yaml": simple("web", "web:2"), "README.md": "v2"})
    assert run(repo, "apply", "--auto-approve").returncode == 0
    assert "image: web:2" in deploy_file(repo, env_name, "web/manifests.yaml")

    rolled = run(repo, "rollback", "web", "--to", good[:7])
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "image: web:1" in deploy_file(repo, env_name, "web/manifests.yaml")
    assert f"pinned to {good[:7]}" in run(repo, "status").stdout

    repo.commit({"README.md": "unrelated"})  # the pin holds across commits that leave web alone
    assert run(repo, "apply", "--auto-approve").returncode == 0
    assert "image: web:1" in deploy_file(repo, env_name, "web/manifests.yaml")

    repo.commit({"apps/web/score.yaml": simple("web", "web:3")})  # a newer change ends the pin
    assert run(repo, "apply", "--auto-approve").returncode == 0
    assert "image: web:3" in deploy_file(repo, env_name, "web/manifests.yaml")
    assert "pinned" not in run(repo, "status").stdout

    missing = run(repo, "rollback", "nope", "--to", good)
    assert missing.returncode == 1
    assert "RCN-2006" in missing.stderr


def test_sync_reconciles_the_environments_holding_a_workload_now(
    make_repo: MakeRepo, env_name: str
) -> None:
    repo = make_repo()
    repo.commit(
        {"reconciler.yaml": config(env_name), "apps/web/score.yaml": simple("web", "web:1")}
    )
    assert run(repo, "apply", "--auto-approve").returncode == 0
    repo.commit(
        {
            "apps/web/score.yaml": simple("web", "web:2"),
            "apps/api/score.yaml": simple("api", "api:1"),
        }
    )
    synced = run(repo, "sync", "web")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "image: web:2" in deploy_file(repo, env_name, "web/manifests.yaml")
    deployed = repo.git("ls-tree", "-r", "--name-only", f"reconciler/deploy/{env_name}")
    assert "api/manifests.yaml" not in deployed  # a sync of web applies web alone
    history = run(repo, "history", "web")
    assert history.returncode == 0
    assert [line.split()[3] for line in history.stdout.splitlines()[1:]] == ["update", "create"]
