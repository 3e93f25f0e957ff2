"""The cmd driver: real provisioner programs in real subprocesses, score-k8s's JSON contract."""

from __future__ import annotations

import json
import os
import select
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.catalogue import Code
from reconciler.desired.provisioners import ProvisionerSet, load_provisioners
from reconciler.providers.base import DriverError, ResourceRequest
from reconciler.providers.cmd import CmdDriver, program_path
from reconciler.providers.registry import driver_for

# One program for every case; the first argument says what it does.
PROGRAM = f"""#!{sys.executable}
import json, os, subprocess, sys
mode = sys.argv[1] if len(sys.argv) > 1 else "echo"
doc = json.load(sys.stdin)
if mode == "echo":
    count = doc["resource_state"].get("count", 0) + 1
    json.dump({{
        "resource_state": {{"count": count}},
        "resource_outputs": {{"input": doc, "args": sys.argv[1:], "cwd": os.getcwd(),
                              "token": "tok-" + doc["resource_id"],
                              "vault": os.environ.get("VAULT_TOKEN", "")}},
        "shared_state": {{"seen": {{doc["resource_id"]: True}}, "gone": None}},
        "manifests": [{{"kind": "ConfigMap"}}],
    }}, sys.stdout)
elif mode == "fail":
    sys.stderr.write("noise\\n" * 2000 + "the real reason\\n")
    sys.exit(int(sys.argv[2]))
elif mode == "hang":
    child = subprocess.Popen(["sleep", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    open(sys.argv[2], "w").write(str(child.pid))
    child.wait()
elif mode == "print":
    sys.stdout.write(sys.argv[2])
"""


def _write(folder: Path, name: str = "prov.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(PROGRAM)
    path.chmod(0o755)
    return path


def _set(uri: str, *args: str, type_: str = "thing", secret: str = "token") -> ProvisionerSet:
    arg_list = json.dumps(list(args))
    text = (
        f"- uri: {json.dumps(uri)}\n  type: {type_}\n  args: {arg_list}\n"
        f"  secret_outputs: [{secret}]\n"
    )
    found, problems = load_provisioners([("p.yaml", text.encode())])
    assert problems == []
    return found


def _request(uri: str, **changes: Any) -> ResourceRequest:
    request = ResourceRequest(
        environment="prod",
        uid="thing.default#shop.box",
        type="thing",
        class_="default",
        id="shop.box",
        params={"size": 3},
        metadata={"annotations": {"a": "b"}},
        source_workload="shop",
        provisioner_uri=uri,
        workload_services={"shop": {"service_name": "shop", "ports": {}}},
        variables={"domain": "example.com"},
        shared={"seen": {"other": True}, "gone": 1},
    )
    return replace(request, **changes)


def test_relative_program_gets_the_contract_and_its_answer_is_split(tmp_path: Path) -> None:
    base = tmp_path / "checkout"
    _write(base / "bin")
    driver = CmdDriver(_set("cmd://./bin/prov.py", "echo"), base_dir=base)
    result = driver.apply(_request("cmd://./bin/prov.py"))
    sent = result.outputs["input"]
    assert sent == {
        "resource_uid": "thing.default#shop.box",
        "resource_type": "thing",
        "resource_class": "default",
        "resource_id": "shop.box",
        "resource_params": {"size": 3},
        "resource_metadata": {"annotations": {"a": "b"}},
        "source_workload": "shop",
        "workload_services": {"shop": {"service_name": "shop", "ports": {}}},
        "resource_state": {},
        "shared_state": {"seen": {"other": True}, "gone": 1},
        "environment": {"name": "prod", "variables": {"domain": "example.com"}},
    }
    assert (result.outputs["args"], result.outputs["cwd"]) == (["echo"], str(base))
    assert result.secrets == {"token": "tok-shop.box"}
    assert "token" not in result.outputs
    assert result.state == {"count": 1}
    assert result.shared == {"seen": {"other": True, "shop.box": True}}
    assert result.manifests == ({"kind": "ConfigMap"},)


def test_state_is_handed_back_and_credentials_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "s.do-not-leak")
    _write(tmp_path)
    driver = CmdDriver(_set("cmd://./prov.py"), base_dir=tmp_path)
    first = driver.apply(_request("cmd://./prov.py"))
    second = driver.apply(_request("cmd://./prov.py", previous_state=first.state))
    assert second.state == {"count": 2}
    assert second.outputs["vault"] == ""


