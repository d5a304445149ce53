"""``create_app(settings)``: the FastAPI application; nothing is built at import time.

The lifespan opens the store (recovering jobs left running), starts the executor (local
worker pool or Ray) and stops it again on shutdown, so a TestClient used as a context manager
leaves no process behind.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from server.allow import AllowedMethods
from server.artifacts import Artifacts
from server.deps import caller, rate_limit
from server.errors import install_handlers
from server.executor import make_executor
from server.metrics import Metrics
from server.middleware import BodySizeLimit
from server.openapi import GUARDED, errors, install_openapi
from server.ratelimit import RateLimiter
from server.routes import events, meta, models, page, verifications
from server.sandbox import DeviceProbe, Sandbox
from server.settings import Settings
from server.store import Store

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """The service for ``settings`` (store, artifacts and workers start with the lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.data_dir, max_attempts=settings.max_attempts)
        artifacts = Artifacts(settings.data_dir)
        jobs = make_executor(settings, store, artifacts, app.state.metrics)
        app.state.store, app.state.artifacts, app.state.jobs = store, artifacts, jobs
        try:
            jobs.start()
        except BaseException:
            store.close()
            raise
        log.info("nncert service: data in %s, %d worker(s), %s executor", settings.data_dir,
                 settings.workers, settings.executor)
        try:
            yield
        finally:
            jobs.stop()
            store.close()

    app = FastAPI(title="nncert", version="1", lifespan=lifespan,
                  description="Neural-network verification service: ONNX + VNN-LIB -> verdict.")
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.sandbox = Sandbox(settings)
    app.state.devices = DeviceProbe(app.state.sandbox)
    app.state.limiter = (RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
                         if settings.rate_limit_per_s > 0 else None)
    install_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    guarded = [Depends(caller), Depends(rate_limit)]
    app.include_router(meta.router)
    app.include_router(page.router)
    api = (models.router, events.router, verifications.router)
    for router in api:
        app.include_router(router, dependencies=guarded, responses=errors(*GUARDED))
    app.add_middleware(AllowedMethods, routes=[route for router in (meta.router, page.router,
                                                                    *api)
                                               for route in router.routes])
    install_openapi(app, settings)
    return app
