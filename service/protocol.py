"""uvicorn's HTTP protocol with a deadline on each request's headers.

uvicorn closes idle keep-alive connections, but a client that trickles a request's headers a byte
at a time holds its connection (and a file descriptor) for as long as it likes: slowloris. Here
every request must finish its headers within `header_timeout_s` of its first byte (or of the
connection opening), or the connection is closed. Bodies are bounded by JEPA_MAX_BODY_BYTES.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@lru_cache(maxsize=1)
def header_timeout_s() -> float:
    # Read in each process from its environment: with --workers N, uvicorn starts the class
    # anew in N spawned processes, where anything set on it in the supervisor would be lost.
    from service.settings import get_settings

    return get_settings().header_timeout_s


class HeaderDeadlineProtocol(HttpToolsProtocol):
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:  # the next request on a kept-alive connection
            self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(header_timeout_s(), self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers took over %.0f s", header_timeout_s())
            self.transport.close()
