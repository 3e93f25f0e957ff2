"""The template driver: real renders of real provisioners, stable across applies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from reconciler.catalogue import Code
from reconciler.desired.provisioners import (
    ProvisionerSet,
    builtin_provisioner_files,
    load_provisioners,
)
from reconciler.providers.base import DriverError, ResourceRequest, ResourceResult
from reconciler.providers.registry import driver_for
from reconciler.providers.template import SEED_KEY, TemplateDriver

CUSTOM = """\
- uri: template://team/cache
  type: cache
  expected_outputs: [host, token, shards]
  secret_outputs: [token, shards]
  init: |
    token: {{ random_password(20) | tojson }}
  shared: |
    caches: {{ ((shared.caches | default([])) + [id]) | tojson }}
  outputs: |
    host: {{ ("cache-" ~ id ~ "." ~ environment.name) | tojson }}
    token: {{ init.token | tojson }}
    shards: {{ params.shards | default(2) }}
  manifests: |
    - kind: ConfigMap
      metadata: {name: {{ k8s_name(id) | tojson }}}
- uri: template://team/marker
  type: marker
  manifests: |
    - kind: Marker
- uri: template://team/broken
  type: broken
  outputs: |
    x: {{ params.missing.deeper }}
"""


def _provisioners() -> ProvisionerSet:
    found, problems = load_provisioners([("p.yaml", CUSTOM.encode()), *builtin_provisioner_files()])
    assert problems == []
    return found


def _request(uid: str, uri: str, **changes: Any) -> ResourceRequest:
    type_, _, rest = uid.partition(".")
    class_, _, id_ = rest.partition("#")
    request = ResourceRequest(
        environment="staging",
        uid=uid,
        type=type_,
        class_=class_,
        id=id_,
        params={},
        metadata={},
        source_workload="shop",
        provisioner_uri=uri,
    )
    return replace(request, **changes)


def _again(request: ResourceRequest, result: ResourceResult) -> ResourceRequest:
    """The next apply's request, as the engine builds it from what it recorded."""
    return replace(
        request,
        previous_state=result.state,
        previous_outputs=result.outputs,
        previous_secrets=result.secrets,
        shared=result.shared,
    )


@pytest.fixture
def driver() -> TemplateDriver:
    return TemplateDriver(_provisioners())


def test_builtin_postgres_splits_the_password_into_secrets(driver: TemplateDriver) -> None:
    result = driver.apply(_request("postgres.default#shop.db", "template://builtin/postgres"))
    assert sorted(result.outputs) == ["database", "host", "name", "port", "username"]
    assert result.outputs["port"] == 5432
    assert len(result.secrets["password"]) == 24
    assert "password" not in result.outputs
    assert [m["kind"] for m in result.manifests] == ["Secret", "StatefulSet", "Service"]


def test_second_apply_gives_the_same_outputs_and_secrets(driver: TemplateDriver) -> None:
    request = _request("postgres.default#shop.db", "template://builtin/postgres")
    first = driver.apply(request)
    second = driver.apply(_again(request, first))
    assert (second.outputs, second.secrets) == (first.outputs, first.secrets)


def test_the_seed_alone_keeps_generated_values_stable(driver: TemplateDriver) -> None:
    """``team/cache`` keeps nothing in its state: only the seed makes the token stable."""
    request = _request("cache.default#sessions", "template://team/cache", params={"shards": 4})
    first = driver.apply(request)
    assert first.state == {}
    assert SEED_KEY not in first.state
    again = driver.apply(replace(request, previous_secrets={SEED_KEY: first.secrets[SEED_KEY]}))
    assert again.secrets == first.secrets
    fresh = driver.apply(request)
    assert fresh.secrets["token"] != first.secrets["token"]


def test_secret_outputs_are_text_and_shared_state_is_merged(driver: TemplateDriver) -> None:
    request = _request(
        "cache.default#sessions",
        "template://team/cache",
        params={"shards": 4},
        shared={"caches": ["orders"], "other": 1},
    )
    result = driver.apply(request)
    assert result.outputs == {"host": "cache-sessions.staging"}
    assert result.secrets["shards"] == "4"
    assert len(result.secrets["token"]) == 20
    assert result.shared == {"caches": ["orders", "sessions"], "other": 1}
    assert result.manifests[0]["metadata"]["name"].startswith("sessions-")


def test_a_failing_template_is_a_template_error(driver: TemplateDriver) -> None:
    with pytest.raises(DriverError) as caught:
        driver.apply(_request("broken.default#b", "template://team/broken"))
    assert (caught.value.code, caught.value.retryable) == (Code.PROVISIONER_TEMPLATE_ERROR, False)
    assert "template://team/broken" in caught.value.message


def test_a_provisioner_that_does_not_serve_the_resource_is_refused(
    driver: TemplateDriver,
) -> None:
    with pytest.raises(DriverError) as caught:
        driver.apply(_request("redis.default#c", "template://team/cache"))
    assert caught.value.code is Code.NO_PROVISIONER


def test_observe_and_delete(driver: TemplateDriver) -> None:
    request = _request("dns.default#site", "template://builtin/dns")
    assert driver.observe(request).exists is False
    result = driver.apply(request)
    observed = driver.observe(_again(request, result))
    assert (observed.exists, observed.outputs) == (True, result.outputs)
    driver.delete(_again(request, result))  # nothing outside the store to remove


def test_a_resource_with_only_manifests_still_observes_as_existing(
    driver: TemplateDriver,
) -> None:
    request = _request("marker.default#m", "template://team/marker")
    result = driver.apply(request)
    assert (result.state, result.outputs, list(result.secrets)) == ({}, {}, [SEED_KEY])
    assert driver.observe(_again(request, result)).exists is True


def test_registry_picks_the_template_driver_without_an_admin_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RECONCILER_POSTGRES_URL", raising=False)
    driver = driver_for("template://builtin/postgres", provisioners=_provisioners())
    assert isinstance(driver, TemplateDriver)
    with pytest.raises(DriverError) as caught:
        driver_for("oci://x/y", provisioners=_provisioners())
    assert caught.value.code is Code.PROVISIONER_INVALID
