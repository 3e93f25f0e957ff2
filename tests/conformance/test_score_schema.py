"""Our generated Score schema accepts and rejects exactly what the official one does.

The official schema and the reference documents live outside the project (``../shared/score``);
the tests skip when that folder is absent. Every reference document must pass both schemas and
the models; then thousands of mutations of those documents (and of a few seeds written here to
reach fields the references never use, such as ``before``) must get the same verdict from both
schemas, and the models and the fast yes/no gate (``schemagate``) must agree with our schema on
each one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from ruamel.yaml import YAML

from reconciler.schemagate import Gate, compile_gate
from reconciler.score import models
from reconciler.score.models import Workload
from reconciler.score.schema import SPEC_NAME, main, render_schema, score_schema
from reconciler.specs import load_spec, spec_path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "score"
REFERENCE_FILES = sorted([*SHARED.glob("samples/*.yaml"), *SHARED.glob("examples/*/*.yaml")])

needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"the official Score schema and samples are not at {SHARED}"
)

# Seeds written for these tests, to reach fields that no reference document uses.
EXTRA_SEEDS: tuple[dict[str, Any], ...] = (
    {
        "apiVersion": "score.dev/v1b1",
        "metadata": {"name": "seed-one", "team": {"lead": "ana"}},
        "service": {"ports": {"dns": {"port": 53, "protocol": "UDP"}}},
        "containers": {
            "init": {"image": "busybox", "command": ["true"]},
            "main": {
                "image": ".",
                "before": {"init": {"ready": "complete"}},
                "files": [
                    {"target": "/etc/a", "source": "a.txt", "mode": "644", "noExpand": True},
                    {"target": "/etc/b", "binaryContent": "aGk="},
                ],
                "volumes": [{"target": "/data", "source": "v", "path": "sub", "readOnly": True}],
                "livenessProbe": {"exec": {"command": ["/bin/check"]}},
                "readinessProbe": {
                    "httpGet": {
                        "port": 8080,
                        "path": "/ready",
                        "scheme": "HTTPS",
                        "httpHeaders": [{"name": "X-Probe", "value": "1"}],
                    }
                },
                "resources": {"limits": {"cpu": "250m", "memory": "0.5Gi"}},
            },
        },
        "resources": {
            "db": {
                "type": "postgres",
                "class": "large",
                "id": "shared.main-db",
                "metadata": {"annotations": {"ab.cd/ef": "d"}, "owner": "x"},
                "params": {"size": 3, "nested": {"list": [1, "two"]}},
            }
        },
    },
    {
        "apiVersion": "score.dev/v1b1",
        "metadata": {"name": "seed-two"},
        "containers": {
            "web": {
                "image": "nginx",
                "variables": {"A": "${metadata.name}"},
                "files": {"/x": {"content": "hi", "mode": "0600"}},
                "volumes": {"/mnt": {"source": "${resources.vol}", "readOnly": False}},
            }
        },
        "resources": {"vol": {"type": "volume"}},
    },
)


@cache
def _official() -> Draft202012Validator:
    return Draft202012Validator(json.loads((SHARED / "score-v1b1.json").read_text()))


@cache
def _ours() -> Draft202012Validator:
    return Draft202012Validator(score_schema())


@cache
def _gate() -> Gate:
    gate = compile_gate(score_schema())
    assert gate is not None, "the Score schema uses a keyword schemagate does not implement"
    return gate


@cache
def _seeds() -> tuple[dict[str, Any], ...]:
    yaml = YAML(typ="safe", pure=True)
    loaded = tuple(yaml.load(path.read_text(encoding="utf-8")) for path in REFERENCE_FILES)
    return loaded + EXTRA_SEEDS


def assert_agree(doc: Any) -> None:
    """The one check every mutation goes through: same verdict from both schemas and the
    models."""
    official = _official().is_valid(doc)
    ours = _ours().is_valid(doc)
    event(f"official schema {'accepts' if official else 'rejects'}")
    assert ours == official, (
        f"ours={ours} official={official} for {json.dumps(doc, default=repr)}\n"
        f"ours says: {[e.message for e in _ours().iter_errors(doc)][:3]}\n"
        f"official says: {[e.message for e in _official().iter_errors(doc)][:3]}"
    )
    assert _gate()(doc) == ours, f"schemagate says {not ours} for {json.dumps(doc, default=repr)}"
    if ours:
        Workload.from_data(doc)
    else:
        with pytest.raises(ValidationError):
            Workload.from_data(doc)


# -- reference documents ---------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: str(p.relative_to(SHARED)))
def test_reference_documents_are_valid_everywhere(path: Path) -> None:
    doc = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    assert _official().is_valid(doc)
    assert list(_ours().iter_errors(doc)) == []
    Workload.from_data(doc)


@needs_shared
def test_reference_documents_were_found() -> None:
    # Guards the parametrised test above against silently running on nothing.
    assert len(REFERENCE_FILES) >= 12


@needs_shared
@pytest.mark.parametrize("seed", EXTRA_SEEDS, ids=lambda s: s["metadata"]["name"])
def test_extra_seeds_are_valid_everywhere(seed: dict[str, Any]) -> None:
    assert _official().is_valid(seed)
    assert _ours().is_valid(seed)
    Workload.from_data(seed)


def test_our_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = score_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == "https://score-reconciler.dev/schemas/score-v1b1.json"


# -- the shipped file ------------------------------------------------------------------------


def test_checked_in_schema_matches_the_models() -> None:
    shipped = ROOT / "specs" / SPEC_NAME
    assert json.loads(shipped.read_text(encoding="utf-8")) == score_schema()
    assert shipped.read_text(encoding="utf-8") == render_schema()
    assert main(["--check"]) == 0


def test_load_spec_finds_the_shipped_schema_and_hands_out_copies() -> None:
    assert spec_path(SPEC_NAME).is_file()
    first = load_spec(SPEC_NAME)
    assert first == score_schema()
    first["$id"] = "changed"
    assert load_spec(SPEC_NAME)["$id"] == score_schema()["$id"]
    with pytest.raises(FileNotFoundError):
        spec_path("no-such-spec.json")


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / SPEC_NAME
    stale.write_text("{}\n", encoding="utf-8")
    assert main(["--check", "--output", str(stale)]) == 1
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8").endswith("}\n")


# -- mutation machinery ----------------------------------------------------------------------

Path_ = tuple[str | int, ...]

OFFICIAL_PATTERNS = (
    models.LABEL_PATTERN,
    models.ANNOTATION_KEY_PATTERN,
    models.RESOURCE_TYPE_PATTERN,
    models.RESOURCE_ID_PATTERN,
    models.API_VERSION_PATTERN,
    models.MEMORY_PATTERN,
    models.CPU_PATTERN,
    models.FILE_MODE_PATTERN,
    models.HEADER_NAME_PATTERN,
    models.VARIABLE_NAME_PATTERN,
)

TRICKY_STRINGS = (
    *("", "a", "ab", "a-b", "-ab", "ab-", "AB", "Ab", "ab\n", "a" * 63, "a" * 64, "A" * 64),
    *("x.y", "a..b", "a--b", "a.-b", "ab.cd", "ab.cd.", "prefix.com/Key", "prefix.com/"),
    *("/key", "x/y/z", "Pre.com/ab", "a/b", "ab.c/d_e.f", "p" * 253 + "/" + "k" * 63),
    *("1000m", "1m", "0.5", "0.", ".5", "1.5Gi", "128M", "0", "01", "1e3", "10Xi", "12m\n"),
    *("0600", "600", "0800", "06000", "0o600", "777", "0777\n", "٦٠٠", "١٢"),
    *("score.dev/v1b1", "score.dev/v1b1\n", "score.dev/v1b2", "scoreXdev/v1b1"),
    *("SOME_HEADER", "bad header", "X-H", "A=B", "=", "A", "TCP", "UDP", "tcp"),
    *("HTTP", "HTTPS", "http", "started", "healthy", "complete", "ready", ".", "é"),
)

KNOWN_KEYS = (
    *("apiVersion", "metadata", "name", "annotations", "service", "ports", "port"),
    *("targetPort", "protocol", "containers", "image", "command", "args", "variables"),
    *("files", "volumes", "target", "mode", "source", "content", "binaryContent", "noExpand"),
    *("path", "readOnly", "before", "ready", "resources", "limits", "requests", "memory"),
    *("cpu", "livenessProbe", "readinessProbe", "httpGet", "exec", "host", "scheme"),
    *("httpHeaders", "value", "type", "class", "id", "params", "unknown", "extra-key"),
)

strings = st.one_of(
    st.sampled_from(TRICKY_STRINGS),
    st.sampled_from(OFFICIAL_PATTERNS).flatmap(st.from_regex),
    st.text(max_size=6),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), strings)
port_values = st.sampled_from(
    [0, 1, 80, 65535, 65536, -1, 1.0, 65535.0, 65536.0, 80.5, True, False, "80", None]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=70000),
    st.floats(allow_nan=False),
    port_values,
    strings,
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(keys, scalars, max_size=2),
    st.builds(dict),  # fresh containers: a shared one mutated in place would leak across tests
    st.builds(list),
)


def _walk(node: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key in list(node):
            yield from _walk(node[key], (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, (*path, index))


def _get(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _dict_nodes(doc: Any) -> list[Path_]:
    return [path for path, node in _walk(doc) if isinstance(node, dict)]


def _pick(data: st.DataObject, paths: list[Path_]) -> Path_ | None:
    return data.draw(st.sampled_from(paths)) if paths else None


def _set(doc: Any, path: Path_, value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


Mutation = Callable[[st.DataObject, dict[str, Any]], None]


def delete_key(data: st.DataObject, doc: dict[str, Any]) -> None:
    path = _pick(data, [p for p in _dict_nodes(doc) if _get(doc, p)])
    if path is not None:
        node = _get(doc, path)
        del node[data.draw(st.sampled_from(sorted(node)))]


def add_key(data: st.DataObject, doc: dict[str, Any]) -> None:
    path = _pick(data, _dict_nodes(doc))
    if path is not None:
        _get(doc, path)[data.draw(keys)] = data.draw(values)


def rename_key(data: st.DataObject, doc: dict[str, Any]) -> None:
    path = _pick(data, [p for p in _dict_nodes(doc) if _get(doc, p)])
    if path is not None:
        node = _get(doc, path)
        old = data.draw(st.sampled_from(sorted(node)))
        node[data.draw(keys)] = node.pop(old)


def replace_value(data: st.DataObject, doc: dict[str, Any]) -> None:
    path = _pick(data, [p for p, _ in _walk(doc) if p])
    if path is not None:
        _set(doc, path, data.draw(values))


def replace_string(data: st.DataObject, doc: dict[str, Any]) -> None:
    path = _pick(data, [p for p, node in _walk(doc) if p and isinstance(node, str)])
    if path is not None:
        _set(doc, path, data.draw(strings))


def replace_port(data: st.DataObject, doc: dict[str, Any]) -> None:
    wanted = {"port", "targetPort"}
    path = _pick(data, [p for p, _ in _walk(doc) if p and p[-1] in wanted])
    if path is not None:
        _set(doc, path, data.draw(port_values))


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    containers = doc.get("containers")
    if not isinstance(containers, dict):
        return []
    return [c for _, c in sorted(containers.items()) if isinstance(c, dict)]


def _without_target(entry: Any) -> Any:
    return {k: v for k, v in entry.items() if k != "target"} if isinstance(entry, dict) else entry


def switch_form(data: st.DataObject, doc: dict[str, Any]) -> None:
    """Turn a files/volumes map into a list or back, keeping or dropping ``target``."""
    found = [(c, f) for c in _containers(doc) for f in ("files", "volumes") if f in c]
    if not found:
        return
    container, field = data.draw(st.sampled_from(found))
    keep_target = data.draw(st.booleans())
    current = container[field]
    if isinstance(current, dict):
        items = [dict(v, target=k) if isinstance(v, dict) else v for k, v in current.items()]
        if not keep_target:
            items = [_without_target(i) for i in items]
        container[field] = items
    elif isinstance(current, list):
        entries = {}
        for index, item in enumerate(current):
            key = item.get("target", f"/t{index}") if isinstance(item, dict) else f"/t{index}"
            entries[str(key)] = item if keep_target else _without_target(item)
        container[field] = entries


def _file_entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for container in _containers(doc):
        for field in ("files", "volumes"):
            value = container.get(field)
            items = list(value.values()) if isinstance(value, dict) else value
            if isinstance(items, list):
                entries.extend(i for i in items if isinstance(i, dict))
    return entries


def toggle_target(data: st.DataObject, doc: dict[str, Any]) -> None:
    entries = _file_entries(doc)
    if entries:
        entry = data.draw(st.sampled_from(entries))
        if "target" in entry:
            del entry["target"]
        else:
            entry["target"] = data.draw(st.sampled_from(["/t", "", 5]))


def choose_contents(data: st.DataObject, doc: dict[str, Any]) -> None:
    """Give a file zero, one, two or three of content/binaryContent/source."""
    entries = _file_entries(doc)
    if entries:
        entry = data.draw(st.sampled_from(entries))
        for key in ("content", "binaryContent", "source"):
            entry.pop(key, None)
        for key in data.draw(st.sets(st.sampled_from(["content", "binaryContent", "source"]))):
            entry[key] = data.draw(st.sampled_from(["x", "", "a.txt"]))


def edit_probe_or_container(data: st.DataObject, doc: dict[str, Any]) -> None:
    containers = _containers(doc)
    choice = data.draw(st.sampled_from(["probe", "empty-container", "no-containers"]))
    if choice == "no-containers" or not containers:
        doc["containers"] = {}
        return
    container = data.draw(st.sampled_from(containers))
    if choice == "empty-container":
        container.clear()
        return
    probe = data.draw(
        st.sampled_from(
            [
                {},
                {"exec": {}},
                {"exec": {"command": []}},
                {"httpGet": {"port": 80}},
                {"httpGet": {"port": 80, "path": "/"}, "exec": {"command": ["x"]}},
                {"httpGet": {"port": 80, "path": "/", "httpHeaders": [{"name": "a b"}]}},
                {"other": {}},
            ]
        )
    )
    where = data.draw(st.sampled_from(["livenessProbe", "readinessProbe"]))
    container[where] = copy.deepcopy(probe)


GENERIC: tuple[Mutation, ...] = (delete_key, add_key, rename_key, replace_value, replace_string)
TARGETED: tuple[Mutation, ...] = (switch_form, toggle_target, choose_contents)


def _mutated(data: st.DataObject, mutations: tuple[Mutation, ...]) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(data.draw(st.sampled_from(_seeds())))
    for mutation in data.draw(st.lists(st.sampled_from(mutations), min_size=1, max_size=3)):
        mutation(data, doc)
    return doc


FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@needs_shared
@settings(FUZZ, max_examples=700)
@given(st.data())
def test_schemas_agree_on_generic_mutations(data: st.DataObject) -> None:
    assert_agree(_mutated(data, GENERIC))


@needs_shared
@settings(FUZZ, max_examples=300)
@given(st.data())
def test_schemas_agree_on_names_patterns_and_keys(data: st.DataObject) -> None:
    assert_agree(_mutated(data, (replace_string, rename_key)))


@needs_shared
@settings(FUZZ, max_examples=150)
@given(st.data())
def test_schemas_agree_on_ports(data: st.DataObject) -> None:
    assert_agree(_mutated(data, (replace_port,)))


@needs_shared
@settings(FUZZ, max_examples=250)
@given(st.data())
def test_schemas_agree_on_files_and_volumes(data: st.DataObject) -> None:
    assert_agree(_mutated(data, TARGETED))


@needs_shared
@settings(FUZZ, max_examples=100)
@given(st.data())
def test_schemas_agree_on_probes_and_containers(data: st.DataObject) -> None:
    assert_agree(_mutated(data, (edit_probe_or_container, replace_port)))