@pytest.mark.parametrize("form", ["path", "home", "absolute", "parent"])
def test_every_host_form_finds_the_program(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    script = _write(home / "tools")
    base = tmp_path / "home" / "checkout"
    base.mkdir()
    uri, args = {
        "path": ("cmd://python3", (str(script), "echo")),
        "home": ("cmd://~/tools/prov.py", ("echo",)),
        "absolute": (f"cmd://{script}", ("echo",)),
        "parent": ("cmd://../tools/prov.py", ("echo",)),
    }[form]
    driver = CmdDriver(_set(uri, *args), base_dir=base)
    assert driver.apply(_request(uri)).state == {"count": 1}


@pytest.mark.parametrize(
    "uri",
    [
        "cmd://user@python3",
        "cmd://python3:8080",
        "cmd://python3?x=1",
        "cmd://python3/extra",
        "cmd:///",
        "template://python3",
    ],
)
def test_uris_score_k8s_rejects_are_rejected(uri: str, tmp_path: Path) -> None:
    with pytest.raises(DriverError) as caught:
        program_path(uri, tmp_path)
    assert caught.value.code is Code.PROVISIONER_INVALID


def test_a_relative_program_needs_a_base_dir() -> None:
    with pytest.raises(DriverError) as caught:
        program_path("cmd://./prov.py", None)
    assert "folder" in caught.value.message


def test_a_program_missing_from_path_fails() -> None:
    with pytest.raises(DriverError) as caught:
        program_path("cmd://no-such-program-here", None)
    assert caught.value.code is Code.CMD_PROVISIONER_FAILED


@pytest.mark.parametrize(("status", "retryable"), [(3, False), (75, True)])
def test_non_zero_exit_fails_with_the_tail_of_stderr(
    tmp_path: Path, status: int, retryable: bool
) -> None:
    _write(tmp_path)
    driver = CmdDriver(_set("cmd://./prov.py", "fail", str(status)), base_dir=tmp_path)
    with pytest.raises(DriverError) as caught:
        driver.apply(_request("cmd://./prov.py"))
    error = caught.value
    assert (error.code, error.retryable) == (Code.CMD_PROVISIONER_FAILED, retryable)
    assert error.message.endswith("the real reason")
    assert f"status {status}" in error.message
    assert len(error.message) < 2200


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    _write(tmp_path)
    pid_file = tmp_path / "child.pid"
    driver = CmdDriver(
        _set("cmd://./prov.py", "hang", str(pid_file)), base_dir=tmp_path, timeout=0.5
    )
    with pytest.raises(DriverError) as caught:
        driver.apply(_request("cmd://./prov.py"))
    assert (caught.value.code, caught.value.retryable) == (Code.CMD_PROVISIONER_TIMEOUT, True)
    assert _exits_soon(int(pid_file.read_text())), "the grandchild 'sleep 30' survived"


def _exits_soon(pid: int) -> bool:
    """Whether ``pid`` has exited or does within 5 s (a pidfd is readable once it has)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], 5)
        return bool(readable)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("printed", "words"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "one JSON object"),
        ('{"resource_outputs": {}, "extra": 1}', "unknown key(s) 'extra'"),
        ('{"resource_state": [1]}', "'resource_state' must be an object"),
        ('{"manifests": [1]}', "'manifests' must be a list of objects"),
    ],
)
def test_output_is_strict(tmp_path: Path, printed: str, words: str) -> None:
    _write(tmp_path)
    driver = CmdDriver(_set("cmd://./prov.py", "print", printed), base_dir=tmp_path)
    with pytest.raises(DriverError) as caught:
        driver.apply(_request("cmd://./prov.py"))
    assert caught.value.code is Code.CMD_PROVISIONER_BAD_OUTPUT
    assert words in caught.value.message


def test_null_and_missing_keys_mean_empty(tmp_path: Path) -> None:
    _write(tmp_path)
    printed = '{"resource_state": null, "shared_state": null}'
    driver = CmdDriver(_set("cmd://./prov.py", "print", printed), base_dir=tmp_path)
    result = driver.apply(_request("cmd://./prov.py", previous_state={"old": 1}))
    assert (result.state, result.outputs, result.secrets) == ({}, {}, {})
    assert result.shared == {"seen": {"other": True}, "gone": 1}


def test_observe_and_registry(tmp_path: Path) -> None:
    provisioners = _set("cmd://./prov.py")
    driver = driver_for("cmd://./prov.py", provisioners=provisioners, base_dir=tmp_path)
    assert isinstance(driver, CmdDriver)
    assert driver.observe(_request("cmd://./prov.py")).exists is False
    assert driver.observe(_request("cmd://./prov.py", previous_state={"a": 1})).exists is True
