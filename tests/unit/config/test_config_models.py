"""The reconciler.yaml model, its generated schema, and the agreement between the two."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from ruamel.yaml import YAML

from reconciler.config.models import (
    API_VERSION,
    Config,
    Duration,
    Environment,
)
from reconciler.config.schema import SCHEMA_ID, config_schema, main, render

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / "specs" / "reconciler.schema.json"
EXAMPLE = ROOT / "examples" / "shop" / "reconciler.yaml"


def env(**fields: Any) -> dict[str, Any]:
    return {"environments": {"staging": fields}}


def error_types(data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        Config.from_data(data)
    return {e["type"] for e in caught.value.errors()}


def schema_accepts(data: dict[str, Any]) -> bool:
    return bool(Draft202012Validator(config_schema()).is_valid(data))


def model_accepts(data: dict[str, Any]) -> bool:
    try:
        Config.from_data(data)
    except ValidationError:
        return False
    return True


# -- defaults ---------------------------------------------------------------------------------


def test_default_is_one_environment_following_head() -> None:
    config = Config.default()
    assert list(config.environments) == ["default"]
    default = config.environments["default"]
    assert default.follows == "HEAD"
    assert default.approval == "none"
    assert default.on_failure == "stop"
    assert default.self_heal is False
    assert default.resync.seconds == 300
    assert default.target == "manifests"
    assert default.deploy_branch_for("default") == "reconciler/deploy/default"
    assert config.api_version == API_VERSION


def test_empty_file_means_defaults() -> None:
    config = Config.from_data({})
    assert config == Config.default()
    assert config.workloads == ("**/score.yaml", "**/*.score.yaml")
    assert config.exclude == ()
    assert config.provisioners == ("provisioners/*.yaml",)
    assert config.policies == ("policies/*.yaml",)
    assert config.workflows == ("workflows/*.yaml",)
    assert config.retries.max_attempts == 5
    assert config.retries.initial_backoff.seconds == 1
    assert config.retries.max_backoff.seconds == 300
    assert config.reporters.notes.enabled
    assert config.reporters.notes.ref == "refs/notes/reconciler"
    assert config.reporters.status_branch.branch == "reconciler/status"
    assert config.reporters.forge is None


def test_an_environment_with_no_keys_gets_every_default() -> None:
    staging = Config.from_data(env()).environments["staging"]
    assert staging == Environment()
    assert staging.variables == {}
    assert staging.workloads == ()


def test_config_is_frozen() -> None:
    config = Config.default()
    with pytest.raises(ValidationError):
        config.workloads = ("x",)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.retries.initial_backoff.text = "2s"


def test_sorted_environments_ignore_file_order() -> None:
    config = Config.from_data({"environments": {"prod": {}, "dev": {}, "qa": {}}})
    assert [name for name, _ in config.sorted_environments()] == ["dev", "prod", "qa"]


def test_dump_and_load_round_trip() -> None:
    config = Config.from_data(json.loads(EXAMPLE_JSON))
    dumped = config.model_dump(mode="json", by_alias=True)
    assert dumped["environments"]["staging"]["resync"] == "90s"
    assert Config.from_data(dumped) == config
    assert schema_accepts(dumped)


EXAMPLE_JSON = json.dumps(
    {
        "apiVersion": API_VERSION,
        "environments": {"staging": {"branch": "main", "resync": "90s", "variables": {"a": "b"}}},
        "reporters": {
            "forge": {
                "kind": "gitlab",
                "url": "https://gitlab.com/api/v4",
                "repository": "12345",
                "token_env": "GITLAB_TOKEN",
            }
        },
    }
)


# -- follows ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "follows"),
    [
        ({"branch": "main"}, "refs/heads/main"),
        ({"branch": "release/2.x"}, "refs/heads/release/2.x"),
        ({"ref": "refs/tags/prod"}, "refs/tags/prod"),
        ({"ref": "0123456789abcdef0123456789abcdef01234567"}, "0123456789abcdef" * 2 + "01234567"),
        ({"branch": "main", "ref": None}, "refs/heads/main"),
        ({}, "HEAD"),
    ],
)
def test_follows(fields: dict[str, Any], follows: str) -> None:
    assert Config.from_data(env(**fields)).environments["staging"].follows == follows


def test_branch_and_ref_are_exclusive() -> None:
    assert error_types(env(branch="main", ref="refs/tags/prod")) == {"branch_and_ref"}
    assert not schema_accepts(env(branch="main", ref="refs/tags/prod"))


# -- names and refs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dev", "eu-west-1", "a1", "x" * 63])
def test_valid_environment_names(name: str) -> None:
    assert name in Config.from_data({"environments": {name: {}}}).environments


@pytest.mark.parametrize("name", ["Prod", "-dev", "dev-", "a", "x" * 64, "my_env", "dev.eu", ""])
def test_invalid_environment_names(name: str) -> None:
    data: dict[str, Any] = {"environments": {name: {}}}
    assert not model_accepts(data)
    assert not schema_accepts(data)


@pytest.mark.parametrize("branch", ["main", "release/1.2", "feature/ABC-12_x", "v1.0", "a@b"])
def test_valid_branches(branch: str) -> None:
    assert Config.from_data(env(branch=branch)).environments["staging"].branch == branch


@pytest.mark.parametrize(
    "branch",
    [
        "refs/heads/main",
        "HEAD",
        "a..b",
        "with space",
        "-dash",
        "x.lock",
        "x.lock/y",
        "trailing/",
        "/leading",
        "a//b",
        "x@{1}",
        ".hidden",
        "a/.b",
        "x~1",
        "x^",
        "x:y",
        "what?",
        "st*r",
        "br[ack",
        "back\\slash",
        "dot.",
        "@",
        "tab\there",
        "",
    ],
)
def test_invalid_branches(branch: str) -> None:
    assert not model_accepts(env(branch=branch))
    assert not schema_accepts(env(branch=branch))
    assert not model_accepts(env(deploy_branch=branch))


@pytest.mark.parametrize("ref", ["refs/tags/prod", "HEAD", "refs/heads/main", "abc1234"])
def test_valid_refs(ref: str) -> None:
    assert model_accepts(env(ref=ref))
    assert schema_accepts(env(ref=ref))


@pytest.mark.parametrize("ref", ["refs/tags/a..b", "main~1", "HEAD^", "refs/tags/", ""])
def test_invalid_refs(ref: str) -> None:
    assert not model_accepts(env(ref=ref))
    assert not schema_accepts(env(ref=ref))


@pytest.mark.parametrize("ref", ["refs/heads/notes", "refs/notes/", "notes/x", "refs/notes/a..b"])
def test_notes_ref_must_be_a_notes_ref(ref: str) -> None:
    data = {"reporters": {"notes": {"ref": ref}}}
    assert not model_accepts(data)
    assert not schema_accepts(data)


# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1h0m", 3600), ("90s", 90), ("1m1m", 120)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    duration = Duration.parse(text)
    assert duration.seconds == seconds
    assert duration.timedelta == dt.timedelta(seconds=seconds)
    assert str(duration) == text


@pytest.mark.parametrize(
    "text", ["", "5", "m", "5 m", "-5s", "1.5h", "0s", "0m0s", "5d", "5M", "1h 30m", "\u0665m"]
)
def test_invalid_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        Duration.parse(text)
    assert not model_accepts(env(resync=text))
    assert not schema_accepts(env(resync=text))


def test_durations_compare_by_length_not_spelling() -> None:
    assert Duration.parse("90s") == Duration.parse("1m30s")
    assert Duration.parse("999ms") < Duration.parse("1s")
    assert hash(Duration.parse("60s")) == hash(Duration.parse("1m"))


def test_a_number_is_not_a_duration() -> None:
    assert error_types(env(resync=300)) == {"duration_type"}
    assert not schema_accepts(env(resync=300))


def test_initial_backoff_cannot_exceed_max_backoff() -> None:
    data = {"retries": {"initial_backoff": "10m", "max_backoff": "5m"}}
    assert error_types(data) == {"backoff_bounds"}
    assert model_accepts({"retries": {"initial_backoff": "5m", "max_backoff": "5m"}})


# -- globs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("glob", ["apps/**/score.yaml", "*.score.yaml", "a/b?/[xy].yaml", ".ci/x"])
def test_valid_globs(glob: str) -> None:
    assert Config.from_data({"workloads": [glob]}).workloads == (glob,)


@pytest.mark.parametrize(
    "glob",
    ["/etc/score.yaml", "../x", "a/../b", "a/..", "./a", "a/./b", "a\\b", "a//b", "a/", "", "a/[b"],
)
def test_invalid_globs(glob: str) -> None:
    for key in ("workloads", "exclude", "provisioners", "policies", "workflows"):
        assert not model_accepts({key: [glob]}), key
        assert not schema_accepts({key: [glob]}), key
    assert not model_accepts(env(workloads=[glob]))


# -- strictness and unknown keys --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"workload": ["x"]},
        env(aproval="required"),
        {"retries": {"attempts": 3}},
        {"reporters": {"slack": {}}},
        {"reporters": {"notes": {"enabled": True, "branch": "x"}}},
        {"reporters": {"status_branch": {"ref": "x"}}},
    ],
)
def test_unknown_keys_are_errors(data: dict[str, Any]) -> None:
    assert "extra_forbidden" in error_types(data)
    assert not schema_accepts(data)


@pytest.mark.parametrize(
    "data",
    [
        env(self_heal="yes"),
        env(self_heal=1),
        {"retries": {"max_attempts": "5"}},
        {"retries": {"max_attempts": 5.5}},
        {"retries": {"max_attempts": True}},
        env(variables={"replicas": 3}),
        env(approval="manual"),
        env(target="helm"),
        env(on_failure="retry"),
        {"workloads": "apps/**/score.yaml"},
    ],
)
def test_no_lax_coercion(data: dict[str, Any]) -> None:
    assert not model_accepts(data)
    assert not schema_accepts(data)


@pytest.mark.parametrize("attempts", [0, 101, -1])
def test_max_attempts_bounds(attempts: int) -> None:
    assert not model_accepts({"retries": {"max_attempts": attempts}})
    assert not schema_accepts({"retries": {"max_attempts": attempts}})


def test_a_whole_float_is_an_integer_as_in_json_schema() -> None:
    data = {"retries": {"max_attempts": 3.0}}
    assert schema_accepts(data)
    retries = Config.from_data(data).retries
    assert retries.max_attempts == 3
    assert type(retries.max_attempts) is int


def test_api_version_must_match_when_given() -> None:
    assert model_accepts({"apiVersion": API_VERSION})
    assert not model_accepts({"apiVersion": "reconciler.score.dev/v1"})
    assert not model_accepts({"apiVersion": None})


def test_environments_cannot_be_empty() -> None:
    assert not model_accepts({"environments": {}})
    assert not schema_accepts({"environments": {}})


@pytest.mark.parametrize("name", ["1BAD", "has space", "a.b", "-x", ""])
def test_variable_names(name: str) -> None:
    assert not model_accepts(env(variables={name: "x"}))
    assert model_accepts(env(variables={"cluster_domain": "x", "log-level": "debug"}))


# -- forge ------------------------------------------------------------------------------------

FORGE = {
    "kind": "github",
    "url": "https://api.github.com",
    "repository": "example-shop/shop",
    "token_env": "GITHUB_TOKEN",
}


def test_forge_reporter() -> None:
    forge = Config.from_data({"reporters": {"forge": FORGE}}).reporters.forge
    assert forge is not None
    assert forge.kind == "github"
    assert forge.token_env == "GITHUB_TOKEN"
    assert forge.target_url is None


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "bitbucket"},
        {"url": "api.github.com"},
        {"url": "ftp://example.com"},
        {"url": "https://x.example.com/api?token=1"},
        {"repository": "just-a-name"},
        {"repository": "0"},
        {"token_env": "ghp_abc-123"},
        {"token_env": "1TOKEN"},
        {"token": "ghp_secret"},
        {"target_url": "not a url"},
    ],
)
def test_invalid_forge(change: dict[str, str]) -> None:
    data = {"reporters": {"forge": {**FORGE, **change}}}
    assert not model_accepts(data)
    assert not schema_accepts(data)


@pytest.mark.parametrize("missing", ["kind", "url", "repository", "token_env"])
def test_forge_requires(missing: str) -> None:
    forge = {k: v for k, v in FORGE.items() if k != missing}
    assert error_types({"reporters": {"forge": forge}}) == {"missing"}


# -- branches the reconciler writes -----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"environments": {"staging": {"branch": "main", "deploy_branch": "main"}}},
        {"environments": {"a1": {"deploy_branch": "out"}, "b1": {"deploy_branch": "out"}}},
        {"environments": {"a1": {"branch": "reconciler/status"}}},
        {"environments": {"a1": {"deploy_branch": "reconciler/status"}}},
        {"environments": {"a1": {"branch": "reconciler/deploy/b1"}, "b1": {}}},
    ],
)
def test_written_branches_must_not_collide(data: dict[str, Any]) -> None:
    assert error_types(data) == {"branch_conflict"}
    assert schema_accepts(data)  # a cross-field rule: the model's alone


def test_written_branch_rules_skip_what_is_not_written() -> None:
    disabled = {"enabled": False, "branch": "main"}
    assert model_accepts(
        {"environments": {"a1": {"branch": "main"}}, "reporters": {"status_branch": disabled}}
    )
    kube = {"branch": "main", "target": "kubernetes", "deploy_branch": "main"}
    assert model_accepts({"environments": {"a1": kube}})


# -- the example repository -------------------------------------------------------------------


def test_example_reconciler_yaml_parses() -> None:
    data = YAML(typ="safe").load(EXAMPLE.read_text(encoding="utf-8"))
    assert schema_accepts(data)
    config = Config.from_data(data)
    staging = config.environments["staging"]
    production = config.environments["production"]
    assert staging.follows == "refs/heads/main"
    assert staging.approval == "none"
    assert production.approval == "required"
    assert production.on_failure == "rollback"
    assert config.workloads == ("apps/**/score.yaml",)


def test_example_has_four_workloads_and_a_source_file() -> None:
    apps = sorted(p.parent.name for p in (EXAMPLE.parent / "apps").glob("*/score.yaml"))
    assert apps == ["catalog", "orders", "payments", "storefront"]
    assert (EXAMPLE.parent / "apps" / "storefront" / "nginx.conf").is_file()


# -- the schema -------------------------------------------------------------------------------


def test_checked_in_spec_is_current() -> None:
    assert SPEC.read_text(encoding="utf-8") == render(config_schema())
    assert main(["--check"]) == 0


def test_check_fails_on_a_stale_file_and_write_fixes_it(tmp_path: Path) -> None:
    target = tmp_path / "reconciler.schema.json"
    target.write_text("{}\n", encoding="utf-8")
    assert main(["--check", "--output", str(target)]) == 1
    assert main(["--output", str(target)]) == 0
    assert main(["--check", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8").endswith("}\n")


def test_schema_is_valid_draft_2020_12() -> None:
    schema = config_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == SCHEMA_ID
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def _objects(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [o for item in node for o in _objects(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if "properties" in node else []
    return found + [o for value in node.values() for o in _objects(value)]


def test_every_field_is_described_and_closed() -> None:
    objects = [o for o in _objects(config_schema()) if o.get("type") == "object"]
    assert len(objects) == 9  # Config, Environment, Hooks, Previews, Retries, Reporters + 3
    for obj in objects:
        assert obj["additionalProperties"] is False
        for name, prop in obj["properties"].items():
            assert prop.get("description"), name
            assert "title" not in prop, name


@pytest.mark.parametrize(
    ("data", "valid"),
    [
        ({}, True),
        ({"apiVersion": API_VERSION, "exclude": ["vendor/**"]}, True),
        (env(branch="main", approval="required", on_failure="rollback"), True),
        (env(ref="refs/tags/prod", self_heal=True, resync="1h30m", target="kubernetes"), True),
        (env(variables={"domain": "shop.example.com"}, workloads=["apps/web/**"]), True),
        ({"retries": {"max_attempts": 1, "initial_backoff": "500ms", "max_backoff": "1s"}}, True),
        ({"reporters": {"forge": None, "notes": {"enabled": False}}}, True),
        ({"reporters": {"forge": {**FORGE, "target_url": "https://ci.example.com/r"}}}, True),
        ({"apiVersion": "v1"}, False),
        ({"environments": {"Staging": {}}}, False),
        (env(resync="5 minutes"), False),
        (env(branch="main", ref="refs/tags/x"), False),
        (env(unknown=1), False),
        ({"workloads": ["../other/score.yaml"]}, False),
        ({"retries": {"max_attempts": 0}}, False),
        ({"reporters": {"forge": {"kind": "github"}}}, False),
        ({"environments": []}, False),
        ({"reporters": {"status_branch": {"branch": "refs/heads/status"}}}, False),
        (env(branch="main\n"), False),
        (env(resync="5m\n"), False),
        ({"workloads": ["apps/**/score.yaml\n"]}, False),
        ({"reporters": {"forge": {**FORGE, "token_env": "TOKEN\n"}}}, False),
    ],
)
def test_schema_and_model_agree(data: dict[str, Any], valid: bool) -> None:
    assert model_accepts(data) is valid
    assert schema_accepts(data) is valid
