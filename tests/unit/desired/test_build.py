"""Building the desired state: the Score examples, the shop, priming, secrets and ordering."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from reconciler.catalogue import Code
from reconciler.config.loader import load_config
from reconciler.desired import secrets
from reconciler.desired.build import Outputs, build
from reconciler.desired.identity import parse
from reconciler.desired.model import DesiredState
from reconciler.desired.provisioners import (
    ProvisionerSet,
    builtin_provisioner_files,
    load_provisioners,
)
from reconciler.desired.templating import TemplateInput, render
from reconciler.desired.workloads import file_sources
from reconciler.diagnostics import Diagnostic, Severity, has_errors
from reconciler.score.loader import LoadedWorkload, load_workload
from reconciler.tree import DirectoryTree
from reconciler.validate import validate_tree
from tests.conftest import PROJECT, WriteRepo

EXAMPLES = [
    "01-hello", "02-environment", "03-files", "04-multiple-workloads", "05-volume-mounts",
    "06-resource-provisioning", "07-overrides", "08-service-port-resource",
]  # fmt: skip
CUSTOM = b"""\
- uri: template://test/thing
  type: thing
"""


def _provisioners(extra: Sequence[tuple[str, bytes]] = ()) -> ProvisionerSet:
    found, problems = load_provisioners([*extra, *builtin_provisioner_files()])
    assert problems == []
    return found


def _load(root: Path) -> tuple[DirectoryTree, list[LoadedWorkload]]:
    tree = DirectoryTree(root)
    loaded = [load_workload(tree, f) for f in tree.files() if f.endswith(".yaml")]
    for workload in loaded:
        assert not has_errors(workload.diagnostics), workload.diagnostics
    return tree, loaded


def _build(
    root: Path,
    *,
    outputs: Outputs | None = None,
    environment: str = "dev",
    variables: Mapping[str, str] | None = None,
    provisioners: ProvisionerSet | None = None,
) -> tuple[DesiredState, list[Diagnostic]]:
    tree, loaded = _load(root)
    contents = {p: tree.read(p).decode() for w in loaded for p in file_sources(w)}
    return build(
        environment=environment,
        variables=variables or {},
        workloads=loaded,
        provisioners=provisioners or _provisioners(),
        file_contents=contents,
        outputs=outputs or {},
    )


def _score(name: str, resources: str = "", variables: str = "") -> str:
    text = f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {name}\ncontainers:\n  main:\n"
    text += "    image: busybox\n"
    if variables:
        text += "    variables:\n" + variables
    if resources:
        text += "resources:\n" + resources
    return text


def _where(problems: Sequence[Diagnostic]) -> list[tuple[str, str | None, int | None]]:
    return [(p.code.id, p.file, p.line) for p in problems]


# -- the Score examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_score_example_builds(shared_score: Path, example: str) -> None:
    state, problems = _build(shared_score / "examples" / example)
    assert not has_errors(problems), problems
    assert state.workloads
    assert all(r.provisioner.startswith("template://builtin/") for r in state.resources)


def test_06_shares_one_redis_and_keeps_one_private(shared_score: Path) -> None:
    state, _ = _build(shared_score / "examples" / "06-resource-provisioning")
    assert [(r.uid, r.consumers, r.shared) for r in state.resources] == [
        ("redis.default#main-cache", ("workload-one", "workload-two"), True),
        ("redis.default#workload-two.cache-c", ("workload-two",), False),
    ]
    shared = state.resources[0]
    assert shared.source_workload == "workload-one"
    assert shared.secret_outputs == ("password",)
    two = state.workload("workload-two")
    assert two is not None
    assert two.resources == {
        "cache-b": "redis.default#main-cache",
        "cache-c": "redis.default#workload-two.cache-c",
    }
    assert two.spec["containers"]["example"]["variables"]["CONNECTION_A"] == "(known after apply)"


def test_08_service_port_resolves_the_target_port(shared_score: Path) -> None:
    state, _ = _build(shared_score / "examples" / "08-service-port-resource")
    (resource,) = state.resources
    assert resource.params == {"workload": "workload-a", "port": "web"}
    provisioner = _provisioners().match(resource.uid)
    assert provisioner is not None
    data = TemplateInput(
        parse(resource.uid),
        params=resource.params,
        source_workload=resource.source_workload,
        workload_services=state.workload_services,
    )
    outputs = render(provisioner, data, "seed").outputs
    assert outputs == {"hostname": "workload-a", "port": 80}
    state, _ = _build(
        shared_score / "examples" / "08-service-port-resource", outputs={resource.uid: outputs}
    )
    consumer = state.workload("workload-b")
    assert consumer is not None
    variables = consumer.spec["containers"]["example"]["variables"]
    assert variables["DEPENDENCY_URL"] == "http://workload-a:80"


def test_05_volume_source_is_the_uid(shared_score: Path) -> None:
    state, _ = _build(shared_score / "examples" / "05-volume-mounts")
    (workload,) = state.workloads
    volumes = workload.spec["containers"]["first"]["volumes"]
    assert volumes == {"/data": {"source": "volume.default#hello-world.data"}}
    assert workload.depends_on == ("volume.default#hello-world.data",)


def test_02_environment_and_escapes(shared_score: Path) -> None:
    folder = shared_score / "examples" / "02-environment"
    state, _ = _build(folder, outputs={"environment.default#hello-world.env": {"NAME": "Ada"}})
    (resource,) = state.resources
    assert resource.provisioner == "template://builtin/environment"
    container = state.workloads[0].spec["containers"]["hello"]
    assert container["variables"] == {
        "GREETING": "Hello",
        "NAME": "Ada",
        "WORKLOAD_NAME": "hello-world",
        "ESCAPED": "$_${fizzbuzz}",
    }
    # command and args are never substituted, as in score-k8s.
    assert container["args"][1] == "while true; do echo $${GREETING} $${NAME}!; sleep 5; done"


def test_03_source_file_is_inlined_and_listed(shared_score: Path) -> None:
    state, _ = _build(shared_score / "examples" / "03-files")
    (workload,) = state.workloads
    files = workload.spec["containers"]["hello"]["files"]
    assert files["/fileA.txt"] == {"content": "This is fileA.\n"}
    assert files["/fileB.txt"] == {"content": "I am hello-world\n"}
    assert files["/fileC.bin"] == {"binaryContent": "aGVsbG8gd29ybGQ="}
    assert workload.sources == ("score.yaml", "fileA.txt")


def test_a_source_file_not_passed_in_is_reported(shared_score: Path) -> None:
    _, loaded = _load(shared_score / "examples" / "03-files")
    _, problems = build(
        environment="dev",
        variables={},
        workloads=loaded,
        provisioners=_provisioners(),
        file_contents={},
        outputs={},
    )
    assert _where(problems) == [("RCN-1303", "score.yaml", 13)]


# -- the shop -------------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_shop_builds_in_both_environments(environment: str) -> None:
    tree = DirectoryTree(PROJECT / "examples" / "shop")
    report = validate_tree(tree)
    assert not has_errors(report.diagnostics)
    config = load_config(tree).config
    assert config is not None
    variables = config.environments[environment].variables
    contents = {p: tree.read(p).decode() for w in report.workloads for p in file_sources(w)}
    state, problems = build(
        environment=environment,
        variables=variables,
        workloads=report.workloads,
        provisioners=_provisioners(),
        file_contents=contents,
        outputs={},
    )
    assert problems == []
    uids = [r.uid for r in state.resources]
    assert uids.index("dns.default#storefront.dns") < uids.index("route.default#storefront.route")
    assert state.resource("postgres.default#shop-db") is not None
    assert [w.name for w in state.workloads] == ["catalog", "orders", "payments", "storefront"]
    assert state.variables == dict(variables)


# -- priming --------------------------------------------------------------------------------------

SHARED = "  cache:\n    type: redis\n    id: main\n"


def test_a_later_definition_with_params_takes_over_the_source(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            "a.yaml": _score("alpha", SHARED),
            "b.yaml": _score("beta", SHARED + "    params:\n      size: 1\n"),
        }
    )
    state, problems = _build(root, provisioners=_provisioners([("p.yaml", CUSTOM)]))
    assert problems == []
    (resource,) = state.resources
    assert (resource.source_workload, resource.consumers) == ("beta", ("alpha", "beta"))
    assert resource.params == {"size": 1}


@pytest.mark.parametrize(
    ("second", "line", "what"),
    [
        ("    params:\n      size: 2\n", 11, "params"),
        ("    metadata:\n      annotations:\n        xb: b\n", 11, "metadata"),
    ],
)
def test_conflicting_definitions_are_positioned(
    write_repo: WriteRepo, second: str, line: int, what: str
) -> None:
    first = "    params:\n      size: 1\n    metadata:\n      annotations:\n        xb: a\n"
    root = write_repo(
        {"a.yaml": _score("alpha", SHARED + first), "b.yaml": _score("beta", SHARED + second)}
    )
    _, problems = _build(root)
    assert _where(problems) == [("RCN-2002", "b.yaml", line)]
    assert f"multiple definitions with different {what}" in problems[0].message
    assert "workload 'alpha' declares it at a.yaml:" in problems[0].message


def test_no_provisioner_points_at_the_type(write_repo: WriteRepo) -> None:
    root = write_repo({"a.yaml": _score("alpha", "  ux:\n    type: unicorn\n")})
    state, problems = _build(root)
    assert _where(problems) == [("RCN-2001", "a.yaml", 9)]
    assert (problems[0].column, state.resources[0].provisioner) == (11, "")


def test_unsupported_param_is_a_warning(write_repo: WriteRepo) -> None:
    resources = "  dep:\n    type: service-port\n    params:\n      workload: x\n      port: a\n"
    resources += "      colour: red\n"
    root = write_repo({"a.yaml": _score("alpha", resources)})
    _, problems = _build(root)
    assert _where(problems) == [("RCN-2008", "a.yaml", 13)]
    assert problems[0].severity is Severity.WARNING


def test_an_output_the_provisioner_does_not_list_is_an_error(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            "a.yaml": _score(
                "alpha", "  db:\n    type: postgres\n", "      URL: ${resources.db.hostname}\n"
            )
        }
    )
    _, problems = _build(root)
    assert _where(problems) == [("RCN-1203", "a.yaml", 8)]
    assert "invalid ref 'resources.db.hostname': key 'hostname' not found" in problems[0].message


# -- ordering -------------------------------------------------------------------------------------


def test_a_cycle_names_every_member(write_repo: WriteRepo) -> None:
    resources = (
        "  ra:\n    type: thing\n    params:\n      x: ${resources.rb.y}\n"
        "  rb:\n    type: thing\n    params:\n      x: ${resources.rc.y}\n"
        "  rc:\n    type: thing\n    params:\n      x: ${resources.ra.y}\n"
        "  rd:\n    type: thing\n"
    )
    root = write_repo({"a.yaml": _score("alpha", resources)})
    state, problems = _build(root, provisioners=_provisioners([("p.yaml", CUSTOM)]))
    assert [p.code for p in problems] == [Code.RESOURCE_CYCLE]
    assert problems[0].message.endswith(
        "thing.default#alpha.ra, thing.default#alpha.rb, thing.default#alpha.rc"
    )
    assert state.resources[0].uid == "thing.default#alpha.rd"


def test_order_follows_references_and_is_deterministic(write_repo: WriteRepo) -> None:
    resources = (
        "  rz:\n    type: thing\n"
        "  ra:\n    type: thing\n    params:\n      x: ${resources.rz.host}\n"
        "  rm:\n    type: thing\n"
    )
    root = write_repo({"a.yaml": _score("alpha", resources)})
    one, _ = _build(root, provisioners=_provisioners([("p.yaml", CUSTOM)]))
    two, _ = _build(root, provisioners=_provisioners([("p.yaml", CUSTOM)]))
    assert [r.uid.split("#")[1] for r in one.resources] == ["alpha.rm", "alpha.rz", "alpha.ra"]
    assert one.resources[2].depends_on == ("thing.default#alpha.rz",)
    assert one.to_json() == two.to_json()


# -- outputs, unknown values and secrets ----------------------------------------------------------

DB = "  db:\n    type: postgres\n    id: shared-db\n"
URL = (
    "      URL: postgres://${resources.db.username}:${resources.db.password}@${resources.db.host}\n"
)
UID = "postgres.default#shared-db"
CANARY = "canary-Pa55word-9f8e"


def test_unknown_outputs_propagate_into_variables(write_repo: WriteRepo) -> None:
    root = write_repo({"a.yaml": _score("alpha", DB, URL + "      FIXED: x\n")})
    state, _ = _build(root)
    variables = state.workloads[0].spec["containers"]["main"]["variables"]
    assert variables == {"URL": "(known after apply)", "FIXED": "x"}


def test_recorded_outputs_resolve_and_secrets_stay_references(write_repo: WriteRepo) -> None:
    root = write_repo({"a.yaml": _score("alpha", DB, URL)})
    ref = secrets.secret_ref("prod", UID, "password")
    recorded = {UID: {"host": "pg", "username": "app", "password": ref}}
    state, problems = _build(root, outputs=recorded, environment="prod")
    assert problems == []
    url = state.workloads[0].spec["containers"]["main"]["variables"]["URL"]
    assert url == f"postgres://app:{secrets.embed(ref)}@pg"
    assert secrets.refs_in(url) == [ref]
    assert secrets.redact(url) == "postgres://app:(sensitive value)@pg"


def test_a_canary_password_never_appears_in_the_state(write_repo: WriteRepo) -> None:
    root = write_repo({"a.yaml": _score("alpha", DB, URL)})
    rendered = render(
        _provisioners().match(UID),  # type: ignore[arg-type]
        TemplateInput(parse(UID)),
        "seed",
    )
    assert "password" not in rendered.state  # secrets never go to the recorded state
    outputs = {**rendered.outputs, "password": CANARY}
    public, hidden = secrets.split_outputs(outputs, ("password",), "prod", UID)
    assert hidden == {"password": CANARY}
    state, _ = _build(root, outputs={UID: public}, environment="prod")
    assert CANARY not in repr(state)
    assert CANARY not in json.dumps(state.to_data())
    assert CANARY not in state.to_json()


def test_same_input_same_bytes_whatever_the_workload_order(write_repo: WriteRepo) -> None:
    root = write_repo(
        {"a.yaml": _score("zeta", DB, URL), "b.yaml": _score("alpha", DB + "    params: {}\n")}
    )
    _, loaded = _load(root)
    results = [
        build(
            environment="dev",
            variables={"b": "2", "a": "1"},
            workloads=order,
            provisioners=_provisioners(),
            file_contents={},
            outputs={},
        )[0].to_json()
        for order in (loaded, list(reversed(loaded)))
    ]
    assert results[0] == results[1]
    assert json.loads(results[0])["resources"][0]["source_workload"] == "alpha"
