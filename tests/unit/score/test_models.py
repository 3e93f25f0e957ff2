"""The Score models: defaults, normalisation of the deprecated forms, strictness, round trips."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from reconciler.score.models import ContainerFile, ContainerVolume, Workload

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "score" / "samples"


def _doc(**container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "score.dev/v1b1",
        "metadata": {"name": "web-app"},
        "containers": {"main": {"image": "nginx", **container}},
    }


def _with_service(ports: dict[str, Any]) -> dict[str, Any]:
    return {**_doc(), "service": {"ports": ports}}


# -- service ports ---------------------------------------------------------------------------


def test_target_port_defaults_to_port() -> None:
    workload = Workload.from_data(_with_service({"web": {"port": 8080}}))
    assert workload.service is not None
    assert workload.service.ports is not None
    port = workload.service.ports["web"]
    assert port.target_port == 8080
    assert port.declared_target_port is None


def test_target_port_when_given() -> None:
    workload = Workload.from_data(_with_service({"web": {"port": 80, "targetPort": 8080}}))
    assert workload.service is not None
    assert workload.service.ports is not None
    assert workload.service.ports["web"].target_port == 8080


def test_protocol_defaults_to_tcp_and_is_not_invented_in_the_dump() -> None:
    workload = Workload.from_data(_with_service({"web": {"port": 80}}))
    assert workload.service is not None
    assert workload.service.ports is not None
    assert workload.service.ports["web"].protocol == "TCP"
    assert workload.to_data()["service"]["ports"]["web"] == {"port": 80}


def test_udp_protocol_is_kept() -> None:
    workload = Workload.from_data(_with_service({"dns": {"port": 53, "protocol": "UDP"}}))
    assert workload.service is not None
    assert workload.service.ports is not None
    assert workload.service.ports["dns"].protocol == "UDP"


@pytest.mark.parametrize("value", [8080.0, 1.0, 65535.0])
def test_integral_floats_are_ports(value: float) -> None:
    # YAML may write a port as 8080.0; JSON Schema counts it as an integer, so must we.
    workload = Workload.from_data(_with_service({"web": {"port": value}}))
    assert workload.service is not None
    assert workload.service.ports is not None
    port = workload.service.ports["web"].port
    assert port == int(value)
    assert type(port) is int


@pytest.mark.parametrize("value", [True, "80", 80.5, 0, 65536, -1])
def test_non_integers_and_out_of_range_ports_are_rejected(value: object) -> None:
    with pytest.raises(ValidationError):
        Workload.from_data(_with_service({"web": {"port": value}}))


# -- strictness ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "container",
    [
        {"variables": {"PORT": 8080}},  # numbers are not strings
        {"volumes": {"/v": {"source": "s", "readOnly": "true"}}},  # nor strings booleans
        {"command": None},  # an explicit null is never a value
        {"files": {"/f": {"content": "x", "target": "/f"}}},  # no target in the map form
        {"files": {"/f": {"content": "x", "source": "f.txt"}}},  # two contents
        {"files": {"/f": {"mode": "0644"}}},  # no content
        {"livenessProbe": {}},  # a probe without a handler
        {"before": {"-bad": {"ready": "started"}}},  # not a label
        {"imagee": "typo"},  # unknown key
    ],
)
def test_what_the_schema_rejects_the_models_reject(container: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Workload.from_data(_doc(**container))


def test_explicit_null_reports_its_own_error_type() -> None:
    with pytest.raises(ValidationError) as caught:
        Workload.from_data(_doc(args=None))
    assert [e["type"] for e in caught.value.errors()] == ["null_not_allowed"]
    assert caught.value.errors()[0]["loc"] == ("containers", "main", "args")


def test_models_are_frozen() -> None:
    workload = Workload.from_data(_doc())
    with pytest.raises(ValidationError):
        workload.containers["main"].image = "other"  # type: ignore[misc]


# -- the deprecated list forms ---------------------------------------------------------------


def test_list_files_are_normalised_to_a_map_keyed_by_target() -> None:
    files = [
        {"target": "/etc/a", "content": "a", "mode": "0600"},
        {"target": "/etc/b", "source": "b.txt", "noExpand": True},
    ]
    container = Workload.from_data(_doc(files=files)).containers["main"]
    assert isinstance(container.files, dict)
    assert container.files_by_target == {
        "/etc/a": ContainerFile.model_validate({"content": "a", "mode": "0600"}),
        "/etc/b": ContainerFile.model_validate({"source": "b.txt", "noExpand": True}),
    }
    dumped = Workload.from_data(_doc(files=files)).to_data()["containers"]["main"]["files"]
    assert dumped == {
        "/etc/a": {"content": "a", "mode": "0600"},
        "/etc/b": {"source": "b.txt", "noExpand": True},
    }


def test_list_volumes_are_normalised_to_a_map_keyed_by_target() -> None:
    volumes = [{"target": "/data", "source": "${resources.data}", "readOnly": True}]
    container = Workload.from_data(_doc(volumes=volumes)).containers["main"]
    assert container.volumes_by_target == {
        "/data": ContainerVolume.model_validate({"source": "${resources.data}", "readOnly": True})
    }
    assert container.volumes_by_target["/data"].read_only is True


def test_list_item_without_target_is_keyed_by_empty_string() -> None:
    # The schema accepts it; the semantic pass reports it. The model must not lose the item.
    container = Workload.from_data(_doc(files=[{"content": "x"}])).containers["main"]
    assert list(container.files_by_target) == [""]


def test_model_validate_alone_keeps_the_list_form() -> None:
    files = [{"target": "/a", "content": "x"}]
    container = Workload.model_validate(_doc(files=files)).containers["main"]
    assert isinstance(container.files, list)
    assert list(container.files_by_target) == ["/a"]


def test_map_forms_are_passed_through() -> None:
    container = Workload.from_data(
        _doc(files={"/a": {"binaryContent": "aGk="}}, volumes={"/v": {"source": "s"}})
    ).containers["main"]
    assert container.files_by_target["/a"].binary_content == "aGk="
    assert container.volumes_by_target["/v"].source == "s"


def test_no_files_or_volumes_gives_empty_maps() -> None:
    container = Workload.from_data(_doc()).containers["main"]
    assert container.files_by_target == {}
    assert container.volumes_by_target == {}


def test_a_workload_in_the_map_forms_is_its_own_normalisation() -> None:
    """No copy when there is nothing to rewrite; a copy, equal to the rewritten one, when a
    container uses a list form."""
    mapped = Workload.model_validate(_doc(files={"/a": {"content": "x"}}))
    assert mapped.normalised() is mapped
    listed = Workload.model_validate(_doc(files=[{"target": "/a", "content": "x"}]))
    normal = listed.normalised()
    assert normal is not listed
    assert normal == mapped
    assert normal.to_data() == mapped.to_data()


# -- metadata, resources, probes -------------------------------------------------------------


def test_metadata_extra_keys_are_preserved() -> None:
    doc = _doc()
    doc["metadata"] = {"name": "web-app", "team": {"lead": "ana"}, "tier": "gold"}
    doc["resources"] = {"db": {"type": "postgres", "metadata": {"owner": "ops"}}}
    workload = Workload.from_data(doc)
    assert workload.metadata.model_extra == {"team": {"lead": "ana"}, "tier": "gold"}
    assert workload.to_data()["metadata"] == doc["metadata"]
    assert workload.resources is not None
    assert workload.to_data()["resources"]["db"]["metadata"] == {"owner": "ops"}


def test_resource_class_and_probe_exec_use_their_document_names() -> None:
    doc = _doc(readinessProbe={"exec": {"command": ["true"]}})
    doc["resources"] = {"db": {"type": "postgres", "class": "large", "id": "main.db"}}
    workload = Workload.from_data(doc)
    assert workload.resources is not None
    assert workload.resources["db"].class_ == "large"
    probe = workload.containers["main"].readiness_probe
    assert probe is not None
    assert probe.exec_ is not None
    assert probe.exec_.command == ["true"]
    assert workload.to_data()["resources"]["db"] == {
        "type": "postgres",
        "class": "large",
        "id": "main.db",
    }


def test_http_probe_scheme_defaults_to_http() -> None:
    doc = _doc(livenessProbe={"httpGet": {"port": 80, "path": "/"}})
    probe = Workload.from_data(doc).containers["main"].liveness_probe
    assert probe is not None
    assert probe.http_get is not None
    assert probe.http_get.scheme == "HTTP"


# -- the official samples --------------------------------------------------------------------


def _sample(name: str) -> dict[str, Any]:
    path = SAMPLES / name
    if not path.is_file():
        pytest.skip(f"the shared Score samples are not at {SAMPLES}")
    data: dict[str, Any] = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    return data


def test_full_sample_round_trips() -> None:
    data = _sample("score-full.yaml")
    original = copy.deepcopy(data)
    workload = Workload.from_data(data)
    assert workload.to_data() == original
    assert Workload.from_data(workload.to_data()) == workload
    assert data == original  # from_data does not touch its input


def test_deprecated_sample_normalises_to_the_map_form() -> None:
    workload = Workload.from_data(_sample("score-deprecated-files-and-volumes.yaml"))
    main = workload.to_data()["containers"]["main"]
    assert main["files"] == {"/mnt/some-path": {"content": "my content here"}}
    assert main["volumes"] == {"/mnt/vol": {"source": "some-volume"}}
