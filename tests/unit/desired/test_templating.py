"""Running template provisioners: order of stages, determinism, and every built-in."""

from __future__ import annotations

from typing import Any

import jinja2
import jinja2.sandbox
import pytest

from reconciler.catalogue import Code
from reconciler.desired.identity import ResourceUid, parse
from reconciler.desired.provisioners import (
    Provisioner,
    builtin_provisioner_files,
    jinja_environment,
    load_provisioners,
)
from reconciler.desired.templating import (
    RenderError,
    TemplateInput,
    _services_copy,
    k8s_name,
    merge_patch,
    render,
)

SERVICES = {
    "workload-a": {
        "service_name": "workload-a",
        "ports": {
            "web": {"name": "web", "port": 8080, "target_port": 80, "protocol": "TCP"},
            "8080": {"name": "web", "port": 8080, "target_port": 80, "protocol": "TCP"},
        },
    }
}
ENVIRONMENT = {"name": "staging", "variables": {"domain": "shop.example.com", "LOG": "debug"}}


def _builtin(type_: str) -> Provisioner:
    found, problems = load_provisioners(builtin_provisioner_files())
    assert problems == []
    match = found.match(ResourceUid(type_, "default", "w.r"))
    assert match is not None
    return match


def _one(text: str) -> Provisioner:
    found, problems = load_provisioners([("p.yaml", text.encode())])
    assert problems == []
    return found.provisioners[0]


def _input(uid: str, **kw: Any) -> TemplateInput:
    base: dict[str, Any] = {
        "source_workload": "workload-a",
        "workload_services": SERVICES,
        "environment": ENVIRONMENT,
    }
    return TemplateInput(parse(uid), **{**base, **kw})


# -- every built-in renders on sample data --------------------------------------------------------

BUILTIN_CASES = [
    ("volume", {}, {"source": {"emptyDir": {}}}, []),
    ("environment", {}, {"domain": "shop.example.com", "LOG": "debug"}, []),
    (
        "service-port",
        {"workload": "workload-a", "port": "web"},
        {"hostname": "workload-a", "port": 80},
        [],
    ),
    (
        "service-port",
        {"workload": "workload-a", "port": 8080},
        {"hostname": "workload-a", "port": 80},
        [],
    ),
    ("route", {"host": "shop.example.com", "path": "/", "port": 8080}, {}, ["HTTPRoute"]),
    ("postgres", {}, None, ["Secret", "StatefulSet", "Service"]),
    ("mysql", {}, None, ["Secret", "StatefulSet", "Service"]),
    ("redis", {}, None, ["Secret", "StatefulSet", "Service"]),
    ("amqp", {}, None, ["Secret", "StatefulSet", "Service"]),
    ("s3", {}, None, ["Secret", "StatefulSet", "Service"]),
]


@pytest.mark.parametrize(("type_", "params", "outputs", "kinds"), BUILTIN_CASES)
def test_builtin_renders(
    type_: str, params: dict[str, Any], outputs: dict[str, Any] | None, kinds: list[str]
) -> None:
    provisioner = _builtin(type_)
    result = render(provisioner, _input(f"{type_}.default#workload-a.r", params=params), "seed")
    if outputs is not None:
        assert result.outputs == outputs
    assert sorted(result.outputs) == sorted(provisioner.expected_outputs or result.outputs)
    assert [m["kind"] for m in result.manifests] == kinds
    assert set(provisioner.secret_outputs) <= set(result.outputs)


def test_route_targets_the_service_port() -> None:
    params = {"host": "shop.example.com", "path": "/api", "port": "web"}
    (route,) = render(_builtin("route"), _input("route.default#a.r", params=params), "s").manifests
    rule = route["spec"]["rules"][0]
    assert rule["backendRefs"] == [{"name": "workload-a", "port": 8080}]
    assert rule["matches"][0]["path"] == {"type": "PathPrefix", "value": "/api"}
    assert route["spec"]["hostnames"] == ["shop.example.com"]


def test_dns_host_is_stable_and_under_the_domain() -> None:
    one = render(_builtin("dns"), _input("dns.default#a.dns"), "seed-1").outputs["host"]
    two = render(_builtin("dns"), _input("dns.default#a.dns"), "seed-2").outputs["host"]
    assert one == two
    assert one.startswith("dns")
    assert one.endswith(".shop.example.com")
    local = render(_builtin("dns"), _input("dns.default#a.dns", environment={}), "s")
    assert local.outputs["host"].endswith(".localhost")


