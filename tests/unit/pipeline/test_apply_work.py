"""The work of a first apply, counted, not timed: plans made and store transactions written.

Real Git repository, real SQLite store; the counters wrap the real functions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import reconciler.runner as runner_module
from reconciler.catalogue import Code
from reconciler.engine import Executor, RunResult, Step, StoreCheckpointer
from reconciler.gitops.repository import Repository
from reconciler.pipeline import EnvironmentPlan, open_source
from reconciler.providers.base import DriverError
from reconciler.providers.manifests import ManifestsTarget
from reconciler.runner import RunOutcome, apply_environment
from reconciler.services import services_for
from reconciler.store.store import Store
from tests.conftest import MakeRepo
from tests.reliability.conftest import command_provisioner, plain_workload, with_resource
from tests.support.gitrepos import GitRepo

CONFIG = "environments:\n  staging:\n    branch: main\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open("sqlite:///" + str(tmp_path / "state.db")) as opened:
        yield opened


def apply(repo: GitRepo, store: Store, executor: Executor | None = None) -> RunOutcome:
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    env = source.config.environments["staging"]
    services = services_for(store, repository, "staging", env)
    executor = executor or Executor(StoreCheckpointer(store))
    return apply_environment(repository, services, source, "staging", env, executor=executor)


def count_plans(monkeypatch: pytest.MonkeyPatch) -> list[EnvironmentPlan]:
    """Every plan ``runner`` makes, in order (the real ``plan_environment`` makes them)."""
    made: list[EnvironmentPlan] = []
    real = runner_module.plan_environment

    def counted(*args: object, **kwargs: object) -> EnvironmentPlan:
        planned = real(*args, **kwargs)  # type: ignore[arg-type]
        made.append(planned)
        return planned

    monkeypatch.setattr(runner_module, "plan_environment", counted)
    return made


def test_the_first_wave_reuses_the_plan_made_before_the_run(
    make_repo: MakeRepo, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One plan before the run (the first wave provisions from it: nothing was recorded in
    between) and one once the resources' outputs are recorded, for the workloads; a third
    plan of the same state as the first was made before."""
    repo = make_repo()
    repo.commit(
        {"reconciler.yaml": CONFIG}
        | {f"apps/{n}/score.yaml": plain_workload(n) for n in ("aa", "bb")}
    )
    plans = count_plans(monkeypatch)
    outcome = apply(repo, store)
    assert outcome.status == "Succeeded"
    assert len(plans) == 2
    assert set(store.recorded("staging").workloads) == {"aa", "bb"}


