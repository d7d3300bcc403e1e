"""POST /encode and /predict past FastAPI's routing and dependency injection.

Small inference requests are limited by the event loop's thread, and routing (matching the path
against every route), solving dependencies and the exception middleware took about a third of its
time per request. This layer sends those two routes straight to the route functions themselves,
with what the skipped layers did for them done here: the read key when JEPA_AUTH_READS is on,
the route template for metrics, and the app's own exception handlers, so every error answer is
the one FastAPI would give. Everything else, and anything unusual (another method, a trailing
slash), goes through FastAPI as before; the routes stay declared there, so /docs and
/openapi.json document them as they are.

It sits inside the app's outer layers (the body-size limit, the request middleware, the 500
handler), so those apply to both paths alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import Inference, check_read_key
from service.routes import encode, predict

Handler = Callable[[Request, Inference], Awaitable[Response]]

HANDLERS: dict[str, Handler] = {"/encode": encode.encode, "/predict": predict.predict}


class InferenceFastPath:
    def __init__(self, app: ASGIApp, fastapi: FastAPI) -> None:
        self.app, self.fastapi = app, fastapi
        # The routes as their routers declare them (the app includes them without a prefix).
        self.routes = {
            route.path: route
            for module in (encode, predict)
            for route in module.router.routes
            if isinstance(route, APIRoute) and route.path in HANDLERS and "POST" in route.methods
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = HANDLERS.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None or scope["path"] not in self.routes:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.routes[scope["path"]]  # what the metrics label requests by
        request = Request(scope, receive)
        inference: Inference = self.fastapi.state.inference
        try:
            check_read_key(inference.settings, request.headers.get("authorization"))
            response = await handler(request, inference)
        except Exception as exc:  # noqa: BLE001 - answered as FastAPI would, or re-raised
            respond = self._handler_for(exc)
            if respond is None:
                raise  # a bug: the server's 500 handler logs it and answers a typed 500
            response = await respond(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
        """The app's handler for `exc`'s class or its nearest base, short of Exception itself."""
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if (handler := self.fastapi.exception_handlers.get(cls)) is not None:
                return handler  # type: ignore[return-value]
        return None
