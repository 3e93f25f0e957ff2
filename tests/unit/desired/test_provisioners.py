"""Provisioner files: strict loading with positions, and first-match precedence."""

from __future__ import annotations

import pytest

from reconciler.catalogue import Code
from reconciler.desired.identity import ResourceUid
from reconciler.desired.provisioners import (
    ProvisionerSet,
    builtin_provisioner_files,
    load_provisioners,
)

BUILTIN_TYPES = {
    "postgres", "mysql", "redis", "amqp", "s3", "dns", "route", "volume", "service-port",
    "environment",
}  # fmt: skip


def _load(text: str, name: str = "provisioners/p.yaml") -> tuple[ProvisionerSet, list[str]]:
    found, problems = load_provisioners([(name, text.encode())])
    return found, [f"{p.code.id} {p.file}:{p.line}:{p.column} {p.message}" for p in problems]


def test_builtins_load_cleanly_and_cover_the_types() -> None:
    found, problems = load_provisioners(builtin_provisioner_files())
    assert problems == []
    assert {p.type for p in found} >= BUILTIN_TYPES
    assert all(p.uri.startswith("template://builtin/") for p in found)
    assert all(p.file.startswith("builtin/") for p in found)


def test_a_full_template_provisioner_loads() -> None:
    found, problems = _load(
        """\
- uri: template://acme/db
  type: postgres
  class: large
  id: shop-db
  description: a big one
  supported_params: [size]
  expected_outputs: [host, password]
  secret_outputs: [password]
  init: |
    a: 1
  outputs: |
    host: {{ uid }}
"""
    )
    assert problems == []
    (provisioner,) = found
    assert (provisioner.class_, provisioner.id) == ("large", "shop-db")
    assert provisioner.secret_outputs == ("password",)
    assert provisioner.template_line("outputs") == 12
    assert (provisioner.file, provisioner.line) == ("provisioners/p.yaml", 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "- uri: template://x\n  type: redis\n  output: |\n    a: 1\n",
            "RCN-2004 provisioners/p.yaml:3:3 [0].output: unknown key; did you mean 'outputs'?",
            id="unknown-key",
        ),
        pytest.param(
            "- type: redis\n",
            "RCN-2004 provisioners/p.yaml:1:3 [0]: missing required key 'uri'",
            id="missing-uri",
        ),
        pytest.param(
            "- uri: http://x\n  type: redis\n",
            "RCN-2004 provisioners/p.yaml:1:8 [0].uri: 'http://x' must start with template:// "
            "or cmd://",
            id="bad-scheme",
        ),
        pytest.param(
            "- uri: cmd://python3/x\n  type: redis\n",
            "RCN-2004 provisioners/p.yaml:1:8 [0].uri: 'cmd://python3/x': a program looked up "
            "on PATH takes no path after it",
            id="cmd-path-after-program",
        ),
        pytest.param(
            "- uri: cmd://./run.sh\n  type: redis\n  init: 'a: 1'\n",
            "RCN-2004 provisioners/p.yaml:3:3 [0].init: unknown key; 'init' is for template:// "
            "provisioners (a cmd:// one prints it)",
            id="template-key-on-cmd",
        ),
        pytest.param(
            "- uri: template://x\n  type: redis\n  supported_params: host\n",
            "RCN-2004 provisioners/p.yaml:3:21 [0].supported_params: must be a list of strings",
            id="list-of-strings",
        ),
        pytest.param(
            "- uri: template://x\n  type: redis\n  expected_outputs: [host]\n"
            "  secret_outputs: [password]\n",
            "RCN-2004 provisioners/p.yaml:4:20 [0].secret_outputs: 'password' is not one of the "
            "expected_outputs",
            id="secret-not-expected",
        ),
        pytest.param(
            "uri: template://x\n",
            "RCN-2004 provisioners/p.yaml:1:1 a provisioner file is a YAML list of provisioners",
            id="not-a-list",
        ),
        pytest.param(
            "- uri: template://x\n  type: redis\n  type: dns\n",
            "RCN-1008 provisioners/p.yaml:3:3 duplicate key 'type' (first defined at line 2)",
            id="duplicate-key",
        ),
    ],
)
def test_strict_loading_errors(text: str, expected: str) -> None:
    found, problems = _load(text)
    assert problems == [expected]
    assert len(found) == 0


def test_template_syntax_error_points_at_its_line_in_the_file() -> None:
    text = (
        "- uri: template://x\n"
        "  type: redis\n"
        "  outputs: |\n"
        "    host: a\n"
        "    port: 5432\n"
        "    user: {% endif %}\n"
        "    name: x\n"
    )
    _, problems = _load(text)
    assert len(problems) == 1
    assert problems[0].startswith("RCN-2004 provisioners/p.yaml:6:1 [0].outputs: template syntax")


def test_valid_entries_of_a_file_with_errors_still_load() -> None:
    found, problems = _load(
        "- uri: template://ok\n  type: redis\n- uri: template://bad\n  type: redis\n  x: 1\n"
    )
    assert [p.uri for p in found] == ["template://ok"]
    assert len(problems) == 1


def test_several_files_report_every_problem() -> None:
    _, problems = load_provisioners(
        [("a.yaml", b"- type: x1\n"), ("b.yaml", b"- uri: template://y\n")]
    )
    assert [(p.file, p.code) for p in problems] == [
        ("a.yaml", Code.PROVISIONER_INVALID),
        ("b.yaml", Code.PROVISIONER_INVALID),
    ]


# -- matching -------------------------------------------------------------------------------------

REPO = b"""\
- uri: template://repo/redis-any
  type: redis
- uri: template://repo/redis-ha
  type: redis
  class: ha
"""
SPECIFIC = b"""\
- uri: template://specific/redis-main
  type: redis
  id: main-cache
- uri: template://specific/redis-ha-main
  type: redis
  class: ha
  id: main-cache
"""


@pytest.mark.parametrize(
    ("files", "uid", "expected"),
    [
        pytest.param(
            ["repo", "builtin"],
            "redis.default#w.c",
            "template://repo/redis-any",
            id="repo-before-builtin",
        ),
        pytest.param(["builtin"], "redis.default#w.c", "template://builtin/redis", id="builtin"),
        pytest.param(["repo"], "redis.ha#w.c", "template://repo/redis-any", id="first-match-wins"),
        pytest.param(
            ["specific", "repo"],
            "redis.ha#main-cache",
            "template://specific/redis-main",
            id="id-only-any-class",
        ),
        pytest.param(
            ["specific", "repo"], "redis.ha#other", "template://repo/redis-any", id="id-must-equal"
        ),
        pytest.param(["specific"], "redis.large#x", None, id="none"),
        pytest.param(
            ["repo", "builtin"],
            "postgres.default#w.db",
            "template://builtin/postgres",
            id="falls-to-builtin",
        ),
    ],
)
def test_match_precedence(files: list[str], uid: str, expected: str | None) -> None:
    available = {
        "repo": [("provisioners/repo.yaml", REPO)],
        "specific": [("provisioners/specific.yaml", SPECIFIC)],
        "builtin": builtin_provisioner_files(),
    }
    found, problems = load_provisioners([f for name in files for f in available[name]])
    assert problems == []
    match = found.match(uid)
    assert (match.uri if match else None) == expected


def test_match_accepts_a_uid_value() -> None:
    found, _ = load_provisioners([("r.yaml", REPO)])
    match = found.match(ResourceUid("redis", "ha", "x"))
    assert match is not None
    assert match.uri == "template://repo/redis-any"
