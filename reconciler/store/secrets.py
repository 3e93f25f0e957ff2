"""Ciphertext of secret values, kept by reference: the built-in secret store's table.

Who calls it: ``providers.secrets.EncryptedSecretStore``, which encrypts before it writes and
decrypts after it reads; nothing here ever sees a plain value or the key. Functions rather than
``Store`` methods keep the secret store's one table out of the class every caller uses. Each
call joins the caller's ``Store.transaction()`` when there is one.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, select

from reconciler.store.store import Store
from reconciler.store.tables import secrets


def put_secret(store: Store, ref: str, ciphertext: bytes) -> None:
    """Insert or replace the ciphertext kept under ``ref``; ``created_at`` survives a replace."""
    put_secrets(store, {ref: ciphertext})


def put_secrets(store: Store, ciphertexts: Mapping[str, bytes]) -> None:
    """``put_secret`` for several references in one statement and one transaction."""
    if not ciphertexts:
        return
    now = store.now()
    rows = [
        {"ref": ref, "ciphertext": text.decode("ascii"), "created_at": now, "updated_at": now}
        for ref, text in sorted(ciphertexts.items())
    ]
    with store._write() as conn:
        store._upsert(conn, secrets, rows, keep=frozenset({"created_at"}))


def get_secret(store: Store, ref: str) -> bytes | None:
    """The ciphertext kept under ``ref``, or None when there is none."""
    with store._read() as conn:
        found = conn.execute(select(secrets.c.ciphertext).where(secrets.c.ref == ref))
        text: str | None = found.scalar_one_or_none()
    return None if text is None else text.encode("ascii")


def delete_secret(store: Store, ref: str) -> None:
    """Forget ``ref``; deleting one that is not there is not an error (deletes are retried)."""
    with store._write() as conn:
        conn.execute(delete(secrets).where(secrets.c.ref == ref))
