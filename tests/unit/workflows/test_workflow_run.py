"""Running workflows: real shell processes, a real SQLite store, the engine in waves."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.catalogue import Code
from reconciler.engine import StepContext
from reconciler.providers.base import DriverError
from reconciler.store.store import Store
from reconciler.workflows import Actions, Status
from tests.unit.workflows.conftest import RunText, no_sleep


def single(*lines: str) -> str:
    """A workflow of one step ``s``, from the step's lines after ``id``."""
    return "name: single\nsteps:\n  - id: s\n" + "".join(f"    {line}\n" for line in lines)


OUTPUTS_THEN_TEMPLATE = """\
name: chain
params:
  who: {type: string, default: world}
steps:
  - id: make
    type: shell
    command: ["/bin/sh", "-c", "printf '{\\"greeting\\": \\"hello %s\\"}' \\"$WHO\\" > out.json"]
    env: {WHO: "{{ params.who }}"}
    outputs: {file: out.json, format: json}
  - id: use
    type: shell
    needs: [make]
    command: "test '{{ steps.make.outputs.greeting }}' = 'hello ada' && echo KEY=ok > o.env"
    outputs: {file: o.env, format: env}
"""


def test_outputs_of_a_shell_step_reach_a_later_template(run_text: RunText, store: Store) -> None:
    result, run_id = run_text(OUTPUTS_THEN_TEMPLATE, {"who": "ada"})
    assert result.status is Status.SUCCEEDED, result.message
    assert result.steps["make"].outputs == {"greeting": "hello ada"}
    assert result.steps["use"].outputs == {"KEY": "ok"}
    recorded = {s.step_id: s.status for s in store.steps(run_id)}
    assert recorded == {"make": "Succeeded", "use": "Succeeded"}


def test_a_failing_command_is_a_coded_failure_with_its_stderr_in_the_log(
    run_text: RunText, store: Store
) -> None:
    result, run_id = run_text(single("type: shell", "command: 'echo bad thing >&2; exit 7'"))
    assert result.status is Status.FAILED
    assert result.exit_code == 1
    assert "exited with status 7: bad thing" in result.steps["s"].message
    (record,) = store.steps(run_id)
    assert "stderr: bad thing" in record.log


def test_retries_run_a_failing_step_again_until_it_succeeds(
    run_text: RunText, tmp_path: Path, store: Store
) -> None:
    counter = tmp_path / "count"
    text = f"""\
name: flaky
steps:
  - id: flaky
    type: shell
    retries: 2
    command: "echo x >> {counter}; test $(wc -l < {counter}) -ge 3"
"""
    result, run_id = run_text(text)
    assert result.status is Status.SUCCEEDED
    assert counter.read_text().count("x") == 3
    assert store.steps(run_id)[0].attempt == 3