@pytest.mark.parametrize(
    ("type_", "params", "message"),
    [
        ("service-port", {"workload": "nope", "port": "web"}, "workload 'nope' does not exist"),
        ("service-port", {"workload": "workload-a", "port": "x"}, "has no service port 'x'"),
        ("route", {"host": "a.b", "path": "/"}, "params 'host', 'path' and 'port' are required"),
        ("route", {"host": "A B", "path": "/", "port": 8080}, "is not a host name"),
    ],
)
def test_builtin_refuses_bad_params(type_: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message) as caught:
        render(_builtin(type_), _input(f"{type_}.default#a.r", params=params), "s")
    assert caught.value.diagnostic.code is Code.PROVISIONER_TEMPLATE_ERROR
    assert caught.value.diagnostic.file == "builtin/builtin.provisioners.yaml"


def test_passwords_are_deterministic_per_seed_and_resource() -> None:
    redis = _builtin("redis")
    first = render(redis, _input("redis.default#a.c"), "seed").outputs["password"]
    assert render(redis, _input("redis.default#a.c"), "seed").outputs["password"] == first
    assert render(redis, _input("redis.default#a.c"), "other").outputs["password"] != first
    assert render(redis, _input("redis.default#b.c"), "seed").outputs["password"] != first
    assert len(first) == 24
    assert first.isalnum()


def test_recorded_state_wins_over_init_and_secrets_come_from_the_seed() -> None:
    state = {"name": "redis-kept"}
    result = render(_builtin("redis"), _input("redis.default#a.c", state=state), "seed")
    again = render(_builtin("redis"), _input("redis.default#a.c"), "seed")
    other = render(_builtin("redis"), _input("redis.default#a.c"), "other-seed")
    assert result.outputs["host"] == "redis-kept"
    assert "password" not in result.state
    assert result.outputs["password"] == again.outputs["password"]
    assert result.outputs["password"] != other.outputs["password"]


def test_rendered_repr_shows_no_secret() -> None:
    result = render(_builtin("postgres"), _input("postgres.default#a.db"), "seed")
    assert result.outputs["password"] not in repr(result)


# -- stages, merge patch, errors ------------------------------------------------------------------

STAGES = """\
- uri: template://t/stages
  type: thing
  init: |
    first: {{ random_string(6) | tojson }}
  state: |
    seen: {{ state.seen | default(0) + 1 }}
    first: {{ init.first | tojson }}
  shared: |
    counters:
      {{ id }}: {{ state.seen }}
    gone: null
  outputs: |
    value: {{ state.first ~ "-" ~ shared.counters[id] }}
    class: {{ class }}
  manifests: |
    - kind: ConfigMap
      data: {{ params | tojson }}
"""


def test_stages_run_in_order_and_shared_is_merge_patched() -> None:
    shared = {"counters": {"other": 9}, "gone": "x", "kept": True}
    data = _input("thing.big#w.t", params={"k": "v"}, state={"seen": 2}, shared=shared)
    result = render(_one(STAGES), data, "seed")
    assert result.state == {"seen": 3, "first": result.init["first"]}
    assert result.shared == {"counters": {"other": 9, "w.t": 3}, "kept": True}
    assert result.outputs == {"value": f"{result.init['first']}-3", "class": "big"}
    assert result.manifests == ({"kind": "ConfigMap", "data": {"k": "v"}},)


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1}, {"a": None}, {}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}, {"a": {"c": 2, "d": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, "text", "text"),
        ("text", {"a": 1}, {"a": 1}),
    ],
)
def test_merge_patch_rfc7386(target: object, patch: object, expected: object) -> None:
    assert merge_patch(target, patch) == expected


@pytest.mark.parametrize(
    ("template", "message", "line"),
    [
        ("  outputs: |\n    a: {{ nope }}\n", "'nope' is undefined", 6),
        ("  outputs: |\n    - 1\n", "must render a YAML map", 6),
        ("  outputs: |\n    x\n    y: {{ fail('stop here') }}\n", "stop here", 6),
        ("  manifests: |\n    a: 1\n", "must render a YAML list of objects", 6),
        ("  outputs: |\n    a: [\n", "not valid YAML", 6),
        ("  outputs: |\n    {{ ''.__class__ }}\n", "unsafe", 6),
    ],
)
def test_template_failures_are_positioned(template: str, message: str, line: int) -> None:
    provisioner = _one("\n\n- uri: template://t/x\n  type: thing\n" + template)
    with pytest.raises(RenderError, match=message) as caught:
        render(provisioner, _input("thing.default#w.x"), "seed")
    assert caught.value.diagnostic.line == line


