"""The PostgreSQL driver against the real server (``RECONCILER_TEST_POSTGRES``, default local).

The server trusts every local connection, so "the password works" is checked against the
SCRAM-SHA-256 verifier the server keeps in ``pg_authid``: the same computation a client proves
at login. Every test uses its own environment name, so names never collide between runs, and
drops what it made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg import sql

from reconciler.catalogue import Code
from reconciler.desired.provisioners import ProvisionerSet
from reconciler.providers.base import DriverError, ResourceRequest, ResourceResult
from reconciler.providers.postgres import PostgresDriver, names_for, scram_verifier
from reconciler.providers.registry import driver_for

SERVER = os.environ.get("RECONCILER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
ADMIN = f"{SERVER}/postgres"


def _admin() -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(ADMIN, autocommit=True, connect_timeout=3)


@pytest.fixture
def environment() -> Iterator[str]:
    """A fresh environment name; afterwards every database and role it named is dropped."""
    try:
        _admin().close()
    except psycopg.OperationalError as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {SERVER}: {error}")
        pytest.skip(f"PostgreSQL is not reachable at {SERVER}: {error}")
    name = f"t{secrets.token_hex(4)}"
    yield name
    with _admin() as conn:
        pattern = f"{name}\\_%"
        for (db,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,)
        ):
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
        for (role,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (pattern,)
        ):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _request(
    environment: str, uid: str = "postgres.default#shop-db", **changes: Any
) -> ResourceRequest:
    type_, _, rest = uid.partition(".")
    class_, _, id_ = rest.partition("#")
    request = ResourceRequest(
        environment=environment,
        uid=uid,
        type=type_,
        class_=class_,
        id=id_,
        params={},
        metadata={},
        source_workload="shop",
        provisioner_uri="template://builtin/postgres",
    )
    return replace(request, **changes)


def _again(request: ResourceRequest, result: ResourceResult) -> ResourceRequest:
    return replace(
        request,
        previous_state=result.state,
        previous_outputs=result.outputs,
        previous_secrets=result.secrets,
    )


def _password_matches(role: str, password: str) -> bool:
    """Check ``password`` against the server's SCRAM verifier for ``role`` (RFC 5802)."""
    with _admin() as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
        ).fetchone()
    assert row is not None
    assert row[0].startswith("SCRAM-SHA-256$")
    iterations_salt, keys = row[0].removeprefix("SCRAM-SHA-256$").split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key = base64.b64decode(keys.split(":")[0])
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


def _exists(name: str) -> tuple[bool, bool]:
    with _admin() as conn:
        database = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    return database is not None, role is not None


def test_apply_creates_a_database_its_role_can_use(environment: str) -> None:
    result = PostgresDriver(ADMIN).apply(_request(environment))
    name = result.outputs["database"]
    assert result.outputs == {
        "host": "127.0.0.1",
        "port": 5432,
        "name": name,
        "database": name,
        "username": name,
    }
    assert _exists(name) == (True, True)
    password = result.secrets["password"]
    assert _password_matches(name, password)
    assert not _password_matches(name, password + "x")
    url = f"{SERVER.replace('postgres@', f'{name}:{password}@')}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int)")  # the role owns the database
        assert conn.execute("SELECT current_user").fetchone() == (name,)


def test_apply_twice_is_one_database_with_the_same_password(environment: str) -> None:
    driver = PostgresDriver(ADMIN)
    request = _request(environment)
    first = driver.apply(request)
    second = driver.apply(_again(request, first))
    assert (second.outputs, second.secrets) == (first.outputs, first.secrets)
    assert _password_matches(first.outputs["username"], first.secrets["password"])
    with _admin() as conn:
        count = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"{environment}\\_%",)
        ).fetchone()
    assert count == (1,)


def test_an_existing_role_without_a_known_password_gets_a_new_one(environment: str) -> None:
    driver = PostgresDriver(ADMIN)
    first = driver.apply(_request(environment))
    lost = driver.apply(_request(environment))  # the secret store lost the password
    assert lost.secrets["password"] != first.secrets["password"]
    assert _password_matches(lost.outputs["username"], lost.secrets["password"])


