"""The step kinds: what a ``shell``, ``http``, ``wait``, ``provision``, ``apply`` or ``approval``
step does once ``run`` has decided it runs, as a callable the engine calls with its context.

``run`` builds each callable with the template names of the moment (params, the outputs and
statuses of finished steps, ``item``); the callable renders its templates when it runs, so a
template error is a failure of that step, recorded like any other. Whatever reaches outside the
workflow's own processes (provisioning, applying, sleeping) comes through ``Actions``, which the
caller injects: the runner's real functions in a daemon, fakes in tests.

Failures are ``DriverError`` values with a code; those that retrying may fix (a non-zero exit,
a timeout, an HTTP error) are retryable, so a step's ``retries`` applies to them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from reconciler.catalogue import Code
from reconciler.engine import StepCancelled, StepContext
from reconciler.engine.backoff import Sleep, event_sleep
from reconciler.engine.steps import Outputs
from reconciler.providers.base import DriverError
from reconciler.workflows import expressions
from reconciler.workflows.model import (
    ACTION_UNAVAILABLE,
    HTTP_FAILED,
    OUTPUTS_INVALID,
    SHELL_FAILED,
    TEMPLATE_FAILED,
    ApplyStep,
    ApprovalStep,
    HttpStep,
    ProvisionStep,
    ShellOutputs,
    ShellStep,
    StepSpec,
    WaitStep,
)

if TYPE_CHECKING:
    import httpx

StepCall = Callable[[StepContext], Outputs]
ProvisionFn = Callable[[str, StepContext], Mapping[str, Any]]
"""Provision the resource with this uid (``type.class#id``); return its (non-secret) outputs."""
ApplyFn = Callable[[str, StepContext], Mapping[str, Any]]
"""Apply this environment; raise ``DriverError`` when the apply does not succeed."""

LOG_TAIL_LINES = 20
MAX_OUTPUTS_BYTES = 1024 * 1024
DEFAULT_HTTP_TIMEOUT = 30.0
_POLL = 0.05
_FALLBACK_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class Actions:
    """What steps reach outside the workflow through. A ``provision`` or ``apply`` step fails
    with a coded error where the caller gave no function for it."""

    provision: ProvisionFn | None = None
    apply: ApplyFn | None = None
    sleep: Sleep = event_sleep


def templated_fields(step: StepSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """Every templated string of a step, with its path inside the step (for the loader)."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(step.if_, str):
        found.append((("if",), step.if_))
    if isinstance(step.for_each, str):
        found.append((("for_each",), step.for_each))
    if isinstance(step, ShellStep):
        if isinstance(step.command, str):
            found.append((("command",), step.command))
        else:
            found.extend((("command", i), part) for i, part in enumerate(step.command))
        found.extend((("env", k), v) for k, v in sorted(step.env.items()))
    elif isinstance(step, HttpStep):
        request = step.request
        found.append((("request", "url"), request.url))
        found.extend((("request", "headers", k), v) for k, v in sorted(request.headers.items()))
        if request.body is not None:
            found.append((("request", "body"), request.body))
        found.extend(_strings(request.json_body, ("request", "json")))
    elif isinstance(step, ProvisionStep):
        found.append((("resource",), step.resource))
    elif isinstance(step, ApplyStep):
        found.append((("environment",), step.environment))
    elif isinstance(step, ApprovalStep) and step.message:
        found.append((("message",), step.message))
    return found


FieldPath = tuple[str | int, ...]


def _strings(value: Any, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key in sorted(value):
            yield from _strings(value[key], (*path, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, (*path, i))


def step_call(
    step: StepSpec, names: Mapping[str, Any], actions: Actions, timeout: float | None
) -> StepCall:
    """The callable the engine runs for one (expanded) step."""
    if isinstance(step, ShellStep):
        return _shell(step, names, timeout)
    if isinstance(step, HttpStep):
        return _http(step, names, timeout)
    if isinstance(step, WaitStep):
        return _wait(step, actions.sleep)
    if isinstance(step, ProvisionStep):
        return _provision(step, names, actions.provision)
    if isinstance(step, ApplyStep):
        return _apply(step, names, actions.apply)
    return _approved(step, names)


def _render(text: str, names: Mapping[str, Any]) -> str:
    try:
        return expressions.render(text, names)
    except expressions.TemplateError as exc:
        raise DriverError(TEMPLATE_FAILED, str(exc)) from exc


def _render_value(value: Any, names: Mapping[str, Any]) -> Any:
    try:
        return expressions.render_value(value, names)
    except expressions.TemplateError as exc:
        raise DriverError(TEMPLATE_FAILED, str(exc)) from exc


# -- shell -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    cancelled: bool = False


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    timeout: float | None,
    cancelled: threading.Event,
) -> ProcessResult:
    """Run a command in a session of its own; at the timeout, or when ``cancelled`` is set,
    kill its whole process group (a shell's children too), so nothing outlives the step."""
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        raise DriverError(SHELL_FAILED, f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    deadline = None if timeout is None else time.monotonic() + timeout
    with proc:
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                out, err = proc.communicate(timeout=_POLL if left is None else min(_POLL, left))
                return ProcessResult(proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                expired = deadline is not None and time.monotonic() >= deadline
                if expired or cancelled.is_set():
                    _kill_group(proc)
                    out, err = proc.communicate()
                    return ProcessResult(proc.returncode, out, err, expired, not expired)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


def _shell(step: ShellStep, names: Mapping[str, Any], timeout: float | None) -> StepCall:
    def run(ctx: StepContext) -> Outputs:
        if isinstance(step.command, str):
            argv = ["/bin/sh", "-c", _render(step.command, names)]
        else:
            argv = [_render(part, names) for part in step.command]
        env = {
            "PATH": os.environ.get("PATH", _FALLBACK_PATH),
            "HOME": os.environ.get("HOME", "/"),
        }
        env.update({k: _render(v, names) for k, v in sorted(step.env.items())})
        with tempfile.TemporaryDirectory(prefix="reconciler-step-") as cwd:
            result = run_process(argv, env=env, cwd=cwd, timeout=timeout, cancelled=ctx.cancelled)
            _log_tail(ctx, "stdout", result.stdout)
            _log_tail(ctx, "stderr", result.stderr)
            _check_exit(result, timeout)
            return {} if step.outputs is None else read_outputs(FsPath(cwd), step.outputs)

    return run


def _check_exit(result: ProcessResult, timeout: float | None) -> None:
    if result.cancelled:
        raise StepCancelled("the command was killed: the run was cancelled")
    if result.timed_out:
        raise DriverError(
            Code.STEP_TIMEOUT,
            f"command timed out after {timeout:g} s; its process group was killed",
            retryable=True,
        )
    if result.returncode != 0:
        last = _tail(result.stderr, 1) or _tail(result.stdout, 1)
        detail = f": {last[0]}" if last else ""
        raise DriverError(
            SHELL_FAILED, f"command exited with status {result.returncode}{detail}", retryable=True
        )


def _tail(text: str, lines: int) -> list[str]:
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _log_tail(ctx: StepContext, stream: str, text: str) -> None:
    for line in _tail(text, LOG_TAIL_LINES):
        ctx.log(f"{stream}: {line}")


def read_outputs(cwd: FsPath, spec: ShellOutputs) -> dict[str, Any]:
    """The outputs file the command wrote: one JSON object, or ``KEY=value`` lines."""
    path = cwd / spec.file
    try:
        if path.stat().st_size > MAX_OUTPUTS_BYTES:
            raise DriverError(OUTPUTS_INVALID, f"{spec.file} is larger than 1 MiB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DriverError(OUTPUTS_INVALID, f"the command did not write {spec.file}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DriverError(OUTPUTS_INVALID, f"cannot read {spec.file}: {exc}") from exc
    if spec.format == "json":
        return _json_outputs(text, spec.file)
    return _env_outputs(text, spec.file)


def _json_outputs(text: str, file: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DriverError(OUTPUTS_INVALID, f"{file} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DriverError(OUTPUTS_INVALID, f"{file} holds {type(data).__name__}, not an object")
    return data


def _env_outputs(text: str, file: str) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
            raise DriverError(OUTPUTS_INVALID, f"{file}:{number}: expected KEY=value")
        outputs[key.strip()] = value
    return outputs


# -- http --------------------------------------------------------------------------------------


def _http(step: HttpStep, names: Mapping[str, Any], timeout: float | None) -> StepCall:
    def run(ctx: StepContext) -> Outputs:
        request = step.request
        url = _render(request.url, names)
        headers = {k: _render(v, names) for k, v in sorted(request.headers.items())}
        body = None if request.body is None else _render(request.body, names)
        payload = None if request.json_body is None else _render_value(request.json_body, names)
        where = f"{request.method} {url}"
        # Imported when an http step runs: about 3.5 MiB and 60 modules (with click and
        # rich.progress) that a daemon whose workflows make no request would keep for nothing.
        import httpx  # noqa: PLC0415

        try:
            with httpx.Client(timeout=timeout or DEFAULT_HTTP_TIMEOUT) as client:
                response = client.request(
                    request.method, url, headers=headers, content=body, json=payload
                )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise DriverError(HTTP_FAILED, f"{where}: {exc}", retryable=True) from exc
        ctx.log(f"{where}: {response.status_code}")
        accepted = request.expect or tuple(range(200, 300))
        if response.status_code not in accepted:
            wanted = ", ".join(map(str, request.expect)) if request.expect else "2xx"
            raise DriverError(
                HTTP_FAILED,
                f"{where} answered {response.status_code}, expected {wanted}",
                retryable=True,
            )
        return {"status": response.status_code, "json": _json_or_none(response)}

    return run


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# -- wait, provision, apply, approval ----------------------------------------------------------


def _wait(step: WaitStep, sleep: Sleep) -> StepCall:
    def run(ctx: StepContext) -> Outputs:
        if sleep(step.duration.seconds, ctx.cancelled):
            raise StepCancelled(f"{ctx.step_id}: cancelled while waiting")
        return {"waited": str(step.duration)}

    return run


def _provision(step: ProvisionStep, names: Mapping[str, Any], fn: ProvisionFn | None) -> StepCall:
    def run(ctx: StepContext) -> Outputs:
        uid = _render(step.resource, names)
        if fn is None:
            raise DriverError(ACTION_UNAVAILABLE, f"cannot provision {uid}: no provisioner here")
        ctx.log(f"provisioning {uid}")
        return dict(fn(uid, ctx))

    return run


def _apply(step: ApplyStep, names: Mapping[str, Any], fn: ApplyFn | None) -> StepCall:
    def run(ctx: StepContext) -> Outputs:
        environment = _render(step.environment, names)
        if fn is None:
            raise DriverError(ACTION_UNAVAILABLE, f"cannot apply {environment}: no applier here")
        ctx.log(f"applying {environment}")
        return dict(fn(environment, ctx))

    return run


def _approved(step: ApprovalStep, names: Mapping[str, Any]) -> StepCall:
    """An approval step that runs has been approved (``run`` holds it back otherwise)."""

    def run(ctx: StepContext) -> Outputs:
        return {"approved": True, "message": _render(step.message, names)}

    return run