def test_cmd_provisioners_do_not_render() -> None:
    provisioner = _one("- uri: cmd://./run.sh\n  type: thing\n  args: [a]\n")
    assert provisioner.args == ("a",)
    with pytest.raises(RenderError, match="only template"):
        render(provisioner, _input("thing.default#w.x"), "seed")


def test_k8s_name_is_a_label_and_unique() -> None:
    name = k8s_name("redis", "default", "a.b")
    assert name.startswith("redis-default-a-b-")
    assert name != k8s_name("redis", "default", "a-b")
    long = k8s_name("x" * 100)
    assert len(long) <= 63


def test_plain_workload_services_are_shared_others_copied() -> None:
    """Templates read a desired state's services as they are (the sandbox lets none change
    them); a mapping that is not plain JSON data is copied into plain data first."""
    assert _services_copy.of(SERVICES) is SERVICES
    odd = {"w": {"service_name": "w", "ports": {}, "tags": ("a", "b")}}
    copied = _services_copy.of(odd)
    assert copied is not odd
    assert copied == {"w": {"service_name": "w", "ports": {}, "tags": ["a", "b"]}}
    provisioner = _one(
        "- uri: template://t/x\n  type: thing\n  outputs: |\n"
        "    port: {{ workload_services['workload-a'].ports.web.port }}\n"
    )
    rendered = render(provisioner, _input("thing.default#w.r"), seed="s")
    assert rendered.outputs == {"port": 8080}
    assert SERVICES["workload-a"]["ports"]["web"]["port"] == 8080


def test_plain_copies_every_container_and_spells_every_key_as_text() -> None:
    """Templates and callers never share a mutable value: dicts and lists are copied at any
    depth (a tuple becomes a list), keys become text, JSON scalars are kept and anything else
    is spelled as text."""
    from collections import OrderedDict  # noqa: PLC0415
    from datetime import date  # noqa: PLC0415

    from reconciler.desired.templating import _plain  # noqa: PLC0415

    inner = {"a": [1, 2]}
    value = {1: [True, 1.5, None, "x", inner, (3,)], "d": date(2024, 1, 2), "o": OrderedDict(b=1)}
    copied = _plain(value)
    assert copied == {
        "1": [True, 1.5, None, "x", {"a": [1, 2]}, [3]],
        "d": "2024-01-02",
        "o": {"b": 1},
    }
    assert copied["1"][4] is not inner
    assert copied["1"][4]["a"] is not inner["a"]
    assert type(copied["o"]) is dict


def test_templates_still_see_jinjas_globals() -> None:
    """Compiled templates keep their globals in one dict: Jinja's own (``range``, ``dict``,
    ``namespace``) are still there, and the helpers still come with each stage."""
    provisioner = _one(
        "- uri: template://t/globals\n"
        "  type: thing\n"
        "  outputs: |\n"
        "    {% set ns = namespace(total=0) %}\n"
        "    {% for i in range(4) %}{% set ns.total = ns.total + i %}{% endfor %}\n"
        "    total: {{ ns.total }}\n"
        "    keys: {{ dict(a=1) | list | tojson }}\n"
        "    name: {{ k8s_name('a', 'b') | tojson }}\n"
    )
    rendered = render(provisioner, _input("thing.default#w.r"), "seed")
    assert rendered.outputs == {"total": 6, "keys": ["a"], "name": k8s_name("a", "b")}


@pytest.mark.parametrize(
    "value",
    [
        {"b": [1, "<a&b>"], "a": "it's", "é": None},
        ["x", 1.5, True, {"z": {"y": []}}],
        "plain",
        float("nan"),
        {1: "int key"},
    ],
    ids=["map", "list", "text", "nan", "int-key"],
)
def test_tojson_renders_what_jinja_renders_with_json_dumps(value: object) -> None:
    source = "{{ v | tojson }}|{{ v | tojson(indent=2) }}"
    reference = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    expected = reference.from_string(source).render(v=value)
    assert jinja_environment().from_string(source).render(v=value) == expected


def test_tojson_refuses_what_json_dumps_refuses() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        jinja_environment().from_string("{{ v | tojson }}").render(v={"x": object()})