def test_connection_limit_follows_the_params(environment: str) -> None:
    driver = PostgresDriver(ADMIN)
    request = _request(environment, params={"connection_limit": 5})
    first = driver.apply(request)
    driver.apply(_again(replace(request, params={"connection_limit": 7}), first))
    name = first.outputs["database"]
    with _admin() as conn:
        limits = conn.execute(
            "SELECT d.datconnlimit, r.rolconnlimit FROM pg_database d, pg_roles r"
            " WHERE d.datname = %s AND r.rolname = %s",
            (name, name),
        ).fetchone()
    assert limits == (7, 7)
    with pytest.raises(DriverError) as caught:
        driver.apply(_request(environment, params={"connection_limit": "many"}))
    assert caught.value.code is Code.POSTGRES_DRIVER_FAILED


def test_other_roles_cannot_connect(environment: str) -> None:
    driver = PostgresDriver(ADMIN)
    mine = driver.apply(_request(environment))
    other = driver.apply(_request(environment, uid="postgres.default#other-db"))
    url = f"{SERVER.replace('postgres@', other.outputs['username'] + '@')}/{mine.outputs['name']}"
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(url).close()


def test_delete_drops_database_and_role_even_when_in_use(environment: str) -> None:
    driver = PostgresDriver(ADMIN)
    request = _request(environment)
    result = driver.apply(request)
    name = result.outputs["database"]
    assert driver.observe(_again(request, result)).exists is True
    url = f"{SERVER.replace('postgres@', f'{name}@')}/{name}"
    with psycopg.connect(url, autocommit=True):  # an open session does not stop the drop
        driver.delete(_again(request, result))
    assert _exists(name) == (False, False)
    observed = driver.observe(_again(request, result))
    assert (observed.exists, observed.healthy) == (False, False)
    driver.delete(_again(request, result))  # gone already: fine


def test_observe_reports_a_missing_database(environment: str) -> None:
    driver = PostgresDriver(ADMIN)
    request = _request(environment)
    result = driver.apply(request)
    name = result.outputs["database"]
    with _admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    observed = driver.observe(_again(request, result))
    assert (observed.exists, observed.healthy) == (True, False)
    assert "database" in observed.message


def test_unreachable_admin_server_is_retryable() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    driver = PostgresDriver(f"postgresql://postgres:hunter2@127.0.0.1:{port}/postgres")
    with pytest.raises(DriverError) as caught:
        driver.apply(_request("prod"))
    error = caught.value
    assert (error.code, error.retryable) == (Code.POSTGRES_DRIVER_FAILED, True)
    assert "hunter2" not in str(error)


def test_a_malformed_admin_url_is_not_retryable() -> None:
    with pytest.raises(DriverError) as caught:
        PostgresDriver("postgresql://h/db?nonsense_option=1")
    assert (caught.value.code, caught.value.retryable) == (Code.POSTGRES_DRIVER_FAILED, False)


def test_names_are_stable_safe_and_apart() -> None:
    long_uid = "postgres.default#" + "Very.Long-Workload_Name" * 5
    names = {
        names_for("prod", "postgres.default#shop-db"),
        names_for("staging", "postgres.default#shop-db"),
        names_for("prod", "postgres.default#shop.db"),
        names_for("prod", long_uid),
        names_for("9x", "postgres.default#1"),
    }
    assert len(names) == 5
    assert names_for("prod", "postgres.default#shop-db") == names_for(
        "prod", "postgres.default#shop-db"
    )
    for name in names:
        assert len(name) <= 63
        assert name[0].isalpha()
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")


def test_scram_verifier_has_postgresql_form() -> None:
    verifier = scram_verifier("pw", salt=b"0123456789abcdef")
    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert verifier == scram_verifier("pw", salt=b"0123456789abcdef")


def test_registry_picks_postgres_when_an_admin_server_is_configured() -> None:
    driver = driver_for(
        "template://builtin/postgres", provisioners=ProvisionerSet(), postgres_url=ADMIN
    )
    assert isinstance(driver, PostgresDriver)
