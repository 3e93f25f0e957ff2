"""Resource identities: ``type.class#id``, as score-go names them.

Every later stage (the plan, the store, the drivers, the status reports) keys resources by this
string, so it must mean exactly what it means to score-k8s users: a resource declared with an
``id`` is one resource shared by every workload that declares the same type, class and id; one
without is private to its workload, whose name becomes part of the id.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Final

DEFAULT_CLASS: Final = "default"


@dataclass(frozen=True, slots=True, order=True)
class ResourceUid:
    """One resource's identity; ``str()`` gives the form users see and the store keys on."""

    type: str
    class_: str = DEFAULT_CLASS
    id: str = ""

    def __str__(self) -> str:
        return f"{self.type}.{self.class_}#{self.id}"

    @classmethod
    def of(
        cls, workload: str, name: str, type_: str, class_: str | None = None, id_: str | None = None
    ) -> ResourceUid:
        """The identity of resource ``name`` declared by ``workload``.

        Without an ``id`` the identity embeds the workload, so two workloads each declaring a
        ``cache`` get two caches; with one, every declaration of the same type, class and id is
        the same resource.
        """
        return cls(type_, class_ or DEFAULT_CLASS, id_ if id_ else f"{workload}.{name}")


def uid_text(uid: ResourceUid) -> str:
    """``str(uid)``, one object per distinct text while any is alive (``sys.intern``): the
    builder keeps a resource's uid in every declarer's map, in its desired value, in the
    workloads' desired values and dependencies; the same text made anew for each was
    several copies of every uid kept between plans."""
    return sys.intern(str(uid))


def parse(text: str) -> ResourceUid:
    """Read ``type.class#id`` back; ``ValueError`` when the text is not of that form.

    Types and classes never hold a dot (the Score schema forbids it), so the first dot ends the
    type and the first ``#`` ends the class; the id may hold dots (``workload.resource``).
    """
    head, sep, id_ = text.partition("#")
    type_, dot, class_ = head.partition(".")
    if not sep or not dot or not type_ or not class_ or not id_ or "." in class_:
        raise ValueError(f"not a resource uid (type.class#id): {text!r}")
    return ResourceUid(type_, class_, id_)
