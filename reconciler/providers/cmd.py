"""The ``cmd://`` driver: runs a provisioner program with score-k8s's JSON contract.

Who calls it: the engine, through ``registry.driver_for``. The program gets one JSON object on
stdin (``resource_uid``, ``resource_type``, ``resource_class``, ``resource_id``,
``resource_params``, ``resource_metadata``, ``source_workload``, ``workload_services``,
``resource_state``, ``shared_state``, and our ``environment``: ``{name, variables}``) and must
print one JSON object, ``{resource_state, resource_outputs, shared_state, manifests}``, nothing
else. A missing or null ``resource_state`` or ``resource_outputs`` means empty, and
``shared_state`` is JSON-merge-patched into the shared state, as score-k8s does.

Where the program is (the uri's host):

- ``cmd://python3``: a program on PATH; nothing may follow it;
- ``cmd://./x``, ``cmd://../x``: relative to ``base_dir``, the folder where the caller
  materialised the repository's scripts (the daemon reads commits without a work tree, so there
  is no checkout to be relative to);
- ``cmd://~/x``: under the home directory; ``cmd:///abs/x``: an absolute path.

The program runs in its own process group with ``base_dir`` as its working directory and the
reconciler's environment minus its own credentials; on timeout the whole group is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from reconciler.catalogue import Code
from reconciler.desired.provisioners import ProvisionerSet
from reconciler.desired.templating import merge_patch
from reconciler.providers.base import DriverError, Observation, ResourceRequest, ResourceResult
from reconciler.providers.template import provisioner_for, split_secrets

DEFAULT_TIMEOUT: Final = 60.0
OUTPUT_KEYS: Final = frozenset({"resource_state", "resource_outputs", "shared_state", "manifests"})
EX_TEMPFAIL: Final = 75
"""sysexits.h's "temporary failure": the one exit status the engine retries."""

_STDERR_TAIL: Final = 2000
_HIDDEN_VARIABLES: Final = frozenset(
    {
        "RECONCILER_SECRET_KEY",
        "RECONCILER_SECRET_KEY_FILE",
        "RECONCILER_POSTGRES_URL",
        "RECONCILER_STORE",
        "VAULT_TOKEN",
    }
)


