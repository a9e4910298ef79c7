"""The composition root: build every part of the gateway once, from one ``Settings``.

LiteLLM loads ``custom_auth.py`` by file path, once per name that the config references, so that
module must hold no state of its own. It asks ``gateway()`` instead, which builds the one ``Gateway`` of
this process on first use from the process environment. Everything below it receives what it needs
as arguments; nothing else reads the environment.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from fastapi import APIRouter
from litellm.integrations.custom_logger import CustomLogger

from ._config import Settings
from .auth import Auth, build_auth
from .fleet.hook import FleetHook
from .fleet.queue import build_queue_router
from .limits import build_limits_hook
from .observability import Metrics, build_observability_hook
from .playground import playground_router


@dataclass(frozen=True)
class Gateway:
    """The parts LiteLLM calls into: the auth function and the hooks named in the config."""

    settings: Settings
    metrics: Metrics
    auth: Auth
    access_hook: CustomLogger
    fleet_hook: CustomLogger
    limits_hook: CustomLogger
    observability_hook: CustomLogger

    def routers(self) -> list[APIRouter]:
        """Our own HTTP routes (revocation, usage, metrics, the playground page), from whichever parts define them."""
        parts = (self.auth, self.limits_hook, self.observability_hook)
        found = [r for r in (getattr(p, "router", None) for p in parts) if isinstance(r, APIRouter)]
        return [*found, playground_router()]

    def mount(self, app: object) -> None:
        """Put our routes first in LiteLLM's FastAPI app, ahead of its catch-all routes."""
        routes = [route for router in self.routers() for route in router.routes]
        app.router.routes[0:0] = routes  # type: ignore[attr-defined]


def build_gateway(settings: Settings) -> Gateway:
    """Wire the gateway's parts together from ``settings``."""
    metrics = Metrics.create()
    auth = build_auth(settings, metrics)
    return Gateway(
        settings=settings,
        metrics=metrics,
        auth=auth,
        access_hook=auth.access_hook,
        fleet_hook=FleetHook(settings.fleet, settings.tiers, build_queue_router(settings.fleet)),
        limits_hook=build_limits_hook(settings, metrics),
        observability_hook=build_observability_hook(settings, metrics),
    )


@functools.cache
def gateway() -> Gateway:
    """The gateway of this process, built from ``os.environ`` on first call."""
    built = build_gateway(Settings.from_env(os.environ))
    from litellm.proxy.proxy_server import app  # the running proxy's app; imported only inside it

    built.mount(app)
    return built
