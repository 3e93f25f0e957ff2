"""Secret stores: Fernet ciphertext in a real SQLite store file, and Vault through the real hvac
client against a FAKE Vault (tests/support/fake_vault.py) speaking the KV v2 HTTP API."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import hvac  # type: ignore[import-untyped]
import pytest
from cryptography.fernet import Fernet

from reconciler.catalogue import Code
from reconciler.desired.secrets import secret_ref
from reconciler.providers.base import DriverError
from reconciler.providers.secrets import (
    KEY_ENV,
    KEY_FILE_ENV,
    EncryptedSecretStore,
    VaultSecretStore,
    secret_store_from_env,
)
from reconciler.store import Store
from reconciler.store.secrets import get_secret, put_secret
from tests.support.fake_vault import FakeVault

REF = secret_ref("prod", "postgres.default#shop-db", "password")
OTHER = secret_ref("prod", "redis.default#cache", "password")
CANARY = "canary-3f9c1e7a-never-in-the-file"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (KEY_ENV, KEY_FILE_ENV, "VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db_file: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{db_file}") as opened:
        yield opened


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    value = Fernet.generate_key()
    monkeypatch.setenv(KEY_ENV, value.decode())
    return value


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    with FakeVault() as running:
        yield running


def _vault_store(vault: FakeVault, token: str | None = None, **kw: str) -> VaultSecretStore:
    return VaultSecretStore(hvac.Client(url=vault.url, token=token or vault.token, timeout=5), **kw)


# -- the encrypted store ---------------------------------------------------------------------


def test_encrypted_round_trip_and_the_file_holds_no_plain_value(
    store: Store, key: bytes, db_file: Path
) -> None:
    secrets = EncryptedSecretStore.from_env(store)
    secrets.put(REF, CANARY)
    secrets.put(OTHER, "second")
    assert (secrets.get(REF), secrets.get(OTHER)) == (CANARY, "second")
    store.close()
    raw = b"".join(p.read_bytes() for p in db_file.parent.glob("state.db*"))
    assert REF.encode() in raw  # the reference is stored: the search reads the right file
    assert CANARY.encode() not in raw


def test_encrypted_put_many_keeps_every_value_sealed_in_one_write(
    store: Store, key: bytes, db_file: Path
) -> None:
    secrets = EncryptedSecretStore.from_env(store)
    secrets.put(REF, "old")
    with store.transaction():  # joins the caller's transaction, like every store call
        secrets.put_many({REF: CANARY, OTHER: "second"})
    assert (secrets.get(REF), secrets.get(OTHER)) == (CANARY, "second")
    secrets.put_many({})
    store.close()
    raw = b"".join(p.read_bytes() for p in db_file.parent.glob("state.db*"))
    assert OTHER.encode() in raw
    assert CANARY.encode() not in raw


def _put_then_fail(store: Store, secrets: EncryptedSecretStore) -> None:
    with store.transaction():
        secrets.put_many({REF: CANARY})
        secrets.delete(OTHER)
        raise RuntimeError("the step's record could not be written")


def test_encrypted_writes_roll_back_with_the_callers_transaction(store: Store, key: bytes) -> None:
    """What lets the runner write a resource's secrets with its record, in one transaction."""
    secrets = EncryptedSecretStore.from_env(store)
    assert secrets.in_state_store
    secrets.put(OTHER, "kept")
    with pytest.raises(RuntimeError):
        _put_then_fail(store, secrets)
    assert (secrets.get(REF), secrets.get(OTHER)) == (None, "kept")


def test_encrypted_replace_delete_and_missing(store: Store, key: bytes) -> None:
    secrets = EncryptedSecretStore.from_env(store)
    secrets.put(REF, "one")
    secrets.put(REF, "two")
    assert secrets.get(REF) == "two"
    secrets.delete(REF)
    secrets.delete(REF)  # deleting twice is fine: deletes are retried
    assert (secrets.get(REF), get_secret(store, REF)) == (None, None)


