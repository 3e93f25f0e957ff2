"""A real ``ApiServer`` on 127.0.0.1 (a free port), with recording handlers and an httpx client."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from reconciler.daemon.http import ApiReaders, ApiServer, Handlers, Limits, ReadinessCheck, Webhooks
from reconciler.daemon.metrics import create_metrics
from reconciler.daemon.webhooks import DeliveryCache, ForgeEvent, Provider
from tests.unit.daemon.support import SECRET, FakeClock

RUNS: Mapping[str, Mapping[str, Any]] = {
    "r-1": {"id": "r-1", "environment": "prod", "status": "Succeeded"},
}


@dataclass
class Backend:
    """What the server's handlers see and do; tests change it before requests."""

    events: list[ForgeEvent] = field(default_factory=list)
    wanted: bool = True
    raise_on_event: bool = False
    not_ready: dict[str, str] = field(default_factory=dict)

    def on_event(self, event: ForgeEvent) -> bool:
        if self.raise_on_event:
            raise RuntimeError("queue is gone")
        self.events.append(event)
        return self.wanted

    def check(self, name: str) -> ReadinessCheck:
        return ReadinessCheck(name, lambda: self.not_ready.get(name))


@dataclass
class Served:
    server: ApiServer
    client: httpx.Client
    backend: Backend
    handlers: Handlers


@contextmanager
def serve(
    limits: Limits | None = None, providers: tuple[Provider, ...] = tuple(Provider)
) -> Iterator[Served]:
    backend = Backend()
    handlers = Handlers(
        metrics=create_metrics(),
        webhooks=Webhooks(
            secrets=dict.fromkeys(providers, SECRET),
            on_event=backend.on_event,
            deliveries=DeliveryCache(FakeClock()),
        ),
        api=ApiReaders(
            environments=lambda: [{"name": "prod", "branch": "main"}],
            workloads=lambda: [{"environment": "prod", "name": "shop", "sync": "Synced"}],
            run=RUNS.get,
        ),
        readiness=(backend.check("store"), backend.check("repository")),
    )
    server = ApiServer(("127.0.0.1", 0), handlers, limits)
    with server, httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10.0) as client:
        yield Served(server, client, backend, handlers)


@pytest.fixture
def served() -> Iterator[Served]:
    with serve() as served:
        yield served


@pytest.fixture
def small_served() -> Iterator[Served]:
    """Tight limits, to reach them with small requests."""
    limits = Limits(
        max_body_bytes=1024,
        max_request_line=256,
        max_header_bytes=1024,
        socket_timeout=0.2,
        max_connections=1,
    )
    with serve(limits) as served:
        yield served
