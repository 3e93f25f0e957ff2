"""Where secret values live: encrypted in the state store, or in Vault.

Who calls it: the daemon at start (``secret_store_from_env``) and the engine, which puts each
secret a driver returns under its reference (``secret://<environment>/<uid>/<key>``) and reads
it back for the next call. Neither store ever logs or echoes a value.

- ``EncryptedSecretStore`` encrypts with Fernet (AES-128-CBC and HMAC-SHA256) under a key from
  ``RECONCILER_SECRET_KEY`` or the file ``RECONCILER_SECRET_KEY_FILE``, and keeps only the
  ciphertext, in the store's ``secrets`` table. Several comma-separated keys rotate: the first
  encrypts, every one decrypts. The reference is sealed inside the ciphertext, so a ciphertext
  copied onto another reference in the database does not decrypt there.
- ``VaultSecretStore`` writes to a KV version 2 engine through hvac at
  ``<mount>/<prefix>/<environment>/<uid>/<key>``; delete destroys every version.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from reconciler.catalogue import Code
from reconciler.desired.secrets import SCHEME
from reconciler.providers.base import DriverError, SecretStore
from reconciler.store import Store, StoreError
from reconciler.store.secrets import delete_secret, get_secret, put_secret, put_secrets

if TYPE_CHECKING:
    import hvac

KEY_ENV: Final = "RECONCILER_SECRET_KEY"
KEY_FILE_ENV: Final = "RECONCILER_SECRET_KEY_FILE"
VAULT_ADDR_ENV: Final = "VAULT_ADDR"
VAULT_TOKEN_ENV: Final = "VAULT_TOKEN"
VAULT_NAMESPACE_ENV: Final = "VAULT_NAMESPACE"
VAULT_MOUNT_ENV: Final = "RECONCILER_VAULT_MOUNT"
VAULT_PREFIX_ENV: Final = "RECONCILER_VAULT_PREFIX"
DEFAULT_MOUNT: Final = "secret"
DEFAULT_PREFIX: Final = "score-reconciler"
VALUE_FIELD: Final = "value"
_SEAL: Final = "\x00"


def secret_store_from_env(store: Store) -> SecretStore:
    """Vault when ``VAULT_ADDR`` is set (with ``VAULT_TOKEN``), else the encrypted store."""
    if os.environ.get(VAULT_ADDR_ENV):
        return VaultSecretStore.from_env()
    return EncryptedSecretStore.from_env(store)


class EncryptedSecretStore:
    """Fernet ciphertext in the state store; the key stays in the process."""

    in_state_store = True

    def __init__(self, store: Store, keys: list[bytes]) -> None:
        if not keys:
            raise DriverError(Code.SECRET_KEY_MISSING, "no key to encrypt secrets with")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as exc:
            raise DriverError(
                Code.SECRET_KEY_MISSING,
                "the secret key is not 32 bytes in URL-safe base64 "
                "(make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')",
            ) from exc
        self._store = store

    @classmethod
    def from_env(cls, store: Store) -> EncryptedSecretStore:
        """Keys from ``RECONCILER_SECRET_KEY`` or, failing that, ``RECONCILER_SECRET_KEY_FILE``."""
        text = os.environ.get(KEY_ENV, "")
        if not text.strip() and os.environ.get(KEY_FILE_ENV):
            path = Path(os.environ[KEY_FILE_ENV])
            try:
                text = path.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise DriverError(
                    Code.SECRET_KEY_MISSING, f"{KEY_FILE_ENV}: cannot read {path}: {exc}"
                ) from exc
        keys = [k.strip().encode("ascii", "replace") for k in text.split(",") if k.strip()]
        if not keys:
            raise DriverError(
                Code.SECRET_KEY_MISSING, f"neither {KEY_ENV} nor {KEY_FILE_ENV} gives a key"
            )
        return cls(store, keys)

    def put(self, ref: str, value: str) -> None:
        token = self._seal(ref, value)
        with _store_errors(ref):
            put_secret(self._store, ref, token)

    def put_many(self, values: Mapping[str, str]) -> None:
        """Every value in one transaction: a resource's secrets are all kept, or none."""
        tokens = {ref: self._seal(ref, value) for ref, value in values.items()}
        with _store_errors(", ".join(sorted(values))):
            put_secrets(self._store, tokens)

    def _seal(self, ref: str, value: str) -> bytes:
        return self._fernet.encrypt(f"{ref}{_SEAL}{value}".encode())

    def get(self, ref: str) -> str | None:
        with _store_errors(ref):
            token = get_secret(self._store, ref)
        if token is None:
            return None
        try:
            sealed = self._fernet.decrypt(token).decode()
        except (InvalidToken, UnicodeDecodeError) as exc:
            raise DriverError(
                Code.SECRET_STORE_FAILED,
                f"{ref}: cannot be decrypted with the configured key(s)",
            ) from exc
        owner, _, value = sealed.partition(_SEAL)
        if owner != ref:
            raise DriverError(
                Code.SECRET_STORE_FAILED, f"{ref}: the stored ciphertext belongs to another ref"
            )
        return value

    def delete(self, ref: str) -> None:
        with _store_errors(ref):
            delete_secret(self._store, ref)


