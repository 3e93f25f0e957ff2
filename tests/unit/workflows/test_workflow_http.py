"""http steps against a real server on 127.0.0.1, and hooks around an apply."""

from __future__ import annotations

import json

from reconciler.engine import Executor, StoreCheckpointer
from reconciler.store.store import Store
from reconciler.workflows import Runtime, Status, load_workflow, run_hooks
from tests.unit.workflows.conftest import RunText, Server

NOTIFY = """\
name: notify
params:
  base: {type: string, required: true}
  tier: {type: enum, values: [gold, silver], default: gold}
steps:
  - id: get
    type: http
    request: {url: "{{ params.base }}/status"}
  - id: post
    type: http
    needs: [get]
    request:
      method: POST
      url: "{{ params.base }}/hooks?env={{ env }}"
      headers: {X-Tier: "{{ params.tier }}"}
      json: {seen: "{{ steps.get.outputs.json.ok }}", tags: ["{{ params.tier }}", 2]}
      expect: [200, 201]
"""


def test_http_steps_send_templated_requests_and_expose_the_response_json(
    run_text: RunText, server: Server
) -> None:
    server.body = {"ok": True, "version": "1.2"}
    result, _ = run_text(NOTIFY, {"base": server.url})
    assert result.status is Status.SUCCEEDED, result.message
    assert result.steps["get"].outputs == {"status": 200, "json": {"ok": True, "version": "1.2"}}
    method, path, headers, body = server.requests[1]
    assert (method, path) == ("POST", "/hooks?env=staging")
    assert headers["X-Tier"] == "gold"
    assert json.loads(body) == {"seen": "True", "tags": ["gold", 2]}


def test_an_unexpected_status_fails_the_step_and_retries_apply(
    run_text: RunText, server: Server
) -> None:
    server.status = 503
    text = NOTIFY.replace("    request: {url:", "    retries: 1\n    request: {url:", 1)
    result, _ = run_text(text, {"base": server.url})
    assert result.status is Status.FAILED
    assert "answered 503, expected 2xx" in result.steps["get"].message
    assert len(server.requests) == 2
    assert result.steps["post"].status is Status.SKIPPED


def test_a_refused_connection_is_a_coded_failure(run_text: RunText, server: Server) -> None:
    result, _ = run_text(NOTIFY, {"base": "http://127.0.0.1:9"})
    assert result.status is Status.FAILED
    assert result.steps["get"].message.startswith("GET http://127.0.0.1:9/status: ")


def test_hooks_run_in_order_inside_the_callers_run_and_stop_at_a_failure(
    run_text: RunText, server: Server, store: Store
) -> None:
    ok, _ = load_workflow(
        b"name: ping\nsteps:\n  - id: ping\n    type: shell\n    command: 'true'\n", "a.yaml"
    )
    broken, _ = load_workflow(
        b"name: broken\nsteps:\n  - id: fail\n    type: shell\n    command: 'exit 3'\n", "b.yaml"
    )
    assert ok is not None
    assert broken is not None
    # Borrow the fixture's runtime shape: run one workflow to get a run id, then hooks in it.
    _, run_id = run_text(NOTIFY, {"base": server.url})
    runtime = _runtime(store, run_id)
    workflows = {"ping": ok, "broken": broken}
    result = run_hooks(
        "before_apply",
        "staging",
        names=["ping", "broken", "ping"],
        workflows=workflows,
        runtime=runtime,
    )
    assert result.status is Status.FAILED
    assert not result.ok
    assert [r.workflow for r in result.results] == ["ping", "broken"]
    assert result.message.startswith("before_apply hook 'broken' Failed: fail: command exited")
    ids = {s.step_id for s in store.steps(run_id)}
    assert {"hook:before_apply:ping:ping", "hook:before_apply:broken:fail"} <= ids


def test_hooks_naming_an_unknown_workflow_fail_before_running_anything(
    store: Store, run_text: RunText, server: Server
) -> None:
    _, run_id = run_text(NOTIFY, {"base": server.url})
    result = run_hooks(
        "after_apply",
        "staging",
        names=["notfy", "notify"],
        workflows={"notify": load_workflow(NOTIFY.encode(), "n.yaml")[0]},  # type: ignore[dict-item]
        runtime=_runtime(store, run_id),
    )
    assert result.status is Status.FAILED
    assert result.results == ()
    messages = [d.message for d in result.diagnostics]
    assert messages == [
        "no workflow 'notfy'",
        "hook 'notify': param 'base' is required by workflow 'notify'",
    ]
    assert result.diagnostics[0].hint == "did you mean 'notify'?"


def _runtime(store: Store, run_id: str) -> Runtime:
    checkpointer = StoreCheckpointer(store)
    return Runtime(executor=Executor(checkpointer), checkpointer=checkpointer, run_id=run_id)