def test_retries_give_up_after_the_last_attempt(run_text: RunText, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    result, _ = run_text(
        single("type: shell", "retries: 1", f"command: 'echo x >> {counter}; exit 1'")
    )
    assert result.status is Status.FAILED
    assert result.steps["s"].error_code is Code.RETRIES_EXHAUSTED
    assert counter.read_text().count("x") == 2


def test_a_timeout_kills_the_whole_process_group(run_text: RunText, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The shell starts a background child that would outlive a kill of the shell alone.
    text = f"""\
name: slow
steps:
  - id: slow
    type: shell
    timeout: 300ms
    command: "sleep 30 & echo $! > {pid_file}; wait"
"""
    result, _ = run_text(text)
    assert result.status is Status.FAILED
    assert result.steps["slow"].error_code is Code.STEP_TIMEOUT
    # The child held the step's stdout open: the step ended only once it was dead.
    assert not _alive(int(pid_file.read_text()))


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a killed child not yet reaped by init is a zombie: not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_shell_env_holds_only_path_home_and_the_given_variables(run_text: RunText) -> None:
    text = """\
name: envs
steps:
  - id: e
    type: shell
    command: "env > out.env"
    env: {ONE: "1"}
    outputs: {file: out.env, format: env}
"""
    os.environ["WORKFLOW_TEST_SECRET"] = "leak"
    try:
        result, _ = run_text(text)
    finally:
        del os.environ["WORKFLOW_TEST_SECRET"]
    outputs = result.steps["e"].outputs
    assert outputs["ONE"] == "1"
    assert "WORKFLOW_TEST_SECRET" not in outputs
    assert {"PATH", "HOME"} <= set(outputs)


def test_outputs_that_are_not_a_json_object_fail_the_step(run_text: RunText) -> None:
    text = """\
name: bad-out
steps:
  - id: s
    type: shell
    command: "echo '[1, 2]' > out.json"
    outputs: {file: out.json}
"""
    result, _ = run_text(text)
    assert result.status is Status.FAILED
    assert "out.json holds list, not an object" in result.steps["s"].message


WHEN = """\
name: branches
params:
  fail: {type: bool, default: false}
steps:
  - id: build
    type: shell
    command: "{{ 'exit 1' if params.fail else 'true' }}"
  - id: deploy
    type: shell
    needs: [build]
    command: "true"
  - id: verify
    type: shell
    needs: [deploy]
    command: "true"
  - id: cleanup
    type: shell
    needs: [build]
    when: on_failure
    command: "true"
  - id: report
    type: shell
    needs: [verify, cleanup]
    when: always
    command: "echo 'STATUS={{ steps.verify.status }}' > o.env"
    outputs: {file: o.env, format: env}
"""


def test_when_on_success_failure_and_always_after_a_success(run_text: RunText) -> None:
    result, _ = run_text(WHEN, {"fail": False})
    statuses = {sid: r.status for sid, r in result.steps.items()}
    assert statuses == {
        "build": Status.SUCCEEDED,
        "deploy": Status.SUCCEEDED,
        "verify": Status.SUCCEEDED,
        "cleanup": Status.SKIPPED,
        "report": Status.SUCCEEDED,
    }
    assert result.steps["report"].outputs == {"STATUS": "Succeeded"}
    assert result.status is Status.SUCCEEDED


def test_when_on_success_failure_and_always_after_a_failure(
    run_text: RunText, store: Store
) -> None:
    result, run_id = run_text(WHEN, {"fail": True})
    statuses = {sid: r.status for sid, r in result.steps.items()}
    assert statuses == {
        "build": Status.FAILED,
        "deploy": Status.SKIPPED,
        "verify": Status.SKIPPED,  # skipped transitively, though its own need did not fail
        "cleanup": Status.SUCCEEDED,
        "report": Status.SUCCEEDED,
    }
    assert result.steps["verify"].error_code is Code.DEPENDENCY_FAILED
    assert result.steps["report"].outputs == {"STATUS": "Skipped"}
    assert result.status is Status.FAILED
    assert result.message.startswith("build: command exited with status 1")
    recorded = {s.step_id: s.status for s in store.steps(run_id)}
    assert recorded["deploy"] == recorded["verify"] == "Skipped"


def test_if_false_skips_without_failing_and_dependents_still_run(run_text: RunText) -> None:
    text = """\
name: optional
params:
  verbose: {type: bool, default: false}
steps:
  - id: noisy
    type: shell
    if: "{{ params.verbose }}"
    command: "exit 1"
  - id: after
    type: shell
    needs: [noisy]
    command: "true"
"""
    result, _ = run_text(text)
    assert result.steps["noisy"].status is Status.SKIPPED
    assert result.steps["noisy"].message == "if: false"
    assert result.steps["after"].status is Status.SUCCEEDED
    assert result.status is Status.SUCCEEDED
    result, _ = run_text(text, {"verbose": "true"})
    assert result.steps["noisy"].status is Status.FAILED


def test_for_each_expands_per_item_with_if_per_item(run_text: RunText, store: Store) -> None:
    text = """\
name: fan-out
steps:
  - id: list
    type: shell
    command: "echo '{\\"regions\\": [\\"eu\\", \\"us\\", \\"ap\\"]}' > o.json"
    outputs: {file: o.json}
  - id: per-region
    type: shell
    needs: [list]
    for_each: "{{ steps.list.outputs.regions }}"
    if: "{{ item != 'us' }}"
    command: "echo R={{ item }}-{{ env }} > o.env"
    outputs: {file: o.env, format: env}
  - id: sum
    type: shell
    needs: [per-region]
    command: >-
      test '{{ steps['per-region'].outputs | map(attribute='R', default='-') | join(',') }}'
      = 'eu-staging,-,ap-staging'
"""
    result, run_id = run_text(text)
    assert result.status is Status.SUCCEEDED, result.message
    assert result.steps["per-region"].outputs == [{"R": "eu-staging"}, None, {"R": "ap-staging"}]
    recorded = {s.step_id: s.status for s in store.steps(run_id)}
    assert recorded["per-region[0]"] == "Succeeded"
    assert recorded["per-region[1]"] == "Skipped"
    assert recorded["per-region[2]"] == "Succeeded"


def test_for_each_that_is_not_a_list_fails_the_step(run_text: RunText) -> None:
    result, _ = run_text(single("type: shell", "for_each: '{{ 3 }}'", "command: 'true'"))
    assert result.status is Status.FAILED
    assert "for_each gave int, not a list" in result.steps["s"].message


def test_an_undefined_name_in_a_template_fails_the_step(run_text: RunText) -> None:
    text = "name: wf-x\nsteps:\n  - id: s\n    type: shell\n    command: 'echo {{ params.nope }}'\n"
    result, _ = run_text(text)
    assert result.status is Status.FAILED
    assert "nope" in result.steps["s"].message


def test_a_wait_step_waits_through_the_injected_sleep(run_text: RunText) -> None:
    waits: list[float] = []

    def sleep(seconds: float, interrupt: threading.Event) -> bool:
        waits.append(seconds)
        return False

    text = "name: wf-w\nsteps:\n  - id: settle\n    type: wait\n    duration: 1m30s\n"
    result, _ = run_text(text, actions=Actions(sleep=sleep))
    assert result.status is Status.SUCCEEDED
    assert waits == [90.0]
    assert result.steps["settle"].outputs == {"waited": "1m30s"}


APPROVAL = """\
name: gated
steps:
  - id: before
    type: shell
    command: "echo A=1 > o.env"
    outputs: {file: o.env, format: env}
  - id: gate
    type: approval
    needs: [before]
    message: "ship {{ steps.before.outputs.A }}?"
  - id: side
    type: shell
    command: "true"
  - id: after
    type: shell
    needs: [gate]
    command: "true"
"""


def test_an_approval_step_leaves_the_run_waiting_and_approval_resumes_it(
    run_text: RunText, store: Store
) -> None:
    result, run_id = run_text(APPROVAL)
    assert result.status is Status.WAITING
    assert result.exit_code == 3
    assert "after" not in result.steps
    assert result.steps["side"].status is Status.SUCCEEDED
    records = {s.step_id: s for s in store.steps(run_id)}
    assert records["gate"].status == "Pending"
    assert records["gate"].message == "waiting for approval: ship 1?"
    resumed, _ = run_text(APPROVAL, approved=True, run_id=run_id)
    assert resumed.status is Status.SUCCEEDED
    assert resumed.steps["gate"].outputs == {"approved": True, "message": "ship 1?"}
    assert {s.step_id: s.status for s in store.steps(run_id)}["after"] == "Succeeded"


def test_provision_and_apply_go_through_injected_actions(run_text: RunText) -> None:
    calls: list[tuple[str, str]] = []

    def provision(uid: str, ctx: StepContext) -> Mapping[str, Any]:
        calls.append(("provision", uid))
        return {"host": "db.local"}

    def apply(environment: str, ctx: StepContext) -> Mapping[str, Any]:
        calls.append(("apply", environment))
        raise DriverError(Code.STEP_FAILED, "cluster said no")

    text = """\
name: ship
steps:
  - id: db
    type: provision
    resource: "postgres.default#{{ env }}-db"
  - id: deploy
    type: apply
    needs: [db]
    environment: "{{ env }}"
"""
    result, _ = run_text(text, actions=Actions(provision=provision, apply=apply, sleep=no_sleep))
    assert calls == [("provision", "postgres.default#staging-db"), ("apply", "staging")]
    assert result.steps["db"].outputs == {"host": "db.local"}
    assert result.steps["deploy"].message == "cluster said no"
    assert result.status is Status.FAILED


def test_provision_without_an_injected_action_is_a_coded_failure(run_text: RunText) -> None:
    text = "name: wf-p\nsteps:\n  - id: db\n    type: provision\n    resource: 'postgres#db'\n"
    result, _ = run_text(text)
    assert result.status is Status.FAILED
    assert "no provisioner here" in result.steps["db"].message
