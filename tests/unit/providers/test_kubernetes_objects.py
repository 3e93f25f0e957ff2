"""Rendering Score workloads as Kubernetes objects: golden files for every reference example,
then the rules one by one (secrets, escapes, files, volumes, names, YAML)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.catalogue import Code
from reconciler.desired.secrets import embed, secret_ref
from reconciler.desired.templating import k8s_name
from reconciler.providers.base import DriverError, WorkloadRequest
from reconciler.providers.kubernetes_objects import (
    _ITEM,
    _KEY,
    _VALUE,
    _emitted,
    _form,
    _ManifestDumper,
    _short_form,
    _short_scalar,
    _Unwritten,
    _written,
    escape_env,
    render_documents,
    render_resources,
    render_workload,
    safe_name,
    secret_key_for,
)
from reconciler.score.placeholders import substitute, workload_resolver

GOLDEN = Path(__file__).parent / "golden"
ENV = "prod"
EXAMPLES = [
    ("01-hello", "score.yaml"),
    ("02-environment", "score.yaml"),
    ("03-files", "score.yaml"),
    ("04-multiple-workloads", "score.yaml"),
    ("04-multiple-workloads", "score2.yaml"),
    ("05-volume-mounts", "score.yaml"),
    ("06-resource-provisioning", "score.yaml"),
    ("06-resource-provisioning", "score2.yaml"),
    ("07-overrides", "score.yaml"),
    ("08-service-port-resource", "scoreA.yaml"),
    ("08-service-port-resource", "scoreB.yaml"),
]


def _uid(workload: str, name: str, resource: dict[str, Any]) -> str:
    class_ = resource.get("class") or "default"
    return f"{resource['type']}.{class_}#{resource.get('id') or f'{workload}.{name}'}"


def _outputs(uid: str, type_: str) -> dict[str, Any]:
    """What the built-in provisioners would output, with secrets as references."""
    if type_ == "environment":
        return {"NAME": "World"}
    if type_ == "volume":
        return {"source": {"emptyDir": {}}}
    if type_ == "redis":
        password = secret_ref(ENV, uid, "password")
        return {"host": "redis-main", "port": 6379, "username": "default", "password": password}
    if type_ == "service-port":
        return {"hostname": "workload-a", "port": 80}
    raise AssertionError(type_)


def _marked(outputs: dict[str, Any]) -> dict[str, Any]:
    return {k: embed(v) if str(v).startswith("secret://") else v for k, v in outputs.items()}


def example_request(folder: Path, file: str) -> WorkloadRequest:
    """A hand-built request: the Score file with its placeholders resolved as desired.build does."""
    doc = YAML(typ="safe").load((folder / file).read_text())
    name = doc["metadata"]["name"]
    resources = doc.pop("resources", {})
    uids = {r: _uid(name, r, spec) for r, spec in resources.items()}
    outputs = {r: _outputs(uids[r], spec["type"]) for r, spec in resources.items()}
    resolve = workload_resolver(doc["metadata"], {r: _marked(o) for r, o in outputs.items()})
    resolve_source = workload_resolver(doc["metadata"], outputs, uids=uids)
    for container in doc["containers"].values():
        if "variables" in container:
            container["variables"], problems = substitute(container["variables"], resolve)
            assert not problems
        for spec in (container.get("files") or {}).values():
            if "source" in spec:
                spec["content"] = (folder / spec.pop("source")).read_text()
            if "content" in spec:
                spec["content"], problems = substitute(spec["content"], resolve)
                assert not problems
        for spec in (container.get("volumes") or {}).values():
            spec["source"], problems = substitute(spec["source"], resolve_source)
            assert not problems
    return WorkloadRequest(
        environment=ENV,
        name=name,
        spec=doc,
        resources=uids,
        resource_outputs=outputs,
        file=f"apps/{file}",
    )


def _load_all(text: str) -> list[Any]:
    return list(YAML(typ="safe").load_all(text))


@pytest.mark.parametrize(("example", "file"), EXAMPLES)
def test_examples_match_their_golden_files(shared_score: Path, example: str, file: str) -> None:
    request = example_request(shared_score / "examples" / example, file)
    rendered = render_documents(render_workload(request))
    golden = GOLDEN / example / f"{request.name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered, encoding="utf-8")
    assert rendered == golden.read_text(encoding="utf-8")
    assert "🔐" not in rendered
    assert "secret://" not in rendered


def _request(**spec: Any) -> WorkloadRequest:
    spec.setdefault("metadata", {"name": "web"})
    return WorkloadRequest(environment=ENV, name="web", spec=spec, resources={"db": DB})


DB = "postgres.default#shop-db"
DB_SECRET = k8s_name("postgres", "default", "shop-db")
DB_PASSWORD = secret_ref(ENV, DB, "password")


def _kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = _kind(objects, "Deployment")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_a_variable_that_is_one_secret_reads_it_from_the_provisioners_secret() -> None:
    request = _request(
        containers={"app": {"image": "app", "variables": {"DB_PASSWORD": embed(DB_PASSWORD)}}}
    )
    objects = render_workload(request)
    env = _container(objects)["env"]
    assert env == [
        {
            "name": "DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": DB_SECRET, "key": "password"}},
        }
    ]
    text = render_documents(objects)
    assert "🔐" not in text
    assert "secret://" not in text
    assert DB not in text  # the uid shows only through the Secret's name
    assert text.count(DB_SECRET) == 1


def test_a_secret_inside_a_longer_value_goes_through_dependent_expansion() -> None:
    value = f"postgres://app:{embed(DB_PASSWORD)}@db:5432/shop?x=$(HOME)"
    request = _request(containers={"app": {"image": "app", "variables": {"URL": value}}})
    env = _container(render_workload(request))["env"]
    helper, url = env
    assert helper["valueFrom"] == {"secretKeyRef": {"name": DB_SECRET, "key": "password"}}
    assert url == {
        "name": "URL",
        "value": f"postgres://app:$({helper['name']})@db:5432/shop?x=$$(HOME)",
    }


def test_the_same_secret_in_two_variables_has_one_helper_listed_first() -> None:
    variables = {"A": f"x{embed(DB_PASSWORD)}", "B": f"{embed(DB_PASSWORD)}y", "C": "plain"}
    env_list = _container(
        render_workload(_request(containers={"c": {"image": "i", "variables": variables}}))
    )["env"]
    assert [e["name"] for e in env_list][1:] == ["A", "B", "C"]
    assert env_list[0]["name"].startswith("__secret_")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("$(HOME)", "$$(HOME)"),
        ("a$$b", "a$$$b"),
        ("$HOME and ${HOME}", "$HOME and ${HOME}"),
        ("$", "$"),
    ],
)
def test_plain_values_are_escaped_for_kubernetes_expansion(value: str, expected: str) -> None:
    assert escape_env(value) == expected


def test_a_file_that_is_one_secret_mounts_the_provisioners_secret() -> None:
    files = {"/etc/db/password": {"content": embed(DB_PASSWORD), "mode": "0400"}}
    objects = render_workload(_request(containers={"app": {"image": "app", "files": files}}))
    assert not _kind(objects, "ConfigMap")
    (deployment,) = _kind(objects, "Deployment")
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    assert volume["secret"]["secretName"] == DB_SECRET
    (item,) = volume["secret"]["items"]
    assert item["key"] == "password"
    assert item["mode"] == 0o400
    (mount,) = _container(objects)["volumeMounts"]
    assert mount["mountPath"] == "/etc/db/password"
    assert mount["subPath"] == item["path"]


def test_a_file_mixing_text_and_secrets_is_rendered_by_an_external_secret() -> None:
    content = f"user: app\npassword: {embed(DB_PASSWORD)}\nliteral: {{{{ not a template }}}}\n"
    files = {"/etc/app/config.yaml": {"content": content}}
    objects = render_workload(_request(containers={"app": {"image": "app", "files": files}}))
    (external,) = _kind(objects, "ExternalSecret")
    assert external["spec"]["data"] == [
        {"secretKey": "s0", "remoteRef": {"key": f"{ENV}/{DB}", "property": "password"}}
    ]
    (template,) = external["spec"]["target"]["template"]["data"].values()
    assert template == 'user: app\npassword: {{ .s0 }}\nliteral: {{ "{{" }} not a template }}\n'
    text = render_documents(objects)
    assert "🔐" not in text
    assert "secret://" not in text


def test_text_and_binary_files_go_to_one_configmap_mounted_by_subpath() -> None:
    files = {
        "/etc/a.txt": {"content": "hello\n", "mode": "0644"},
        "/etc/b.bin": {"binaryContent": "aGVsbG8gd29ybGQ="},
    }
    objects = render_workload(_request(containers={"app": {"image": "app", "files": files}}))
    (configmap,) = _kind(objects, "ConfigMap")
    assert list(configmap["data"].values()) == ["hello\n"]
    assert list(configmap["binaryData"].values()) == ["aGVsbG8gd29ybGQ="]
    mounts = _container(objects)["volumeMounts"]
    assert [m["mountPath"] for m in mounts] == ["/etc/a.txt", "/etc/b.bin"]
    assert all(
        m["subPath"] in configmap["data"] or m["subPath"] in configmap["binaryData"] for m in mounts
    )


def test_a_changed_file_changes_the_pod_template_so_pods_roll() -> None:
    def pod_annotations(content: str) -> dict[str, str]:
        files = {"/etc/a.txt": {"content": content}}
        objects = render_workload(_request(containers={"app": {"image": "i", "files": files}}))
        (deployment,) = _kind(objects, "Deployment")
        annotations: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
        return annotations

    assert pod_annotations("one") != pod_annotations("two")
    assert pod_annotations("one") == pod_annotations("one")


def test_a_volume_claim_output_becomes_a_claim_of_the_workload() -> None:
    request = WorkloadRequest(
        environment=ENV,
        name="web",
        spec={
            "containers": {
                "app": {
                    "image": "i",
                    "volumes": {
                        "/data": {
                            "source": "volume.default#web.data",
                            "path": "/sub",
                            "readOnly": True,
                        }
                    },
                }
            }
        },
        resources={"data": "volume.default#web.data"},
        resource_outputs={"data": {"claimSpec": {"accessModes": ["ReadWriteOnce"]}}},
    )
    objects = render_workload(request)
    (claim,) = _kind(objects, "PersistentVolumeClaim")
    (deployment,) = _kind(objects, "Deployment")
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
    (mount,) = _container(objects)["volumeMounts"]
    assert mount == {
        "name": volume["name"],
        "mountPath": "/data",
        "subPath": "sub",
        "readOnly": True,
    }


def test_a_volume_without_outputs_is_a_render_error() -> None:
    spec = {
        "containers": {"app": {"image": "i", "volumes": {"/data": {"source": "volume.default#x"}}}}
    }
    request = WorkloadRequest(environment=ENV, name="web", spec=spec)
    with pytest.raises(DriverError) as caught:
        render_workload(request)
    assert caught.value.code is Code.MANIFEST_RENDER_FAILED
    assert "containers.app.volumes./data.source" in caught.value.message


def test_a_malformed_marker_is_never_written() -> None:
    request = _request(containers={"app": {"image": "i", "variables": {"X": "🔐💬oops💬🔐"}}})
    with pytest.raises(DriverError, match="marker"):
        render_workload(request)


def test_service_ports_become_a_clusterip_service() -> None:
    request = _request(
        containers={"app": {"image": "i"}},
        service={
            "ports": {
                "web": {"port": 80, "targetPort": 8080},
                "dns": {"port": 53, "protocol": "udp"},
            }
        },
    )
    (service,) = _kind(render_workload(request), "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
        {"name": "web", "port": 80, "protocol": "TCP", "targetPort": 8080},
    ]


def test_a_provisioners_secret_becomes_an_external_secret_without_its_value() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": DB_SECRET, "labels": {"app.kubernetes.io/name": DB_SECRET}},
        "type": "Opaque",
        "stringData": {"password": "hunter2-plain-value"},
    }
    request = WorkloadRequest(
        environment=ENV, name="web", spec={}, resources={"db": DB}, resource_manifests=[secret]
    )
    (external,) = render_resources(request)
    assert external["kind"] == "ExternalSecret"
    assert external["spec"]["target"]["name"] == DB_SECRET
    assert external["spec"]["data"] == [
        {"secretKey": "password", "remoteRef": {"key": f"{ENV}/{DB}", "property": "password"}}
    ]
    assert "hunter2" not in render_documents([external])


def test_a_secret_nobody_owns_is_refused() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "x"},
        "data": {"k": "dg=="},
    }
    request = WorkloadRequest(environment=ENV, name="web", spec={}, resource_manifests=[secret])
    with pytest.raises(DriverError, match="Secret 'x' key 'k'"):
        render_resources(request)


def test_the_secret_naming_rule_matches_the_provisioner_templates() -> None:
    key = secret_key_for(DB_PASSWORD)
    assert (key.name, key.key) == (k8s_name("postgres", "default", "shop-db"), "password")


@pytest.mark.parametrize(
    ("parts", "expected"),
    [(("web",), "web"), (("web", "app", "files"), "web-app-files")],
)
def test_names_stay_readable_when_they_can(parts: tuple[str, ...], expected: str) -> None:
    assert safe_name(*parts) == expected


def test_long_or_unsafe_names_are_cut_with_a_hash() -> None:
    long = safe_name("w" * 70)
    assert len(long) <= 63
    assert long != safe_name("w" * 71)
    assert safe_name("A_b") != safe_name("a-b")
    assert safe_name("A_b").startswith("a-b-")


def test_documents_are_sorted_and_keys_ordered() -> None:
    objects = [
        {
            "spec": {"b": 1, "a": 2},
            "kind": "Deployment",
            "metadata": {"name": "b"},
            "apiVersion": "apps/v1",
        },
        {
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"name": "z"},
            "data": {"on": "yes", "mode": "0600"},
        },
    ]
    text = render_documents(objects)
    assert text.startswith("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n")
    assert '"on": "yes"' in text
    assert 'mode: "0600"' in text
    assert text.index("a: 2") < text.index("b: 1")
    assert _load_all(text) == [objects[1], objects[0]]


def test_multiline_text_round_trips() -> None:
    content = "line one\n  indented\ntrailing space \n\ttab\n"
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c"},
            "data": {"a": content, "b": "x\ny"},
        }
    ]
    text = render_documents(objects)
    assert "b: |-\n" in text
    assert _load_all(text) == objects


def test_rendering_is_deterministic(shared_score: Path) -> None:
    folder = shared_score / "examples" / "06-resource-provisioning"
    first = render_documents(render_workload(example_request(folder, "score2.yaml")))
    second = render_documents(render_workload(example_request(folder, "score2.yaml")))
    assert first == second


_TEXTS = st.one_of(
    st.sampled_from(
        ["yes", "on", "null", "~", "0600", "1e3", "0x1F", "-", "a: b", "#x", " x", "x\ny", "é"]
    ),
    st.text(max_size=12),
    st.text(min_size=101, max_size=120),
)
_VALUES = st.recursive(
    st.one_of(_TEXTS, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_TEXTS, inner, max_size=4)
    ),
    max_leaves=20,
)


def _ordered(value: Any, *, top: bool = False) -> Any:
    """``value`` with its keys in the order ``render_documents`` writes them."""
    if isinstance(value, dict):
        keys = sorted(value)
        if top:
            first = ["apiVersion", "kind", "metadata", "spec"]
            keys = [k for k in first if k in value] + [k for k in keys if k not in first]
        return {k: _ordered(value[k]) for k in keys}
    if isinstance(value, list):
        return [_ordered(v) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_TEXTS, _VALUES, max_size=5))
def test_documents_are_the_bytes_the_representer_writes(obj: dict[str, Any]) -> None:
    """Events are made here rather than by PyYAML's representer and serializer: the bytes are
    the same as theirs, with the same dumper (string styles, tags read back as written)."""
    objects = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, **obj}]
    expected = yaml.dump_all(
        [_ordered(o, top=True) for o in objects],
        Dumper=_ManifestDumper,  # the dumper render_documents hands its events
        default_flow_style=False,
        explicit_start=True,
        sort_keys=False,
        allow_unicode=True,
        width=4096,
    )
    assert render_documents(objects) == expected


class _Text(str):
    """A string subclass: written as the string it holds."""


_LINES = st.lists(
    st.sampled_from(["a", "b: c", "  x", "", "key: {{ .v }}", "é", "\t", "- y", "#z"]),
    min_size=1,
    max_size=4,
).map("\n".join)
_WRITER_TEXTS = st.one_of(
    _TEXTS,
    _LINES,
    _LINES.map(lambda text: text + "\n"),
    _LINES.map(lambda text: text + "\n\n"),
    st.text(min_size=900, max_size=1100, alphabet="ab :#\"'"),
    st.text(max_size=8).map(_Text),
)
_WRITER_KEYS = st.one_of(
    st.sampled_from(["yes", "0600", "-", "a: b", "#x", " x", "é", "", "apiVersion", "kind"]),
    st.text(max_size=12).filter(lambda text: "\n" not in text),
    st.text(max_size=8).map(_Text),
)
_WRITER_VALUES = st.recursive(
    st.one_of(_WRITER_TEXTS, st.integers(), st.booleans(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_WRITER_KEYS, inner, max_size=3),
    ),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.dictionaries(_WRITER_KEYS, _WRITER_VALUES, min_size=1, max_size=5), max_size=3))
def test_the_direct_writer_writes_the_emitters_bytes(objects: list[dict[str, Any]]) -> None:
    """``render_documents`` writes manifests line by line, leaving to libyaml's emitter only
    what it does not handle: whatever it writes is byte for byte what the emitter writes."""
    try:
        text = _written(objects)
    except _Unwritten:
        return
    assert text == _emitted(objects)


def test_the_direct_writer_writes_what_workloads_hold() -> None:
    """The shapes a workload's objects take are written directly, not left to the emitter:
    nested mappings and lists, empty ones, block literals, quoted words, booleans and numbers."""
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "yes"}, "annotations": {}},
            "data": {"file": "line one\n\nline: three\n", "text": "x\ny", "empty": ""},
            "spec": {
                "list": [[1, "2"], {"a": [True, None]}, [], {}],
                "deep": {"deeper": [{"k": "v\nw", "l": [{"m": "0600"}]}]},
            },
        }
    ]
    assert _written(objects) == _emitted(objects)


def test_what_the_direct_writer_leaves_to_the_emitter_is_written_all_the_same() -> None:
    """A float, a long key, a block literal keeping its trailing lines: the emitter's."""
    for value in ({"f": 1.5}, {"k" * 200: "v"}, {"keep": "a\nb\n\n"}):
        objects = [{"apiVersion": "v1", "kind": "ConfigMap", **value}]
        with pytest.raises(_Unwritten):
            _written(objects)
        assert render_documents(objects) == _emitted(objects)


@settings(max_examples=500, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("aZy0_./()$:@=%&?+,~-+ #'\"é!*")), min_size=1, max_size=12
    )
    | st.sampled_from(["yes", "No", "on", "null", "y", "0600", "1e3", "1_0", "a:", "a:b", "a."])
    | st.tuples(
        st.lists(st.sampled_from(["a", "", "b: c", "  d", "[e]", "f = g", "#h", "é"]), min_size=2),
        st.sampled_from(["", "\n", "\n\n"]),
    ).map(lambda parts: "\n".join(parts[0]) + parts[1])
)
def test_forms_seen_at_a_glance_are_the_ones_libyaml_writes(text: str) -> None:
    """``_short_form`` spells plain and simply quoted texts itself: libyaml agrees."""
    for place in (_KEY, _VALUE, _ITEM):
        try:
            expected = _form(_short_scalar(text), place)
        except _Unwritten:
            continue
        assert _short_form(text, place) == expected