class CmdDriver:
    """Runs ``cmd://`` provisioners; ``timeout`` is in seconds per call."""

    local = False  # a command: the engine starts other steps while it runs

    def __init__(
        self,
        provisioners: ProvisionerSet,
        *,
        base_dir: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._provisioners = provisioners
        self._base_dir = base_dir
        self._timeout = timeout

    def apply(self, request: ResourceRequest) -> ResourceResult:
        provisioner = provisioner_for(self._provisioners, request)
        argv = [str(program_path(provisioner.uri, self._base_dir)), *provisioner.args]
        stdout = self._run(argv, provisioner.uri, stdin_document(request))
        document = parse_output(provisioner.uri, stdout)
        outputs, hidden = split_secrets(
            document.get("resource_outputs") or {}, provisioner.secret_outputs
        )
        shared = document.get("shared_state")
        return ResourceResult(
            state=document.get("resource_state") or {},
            outputs=outputs,
            secrets=hidden,
            shared=request.shared if shared is None else merge_patch(request.shared, shared),
            manifests=tuple(document.get("manifests") or ()),
        )

    def delete(self, request: ResourceRequest) -> None:
        """The contract has no delete: what a program made outside the manifests is its own."""

    def observe(self, request: ResourceRequest) -> Observation:
        exists = bool(
            request.previous_state or request.previous_outputs or request.previous_secrets
        )
        return Observation(exists=exists, outputs=request.previous_outputs if exists else {})

    def _run(self, argv: list[str], uri: str, document: Mapping[str, Any]) -> bytes:
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self._base_dir,
                env=_child_environment(),
                start_new_session=True,
            )
        except OSError as exc:
            raise DriverError(
                Code.CMD_PROVISIONER_FAILED, f"{uri}: cannot start {argv[0]}: {exc.strerror}"
            ) from exc
        payload = json.dumps(document, sort_keys=True).encode()
        try:
            stdout, stderr = process.communicate(payload, timeout=self._timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(process)
            raise DriverError(
                Code.CMD_PROVISIONER_TIMEOUT,
                f"{uri}: no answer within {self._timeout:g} s; the process group was killed",
                retryable=True,
            ) from exc
        if process.returncode != 0:
            raise DriverError(
                Code.CMD_PROVISIONER_FAILED,
                f"{uri}: exited with status {process.returncode}: {_tail(stderr)}",
                retryable=process.returncode == EX_TEMPFAIL,
            )
        return stdout


def program_path(uri: str, base_dir: Path | None) -> Path:
    """Where the uri's program is, by score-k8s's host forms (see the module docstring)."""
    parts = urlsplit(uri)
    if parts.scheme != "cmd" or not uri.startswith("cmd://"):
        raise _invalid(uri, "is not a cmd:// uri")
    if "@" in parts.netloc or ":" in parts.netloc or parts.query or parts.fragment:
        raise _invalid(uri, "a cmd:// uri takes no user, port, query or fragment")
    host, path = parts.netloc, parts.path
    if host in (".", ".."):
        if base_dir is None:
            raise _invalid(uri, "a relative program needs the folder of the repository's files")
        return base_dir / f"{host}{path}"
    if host == "~":
        return Path.home() / path.lstrip("/")
    if host == "":
        if not path.startswith("/") or path == "/":
            raise _invalid(uri, "names no program")
        return Path(path)
    if path:
        raise _invalid(uri, "a program looked up on PATH takes no path after it")
    found = shutil.which(host)
    if found is None:
        raise DriverError(Code.CMD_PROVISIONER_FAILED, f"{uri}: '{host}' is not on PATH")
    return Path(found)


def stdin_document(request: ResourceRequest) -> dict[str, Any]:
    """score-k8s's input object, plus ``environment``."""
    return {
        "resource_uid": request.uid,
        "resource_type": request.type,
        "resource_class": request.class_,
        "resource_id": request.id,
        "resource_params": dict(request.params),
        "resource_metadata": dict(request.metadata),
        "source_workload": request.source_workload,
        "workload_services": dict(request.workload_services),
        "resource_state": dict(request.previous_state),
        "shared_state": dict(request.shared),
        "environment": {"name": request.environment, "variables": dict(request.variables)},
    }


def parse_output(uri: str, stdout: bytes) -> dict[str, Any]:
    """The program's answer, checked as strictly as score-k8s checks it."""
    try:
        document = json.loads(stdout)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad_output(uri, f"stdout is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise _bad_output(uri, "stdout must be one JSON object")
    unknown = sorted(set(document) - OUTPUT_KEYS)
    if unknown:
        raise _bad_output(uri, f"unknown key(s) {', '.join(map(repr, unknown))}")
    for key in ("resource_state", "resource_outputs", "shared_state"):
        if not isinstance(document.get(key, {}), dict | None):
            raise _bad_output(uri, f"'{key}' must be an object")
    manifests = document.get("manifests") or []
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        raise _bad_output(uri, "'manifests' must be a list of objects")
    return document


def _child_environment() -> dict[str, str]:
    """The reconciler's environment without the credentials a provisioner has no use for."""
    return {k: v for k, v in os.environ.items() if k not in _HIDDEN_VARIABLES}


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the program and whatever it started, then reap it so no zombie is left."""
    with contextlib.suppress(ProcessLookupError):  # it may have exited since the timeout
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def _tail(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    if len(text) > _STDERR_TAIL:
        text = "..." + text[-_STDERR_TAIL:]
    return text or "(no output on stderr)"


def _invalid(uri: str, reason: str) -> DriverError:
    return DriverError(Code.PROVISIONER_INVALID, f"'{uri}': {reason}")


def _bad_output(uri: str, reason: str) -> DriverError:
    return DriverError(Code.CMD_PROVISIONER_BAD_OUTPUT, f"{uri}: {reason}")
