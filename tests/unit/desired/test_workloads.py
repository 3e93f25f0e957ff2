"""``resolve_workload``: a workload's placeholders resolved, container by container."""

from __future__ import annotations

from typing import Any

from reconciler.catalogue import Code
from reconciler.desired.workloads import resolve_workload
from reconciler.diagnostics import Diagnostic
from reconciler.score.loader import LoadedWorkload
from reconciler.score.models import Workload
from reconciler.yamldoc import Positions, YamlDocument


def _loaded(containers: dict[str, Any]) -> LoadedWorkload:
    data = {
        "apiVersion": "score.dev/v1b1",
        "metadata": {"name": "web"},
        "containers": containers,
        "resources": {"db": {"type": "postgres"}},
    }
    document = YamlDocument("apps/web/score.yaml", data, Positions())
    return LoadedWorkload(document.file, document, Workload.from_data(data), [])


def _resolve(
    containers: dict[str, Any], outputs: dict[str, Any] | None
) -> tuple[dict[str, Any], list[Diagnostic]]:
    problems: list[Diagnostic] = []
    wl = resolve_workload(
        _loaded(containers), {"db": "postgres.default#web.db"}, {"db": outputs}, {}, problems
    )
    return wl.spec, problems


def test_containers_sharing_variables_resolve_each_as_if_alone() -> None:
    """Each container's variables are what resolving it alone gives (a text resolved once is
    taken again for the next container), and a failing text is reported at each place."""
    shared = {
        "URL": "postgres://${resources.db.host}:${resources.db.port}",
        "NAME": "${metadata.name}",
        "BAD": "${resources.db.missing}",
        "PLAIN": "x",
    }
    both = {
        "api": {"image": "x", "variables": dict(shared)},
        "web": {"image": "y", "variables": dict(shared)},
    }
    for outputs in ({"host": "h", "port": 5432}, None):
        spec, problems = _resolve(both, outputs)
        alone = [_resolve({name: both[name]}, outputs) for name in ("api", "web")]
        assert spec["containers"]["api"] == alone[0][0]["containers"]["api"]
        assert spec["containers"]["web"] == alone[1][0]["containers"]["web"]
        expected = [d.message for _, found in alone for d in found]
        assert [d.message for d in problems] == expected
    spec, problems = _resolve(both, {"host": "h", "port": 5432})
    assert spec["containers"]["web"]["variables"]["URL"] == "postgres://h:5432"
    assert [d.code for d in problems] == [Code.PLACEHOLDER_MISSING_KEY] * 2
    assert {d.message.split(":")[0] for d in problems} == {
        "containers.api.variables.BAD",
        "containers.web.variables.BAD",
    }
