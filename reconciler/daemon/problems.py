"""RFC 9457 problem documents: how every HTTP error of the daemon is answered.

The HTTP server builds a ``Problem`` for each refusal (bad signature, unknown run, not ready) so
that forges' delivery logs, ``curl`` and scripts all see the same shape: the catalogue code, its
title and docs URL, and a detail naming what was wrong with this request. Nothing here knows about
sockets; ``http.py`` writes the bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from reconciler.catalogue import Code

CONTENT_TYPE = "application/problem+json"


class ProblemCode(Protocol):
    """What a problem needs from a code; ``Code`` provides it."""

    @property
    def id(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def hint(self) -> str: ...

    @property
    def docs_url(self) -> str: ...


@dataclass(frozen=True, slots=True)
class FieldError:
    """One thing wrong with a request; ``pointer`` is a JSON Pointer fragment (``#/ref``)."""

    detail: str
    pointer: str


@dataclass(frozen=True, slots=True)
class Problem:
    """An HTTP error answer; ``instance`` is the request path, which names this occurrence."""

    code: Code
    status: int
    detail: str
    instance: str
    errors: tuple[FieldError, ...] = ()

    def document(self) -> dict[str, object]:
        """The JSON members; the hint rides along as an extension member users can act on."""
        code: ProblemCode = self.code
        doc: dict[str, object] = {
            "type": code.docs_url,
            "title": code.title,
            "status": self.status,
            "detail": self.detail,
            "instance": self.instance,
            "code": code.id,
            "hint": code.hint,
        }
        if self.errors:
            doc["errors"] = [{"detail": e.detail, "pointer": e.pointer} for e in self.errors]
        return doc

    def body(self) -> bytes:
        return json.dumps(self.document(), sort_keys=True).encode()