@contextmanager
def _store_errors(ref: str) -> Iterator[None]:
    """Store failures as secret store failures: a database that cannot be reached may come
    back; anything else (read-only, newer schema) needs a person."""
    try:
        yield
    except StoreError as exc:
        raise DriverError(
            Code.SECRET_STORE_FAILED,
            f"{ref}: {exc}",
            retryable=exc.code is Code.STORE_UNREACHABLE,
        ) from exc


class VaultSecretStore:
    """Secrets in a Vault KV v2 engine, one Vault secret per reference (field ``value``)."""

    in_state_store = False

    def __init__(
        self, client: hvac.Client, *, mount: str = DEFAULT_MOUNT, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self._client = client
        self._mount = mount.strip("/")
        self._prefix = prefix.strip("/")

    @classmethod
    def from_env(cls) -> VaultSecretStore:
        """``VAULT_ADDR``, ``VAULT_TOKEN`` (and ``VAULT_NAMESPACE``) as the Vault CLI reads them;
        ``RECONCILER_VAULT_MOUNT`` and ``RECONCILER_VAULT_PREFIX`` say where under it."""
        token = os.environ.get(VAULT_TOKEN_ENV, "")
        if not token:
            raise DriverError(
                Code.SECRET_STORE_FAILED, f"{VAULT_ADDR_ENV} is set but {VAULT_TOKEN_ENV} is not"
            )
        # Imported here, as in every use below: hvac (and requests under it) is about 6 MiB of
        # every process's memory otherwise, for setups that use Vault only.
        import hvac  # noqa: PLC0415

        client = hvac.Client(
            url=os.environ[VAULT_ADDR_ENV],
            token=token,
            namespace=os.environ.get(VAULT_NAMESPACE_ENV) or None,
            timeout=10,
        )
        return cls(
            client,
            mount=os.environ.get(VAULT_MOUNT_ENV) or DEFAULT_MOUNT,
            prefix=os.environ.get(VAULT_PREFIX_ENV) or DEFAULT_PREFIX,
        )

    def path_of(self, ref: str) -> str:
        """The path under the mount: the prefix, then the reference's parts
        (``secret://prod/postgres.default#db/password`` → ``<prefix>/prod/postgres.default#db/
        password``). hvac escapes each character that means something in a URL."""
        parts = ref.removeprefix(SCHEME).split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise DriverError(Code.SECRET_STORE_FAILED, f"'{ref}' cannot name a Vault path")
        return "/".join([self._prefix, *parts] if self._prefix else parts)

    def put(self, ref: str, value: str) -> None:
        path = self.path_of(ref)
        with _vault_errors(ref):
            self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret={VALUE_FIELD: value}, mount_point=self._mount
            )

    def put_many(self, values: Mapping[str, str]) -> None:
        """One Vault secret per reference, written in turn (KV v2 has no batch write)."""
        for ref, value in sorted(values.items()):
            self.put(ref, value)

    def get(self, ref: str) -> str | None:
        from hvac.exceptions import InvalidPath  # noqa: PLC0415

        path = self.path_of(ref)
        with _vault_errors(ref):
            try:
                answer = self._client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self._mount, raise_on_deleted_version=True
                )
            except InvalidPath:
                return None
        value = (answer.get("data") or {}).get("data", {}).get(VALUE_FIELD)
        if not isinstance(value, str):
            raise DriverError(
                Code.SECRET_STORE_FAILED, f"{ref}: the Vault secret has no '{VALUE_FIELD}' field"
            )
        return value

    def delete(self, ref: str) -> None:
        from hvac.exceptions import InvalidPath  # noqa: PLC0415

        path = self.path_of(ref)
        with _vault_errors(ref):
            try:
                self._client.secrets.kv.v2.delete_metadata_and_all_versions(
                    path=path, mount_point=self._mount
                )
            except InvalidPath:
                return


@contextmanager
def _vault_errors(ref: str) -> Iterator[None]:
    """hvac's errors as ``DriverError``: Vault down, sealed, rate-limited or unreachable may
    pass; a refused token or a bad request will not."""
    from hvac import exceptions  # noqa: PLC0415

    may_recover = (
        exceptions.VaultDown,
        exceptions.InternalServerError,
        exceptions.BadGateway,
        exceptions.RateLimitExceeded,
    )
    try:
        yield
    except exceptions.VaultError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise DriverError(
            Code.SECRET_STORE_FAILED,
            f"{ref}: Vault answered {type(exc).__name__}: {reason}",
            retryable=isinstance(exc, may_recover),
        ) from exc
    except OSError as exc:  # requests' errors (refused, reset, timed out) derive from OSError
        raise DriverError(
            Code.SECRET_STORE_FAILED,
            f"{ref}: Vault cannot be reached: {type(exc).__name__}",
            retryable=True,
        ) from exc
