"""Fixtures for workflow tests: a real SQLite store, a runner of workflow texts, a local HTTP
server that records what it receives."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reconciler.engine import Executor, RetryPolicy, StoreCheckpointer
from reconciler.store.store import Store
from reconciler.workflows import Actions, Runtime, WorkflowResult, load_workflow, resolve
from reconciler.workflows import run_workflow as run


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open("sqlite:///" + str(tmp_path / "state.db")) as opened:
        yield opened


def no_sleep(seconds: float, interrupt: threading.Event) -> bool:
    return False


RunText = Callable[..., tuple[WorkflowResult, str]]


@pytest.fixture
def run_text(store: Store) -> RunText:
    """``run_text(yaml, params, actions=, approved=, run_id=)`` → (result, run id)."""

    def go(
        text: str,
        params: dict[str, object] | None = None,
        *,
        actions: Actions | None = None,
        approved: bool = False,
        run_id: str | None = None,
        environment: str | None = "staging",
    ) -> tuple[WorkflowResult, str]:
        workflow, problems = load_workflow(text.encode(), "workflows/test.yaml")
        assert workflow is not None, [d.message for d in problems]
        values, problems = resolve(workflow, params or {})
        assert not problems, [d.message for d in problems]
        if run_id is None:
            run_id = store.create_run("staging", "0" * 40, trigger="workflow:test").id
        checkpointer = StoreCheckpointer(store)
        runtime = Runtime(
            executor=Executor(checkpointer, parallelism=2, sleep=no_sleep),
            checkpointer=checkpointer,
            run_id=run_id,
            environment=environment,
            actions=actions or Actions(sleep=no_sleep),
            approved=approved,
            retry=RetryPolicy(max_attempts=1, initial_backoff=0.0, jitter=0.0),
        )
        return run(workflow, values, runtime), run_id

    return go


@dataclass
class Server:
    """A real HTTP server on 127.0.0.1: answers ``status`` with ``body`` (JSON), and keeps every
    request it got as (method, path, headers, body)."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            state.requests.append((self.command, self.path, dict(self.headers), body))
            data = json.dumps(state.body).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