def test_key_from_a_file(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "secret.key"
    key_file.write_text(Fernet.generate_key().decode() + "\n")
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    secrets = secret_store_from_env(store)
    assert isinstance(secrets, EncryptedSecretStore)
    secrets.put(REF, "v")
    assert secrets.get(REF) == "v"


def test_no_key_is_secret_key_missing(store: Store) -> None:
    with pytest.raises(DriverError) as caught:
        secret_store_from_env(store)
    assert (caught.value.code, caught.value.retryable) == (Code.SECRET_KEY_MISSING, False)


@pytest.mark.parametrize("bad", ["not-a-key", "c2hvcnQ="])
def test_a_malformed_key_is_refused(
    store: Store, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv(KEY_ENV, bad)
    with pytest.raises(DriverError) as caught:
        EncryptedSecretStore.from_env(store)
    assert caught.value.code is Code.SECRET_KEY_MISSING
    assert bad not in str(caught.value)


def test_another_key_cannot_read_and_rotation_keeps_old_values(
    store: Store, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    EncryptedSecretStore.from_env(store).put(REF, "old")
    new = Fernet.generate_key().decode()
    monkeypatch.setenv(KEY_ENV, new)
    with pytest.raises(DriverError) as caught:
        EncryptedSecretStore.from_env(store).get(REF)
    assert caught.value.code is Code.SECRET_STORE_FAILED
    monkeypatch.setenv(KEY_ENV, f"{new},{key.decode()}")
    rotated = EncryptedSecretStore.from_env(store)
    assert rotated.get(REF) == "old"
    rotated.put(OTHER, "new")
    monkeypatch.setenv(KEY_ENV, new)
    assert EncryptedSecretStore.from_env(store).get(OTHER) == "new"


def test_a_ciphertext_moved_to_another_ref_does_not_decrypt(store: Store, key: bytes) -> None:
    secrets = EncryptedSecretStore.from_env(store)
    secrets.put(REF, "for-the-database")
    stolen = get_secret(store, REF)
    assert stolen is not None
    put_secret(store, OTHER, stolen)
    with pytest.raises(DriverError) as caught:
        secrets.get(OTHER)
    assert caught.value.code is Code.SECRET_STORE_FAILED


# -- the Vault store, against the FAKE Vault -------------------------------------------------


def test_vault_round_trip_with_the_real_hvac_client(vault: FakeVault) -> None:
    secrets = _vault_store(vault, mount="secret", prefix="team/reconciler")
    secrets.put(REF, CANARY)
    assert secrets.get(REF) == CANARY
    path = "team/reconciler/prod/postgres.default#shop-db/password"
    assert vault.value("secret", path) == {"value": CANARY}
    assert ("POST", f"/v1/secret/data/{path}", vault.token) in vault.requests


def test_vault_put_many_writes_each_reference(vault: FakeVault) -> None:
    secrets = _vault_store(vault)
    assert not secrets.in_state_store  # the runner writes to Vault outside any transaction
    secrets.put_many({REF: CANARY, OTHER: "second"})
    assert (secrets.get(REF), secrets.get(OTHER)) == (CANARY, "second")


def test_vault_new_versions_and_delete_destroys_all(vault: FakeVault) -> None:
    secrets = _vault_store(vault)
    secrets.put(REF, "v1")
    secrets.put(REF, "v2")
    path = secrets.path_of(REF)
    assert len(vault.secrets[("secret", path)]) == 2
    assert secrets.get(REF) == "v2"
    secrets.delete(REF)
    assert ("secret", path) not in vault.secrets
    assert secrets.get(REF) is None
    secrets.delete(REF)  # already gone: fine


def test_vault_soft_deleted_latest_version_reads_as_missing(vault: FakeVault) -> None:
    secrets = _vault_store(vault)
    secrets.put(REF, "v1")
    client = hvac.Client(url=vault.url, token=vault.token)
    client.secrets.kv.v2.delete_latest_version_of_secret(path=secrets.path_of(REF))
    assert secrets.get(REF) is None


def test_vault_refused_token_is_not_retryable(vault: FakeVault) -> None:
    with pytest.raises(DriverError) as caught:
        _vault_store(vault, token="wrong").put(REF, "v")
    assert (caught.value.code, caught.value.retryable) == (Code.SECRET_STORE_FAILED, False)
    assert vault.value("secret", "score-reconciler/prod/postgres.default#shop-db/password") is None


def test_vault_down_is_retryable(vault: FakeVault) -> None:
    vault.fail_next(503)
    with pytest.raises(DriverError) as caught:
        _vault_store(vault).get(REF)
    assert (caught.value.code, caught.value.retryable) == (Code.SECRET_STORE_FAILED, True)


def test_vault_unreachable_is_retryable() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secrets = VaultSecretStore(hvac.Client(url=f"http://127.0.0.1:{port}", token="t", timeout=2))
    with pytest.raises(DriverError) as caught:
        secrets.put(REF, CANARY)
    assert (caught.value.code, caught.value.retryable) == (Code.SECRET_STORE_FAILED, True)
    assert CANARY not in str(caught.value)


def test_vault_refuses_refs_that_would_climb_out_of_the_prefix(vault: FakeVault) -> None:
    with pytest.raises(DriverError):
        _vault_store(vault).put("secret://prod/../x", "v")
    assert vault.requests == []


def test_from_env_picks_vault_when_vault_addr_is_set(
    vault: FakeVault, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_ADDR", vault.url)
    monkeypatch.setenv("VAULT_TOKEN", vault.token)
    secrets = secret_store_from_env(store)
    assert isinstance(secrets, VaultSecretStore)
    secrets.put(REF, "through-env")
    assert vault.value("secret", secrets.path_of(REF)) == {"value": "through-env"}


def test_from_env_with_vault_addr_but_no_token_fails(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:8200")
    with pytest.raises(DriverError) as caught:
        secret_store_from_env(store)
    assert caught.value.code is Code.SECRET_STORE_FAILED