def test_a_write_between_the_plan_and_the_run_is_planned_again(
    make_repo: MakeRepo, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan made before the run is reused only while the store holds what it read: a
    hook (or another replica) recording something in between makes the first wave plan anew."""
    repo = make_repo()
    repo.commit({"reconciler.yaml": CONFIG, "apps/aa/score.yaml": plain_workload("aa")})
    plans = count_plans(monkeypatch)
    real_create_run = Store.create_run

    def create_run_then_write(self: Store, *args: object, **kwargs: object) -> object:
        run = real_create_run(self, *args, **kwargs)  # type: ignore[arg-type]
        self.set_workload_status("staging", ["nobody"], "Synced")  # replaces the token
        return run

    monkeypatch.setattr(Store, "create_run", create_run_then_write)
    assert apply(repo, store).status == "Succeeded"
    assert len(plans) == 3


def test_a_removal_made_before_an_interruption_is_published_by_the_resumed_run(
    make_repo: MakeRepo, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run interrupted after removing a workload, before publishing: the run that resumes
    it does not remove the workload again (its step is recorded Succeeded), and still takes
    its folder off the deploy branch, from what the store recorded of the first process."""
    repo = applied_then_bb_removed(make_repo, store)
    first, target = interrupt_publish(repo, store, monkeypatch, close=False)
    assert target.observe("staging", "bb").exists
    resumed = apply(repo, store)
    assert resumed.status == "Succeeded"
    assert resumed.run is not None
    assert first.run is not None
    assert resumed.run.id == first.run.id
    steps = {s.step_id: s for s in store.steps(first.run.id)}
    assert steps["workload:bb"].status == "Succeeded"
    assert steps["publish"].status == "Succeeded"
    assert not target.observe("staging", "bb").exists
    assert target.observe("staging", "aa").exists


def applied_then_bb_removed(make_repo: MakeRepo, store: Store) -> GitRepo:
    """Workloads aa and bb applied, then a commit removing bb (not applied yet)."""
    repo = make_repo()
    repo.commit(
        {"reconciler.yaml": CONFIG}
        | {f"apps/{n}/score.yaml": plain_workload(n) for n in ("aa", "bb")}
    )
    assert apply(repo, store).status == "Succeeded"
    (repo.root / "apps" / "bb" / "score.yaml").unlink()
    repo.commit({})
    return repo


def interrupt_publish(
    repo: GitRepo, store: Store, monkeypatch: pytest.MonkeyPatch, *, close: bool = True
) -> tuple[RunOutcome, ManifestsTarget]:
    """Apply HEAD with the process stopping in its publish; with ``close``, then close the run
    the way the daemon closes a dead process's run (``superseded``, ``reconciled by other
    runs``): the next apply is a new run, not this one resumed, so nothing but the store says
    what is pending."""
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    env = source.config.environments["staging"]
    services = services_for(store, repository, "staging", env)
    executor = Executor(StoreCheckpointer(store))

    def interrupted(target: ManifestsTarget, environment: str, message: str) -> str | None:
        executor.cancel()
        raise DriverError(Code.DEPLOY_BRANCH_WRITE_FAILED, "stopping", retryable=True)

    with monkeypatch.context() as patched:
        patched.setattr(ManifestsTarget, "flush", interrupted)
        first = apply_environment(repository, services, source, "staging", env, executor=executor)
    assert first.status == "Pending"
    assert first.run is not None
    if close:
        store.update_run(first.run.id, status="Failed", message="closed", finished=True)
    assert isinstance(services.target, ManifestsTarget)
    return first, services.target


def test_workloads_recorded_by_a_killed_run_are_published_by_the_next_one(
    make_repo: MakeRepo, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run recorded both workloads, then stopped before publishing them. The next run,
    of the same commit, must not find the environment in sync: the plan updates them (no
    field changed) and the run puts them on the deploy branch."""
    repo = make_repo()
    repo.commit(
        {"reconciler.yaml": CONFIG}
        | {f"apps/{n}/score.yaml": plain_workload(n) for n in ("aa", "bb")}
    )
    first, target = interrupt_publish(repo, store, monkeypatch)
    assert {w.status for w in store.recorded("staging").workloads.values()} == {"Unpublished"}
    assert not target.observe("staging", "aa").exists
    again = apply(repo, store)
    assert again.status == "Succeeded", again.message
    assert again.run is not None
    assert first.run is not None
    assert again.run.id != first.run.id
    assert again.plan is not None
    assert {(str(a.action), a.id) for a in again.plan.changes()} == {
        ("update", "aa"),
        ("update", "bb"),
    }
    assert target.observe("staging", "aa").exists
    assert target.observe("staging", "bb").exists
    assert {w.status for w in store.recorded("staging").workloads.values()} == {"Synced"}
    assert apply(repo, store).message == "no changes"


def test_a_removal_by_a_killed_run_is_published_by_the_next_one(
    make_repo: MakeRepo, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run removed a workload, then stopped before publishing the removal. Its record
    stays until a publish takes the folder off the branch, so the next run removes it again."""
    repo = applied_then_bb_removed(make_repo, store)
    _, target = interrupt_publish(repo, store, monkeypatch)
    assert store.recorded("staging").workloads["bb"].status == "Unpublished"
    assert target.observe("staging", "bb").exists
    again = apply(repo, store)
    assert again.status == "Succeeded", again.message
    assert again.plan is not None
    assert {(str(a.action), a.id) for a in again.plan.changes()} == {("delete", "bb")}
    assert not target.observe("staging", "bb").exists
    assert target.observe("staging", "aa").exists
    assert set(store.recorded("staging").workloads) == {"aa"}
    assert apply(repo, store).message == "no changes"


def test_a_workload_a_killed_run_added_then_a_commit_removed_is_not_kept(
    make_repo: MakeRepo, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commit B adds bb; its run records bb and is killed (closed later). Commit C removes bb
    again: C's tree is the last reconciled commit's, so nothing changed since it, and bb's
    record, made at B, must still not be taken for a workload at C."""
    repo = make_repo()
    repo.commit({"reconciler.yaml": CONFIG, "apps/aa/score.yaml": plain_workload("aa")})
    assert apply(repo, store).status == "Succeeded"
    repo.commit({"apps/bb/score.yaml": plain_workload("bb")})
    _, target = interrupt_publish(repo, store, monkeypatch)
    assert "bb" in store.recorded("staging").workloads
    (repo.root / "apps" / "bb" / "score.yaml").unlink()
    repo.commit({})
    again = apply(repo, store)
    assert again.status == "Succeeded", again.message
    assert again.plan is not None
    assert {(str(a.action), a.id) for a in again.plan.changes()} == {
        ("delete", "bb"),
        ("delete", "redis.default#bb.cache"),
    }
    assert set(store.recorded("staging").workloads) == {"aa"}
    assert not target.observe("staging", "bb").exists
    assert store.plan_inputs("staging").unsettled == frozenset()


def test_a_change_a_killed_run_recorded_then_a_commit_reverted_is_reverted(
    make_repo: MakeRepo, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commit B changes aa's image; its run records aa at B and is killed. Commit C puts the
    image back: nothing changed since the last reconciled commit, yet the record holds B's
    image, so the plan updates aa back rather than publishing B's."""
    repo = make_repo()
    repo.commit({"reconciler.yaml": CONFIG, "apps/aa/score.yaml": plain_workload("aa")})
    assert apply(repo, store).status == "Succeeded"
    first = repo.commit({"apps/aa/score.yaml": plain_workload("aa", "nginx:1.28")})
    interrupt_publish(repo, store, monkeypatch)
    assert store.recorded("staging").workloads["aa"].commit == first
    assert store.plan_inputs("staging").unsettled == {first}
    repo.commit({"apps/aa/score.yaml": plain_workload("aa")})
    again = apply(repo, store)
    assert again.status == "Succeeded", again.message
    assert again.plan is not None
    [action] = again.plan.changes()
    assert (str(action.action), action.id) == ("update", "aa")
    assert [(c.path, c.old, c.new) for c in action.changes] == [
        ("containers.main.image", "nginx:1.28", "nginx:1.27")
    ]
    branch = Repository.open(repo.root).branch_head("reconciler/deploy/staging")
    assert branch is not None
    manifests = Repository.open(repo.root).tree(branch).read("aa/manifests.yaml")
    assert b"nginx:1.27" in manifests
    assert b"nginx:1.28" not in manifests


COMMAND_PROVISIONER = """\
import json, sys
json.load(sys.stdin)
print(json.dumps({"resource_state": {}, "resource_outputs": {"url": "u"}, "shared_state": {}}))
"""


class InlineMarks(Executor):
    """The real executor, noting which steps the runner handed it as ``inline``."""

    def __init__(self, store: Store) -> None:
        super().__init__(StoreCheckpointer(store))
        self.inline: dict[str, bool] = {}

    def run(self, run_id: str, steps: Sequence[Step], *, rollback: bool = False) -> RunResult:
        self.inline.update((s.id, s.inline) for s in steps)
        return super().run(run_id, steps, rollback=rollback)


def test_steps_that_only_compute_run_inline_and_a_command_on_a_worker(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    """A template resource, the manifests target's workload step and its publish only compute
    (the executor's own thread makes them); a ``cmd://`` resource runs a command."""
    script = tmp_path / "queue.py"
    script.write_text(COMMAND_PROVISIONER)
    provisioner = command_provisioner(script, "queue")
    workload = with_resource(plain_workload("aa"), "jobs", "queue")
    repo = make_repo()
    repo.commit(
        {
            "reconciler.yaml": CONFIG + "provisioners: [provisioners/*.yaml]\n",
            "provisioners/queue.yaml": provisioner,
            "apps/aa/score.yaml": workload,
        }
    )
    executor = InlineMarks(store)
    outcome = apply(repo, store, executor)
    assert outcome.status == "Succeeded", outcome.message
    resources = {sid: inline for sid, inline in executor.inline.items() if "resource:" in sid}
    assert {sid.split(".")[0]: inline for sid, inline in resources.items()} == {
        "resource:queue": False,
        "resource:redis": True,
    }
    assert {sid: executor.inline[sid] for sid in ("workload:aa", "publish")} == {
        "workload:aa": True,
        "publish": True,
    }
