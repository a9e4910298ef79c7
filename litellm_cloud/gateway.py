"""The composition root: build every part of the gateway once, from one ``Settings``.

LiteLLM loads ``custom_auth.py`` by file path, once per name that the config references, so that
module must hold no state of its own. It asks ``gateway()`` instead, which builds the one ``Gateway`` of
this process on first use from the process environment. Everything below it receives what it needs
as arguments; nothing else reads the environment.

One life cycle for the process: ``build_gateway`` installs LiteLLM's adaptations (``_litellm_compat``;
the speed cuts, ``_litellm_speed``, ``_litellm_stream``, ``_litellm_sse``, ``_litellm_router`` and
``_litellm_refusal``) and builds the parts;
``gateway()`` mounts our routes and calls ``Gateway.start``, which starts the background tasks (the
revocation listener, the limiter's lease heartbeat, the fleet's ``/metrics`` scraper, the event-loop lag sampler, the
garbage-collection pause metrics) on the running event loop. Before that it freezes what start-up built
out of the garbage collector's reach (``_serve.freeze_heap``, ``HEARTCODE_GC_FREEZE``).
LiteLLM imports ``custom_auth`` inside its start-up (``proxy_startup_event`` loads the config), so that
loop is the one that serves requests; no request starts anything.

Which failure hook wins. LiteLLM runs ``async_post_call_failure_hook`` of every callback, in the order
of ``litellm_settings.callbacks`` (``fleet.render.CALLBACKS``: access, fleet, limits, observability), and
answers with the *first* replacement one returns. Only two ever replace an error:

1. ``access_hook``: LiteLLM's own refusals of a client's request (routing fields, a URL-valued model)
   become ``400 invalid_request``;
2. ``fleet_hook``: an outage of the model group becomes ``503 model_unavailable`` (never one of our
   own errors).

Access first is right: a request LiteLLM refused as malformed never reached a server, and a client told
"retry shortly" would send the same request again. The limits hook only gives the reservation back and
the observability hook only records (reading the original error, as ``_record.outcome`` predicts what
the fleet hook makes of it): neither replaces anything, so their place after the two is free.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from dataclasses import dataclass

from fastapi import APIRouter

from . import (
    _litellm_compat,
    _litellm_refusal,
    _litellm_router,
    _litellm_speed,
    _litellm_sse,
    _litellm_stream,
    _serve,
    front,
)
from ._config import Settings
from .auth import AccessHook, Auth, build_auth
from .fleet.hook import FleetHook
from .fleet.queue import build_queue_router
from .limits import LimitsHook, TierLimits, build_limits, install_keepalive_headers
from .observability import GcWatch, LoopLagSampler, Metrics, ObservabilityHook, build_observability_hook, watch_gc
from .observability.metrics import MULTIPROC_ENV
from .playground import playground_router

log = logging.getLogger("litellm_cloud.gateway")


@dataclass(frozen=True)
class Gateway:
    """The parts LiteLLM calls into: the auth function and the hooks named in the config."""

    settings: Settings
    metrics: Metrics
    auth: Auth
    limits: TierLimits
    fleet_hook: FleetHook
    observability_hook: ObservabilityHook
    loop_lag: LoopLagSampler
    gc_watch: GcWatch

    @property
    def access_hook(self) -> AccessHook:
        return self.auth.access_hook

    @property
    def limits_hook(self) -> LimitsHook:
        return self.limits.hook

    def routers(self) -> list[APIRouter]:
        """Our own HTTP routes: key revocation, ``/v1/usage``, ``/metrics``, the playground page."""
        routers = [self.auth.router, self.limits.router, self.observability_hook.router, playground_router()]
        return [r for r in routers if r is not None]

    def mount(self, app: object) -> None:
        """Put our routes first in LiteLLM's FastAPI app, ahead of its catch-all routes, and the front
        (body guard, header filter, refusal log) around it."""
        routes = [route for router in self.routers() for route in router.routes]
        app.router.routes[0:0] = routes  # type: ignore[attr-defined]
        front.install(app)

    def start(self) -> None:
        """Start the background tasks on the running event loop (idempotent)."""
        asyncio.get_running_loop()  # fail before starting either, not between them
        self.auth.revocations.start()
        self.limits.limiter.start_heartbeat()
        self.fleet_hook.start()
        self.loop_lag.start()
        self.gc_watch.start()

    async def stop(self) -> None:
        """The gateway's part of the proxy's shutdown, once requests in flight have finished (their limits
        settled as each ended): stop sampling the loop's lag and timing collections, send the traces
        still queued, bounded, off the event loop."""
        await self.loop_lag.stop()
        await self.gc_watch.stop()
        await asyncio.to_thread(self.observability_hook.close)


def build_gateway(settings: Settings, *, metrics_dir: str | None = None) -> Gateway:
    """Wire the gateway's parts together from ``settings``; ``metrics_dir`` is the process group's
    multiprocess metrics directory when several workers serve (``proxy.worker_env`` sets it)."""
    _litellm_compat.install()
    _litellm_speed.install()
    _litellm_stream.middle_chunks_from_template()
    _litellm_sse.fast_chunk_serialization()
    _litellm_refusal.skip_proxy_logging_of_refusals()
    _litellm_router.skip_untracked_deployment_usage()
    install_keepalive_headers()
    metrics = Metrics(multiprocess_dir=metrics_dir)
    return Gateway(
        settings=settings,
        metrics=metrics,
        auth=build_auth(settings, metrics),
        limits=build_limits(settings, metrics),
        fleet_hook=FleetHook(settings.fleet, settings.tiers, build_queue_router(settings.fleet)),
        observability_hook=build_observability_hook(settings, metrics),
        loop_lag=LoopLagSampler(metrics.event_loop_lag),
        gc_watch=watch_gc(metrics),
    )


@functools.cache
def gateway() -> Gateway:
    """The gateway of this process, built from ``os.environ`` on first call."""
    built = build_gateway(Settings.from_env(os.environ), metrics_dir=os.environ.get(MULTIPROC_ENV) or None)
    from litellm.proxy.proxy_server import app  # the running proxy's app; imported only inside it

    built.mount(app)
    # This process serves (one worker, or one of several spawned ones): its shutdown drains open
    # connections first, and ends with the gateway's own.
    _serve.install_drain(built.settings.shutdown_grace)
    _litellm_compat.on_app_shutdown(built.stop)
    if built.settings.gc_freeze:
        # Most of what the process keeps exists by now (LiteLLM's import and ours, the config; the router
        # LiteLLM builds after this is small). Frozen, a full collection no longer walks it, and no longer
        # stops every request in flight for up to a second (``_serve.freeze_heap``, bench/README.md).
        built.metrics.gc_frozen(_serve.freeze_heap())
    built.metrics.gc_threshold(_serve.collect_less_often(built.settings.gc_threshold))
    try:
        built.start()
    except RuntimeError:  # imported outside LiteLLM's start-up: say so rather than run without them
        log.error("no running event loop: revocation listener and lease heartbeat not started")
    return built
