"""The contract between a signaling binding and the code above it (§13.1).

A binding MUST give, per connection: reliable delivery, ordered delivery, transport
encryption and server authentication. ``FrameConnection`` is that channel as seen by the
relay and the agent: whole frames in, whole frames out.

* ``str`` frames are DSIP-JOSE (UTF-8 JSON text); ``bytes`` frames are DSIP-COSE (CBOR),
  allowed only after both sides negotiated the ``cose-envelope/1.0`` extension in ``hello``.
* A frame larger than ``MAX_FRAME_BYTES`` is refused by the receiving binding *before* it is
  parsed or even fully buffered (ws: close 1009; QUIC: close with the same application code).
* ``recv`` raises ``ConnectionClosed`` once the peer is gone; ``send`` on a closed connection
  raises it too. Neither ever raises a library-specific exception.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from dsip.core.jws import MAX_FRAME_BYTES
from dsip.core.version import COSE_EXTENSION
from dsip.errors import TransportError

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_HELLO_TIMEOUT",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL",
    "CLOSE_TOO_BIG",
    "COSE_EXTENSION",
    "MAX_FRAME_BYTES",
    "ConnectionClosed",
    "FrameConnection",
]


# Close codes, shared by all bindings (WebSocket numbering; QUIC uses the same numbers as
# application error codes).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL = 1002  # e.g. relay hello in_reply_to mismatch (§13.2 anti-splicing)
CLOSE_POLICY = 1008  # e.g. no verified hello in time, rate limit abuse
CLOSE_TOO_BIG = 1009  # §13.2: frame above 65,536 bytes
CLOSE_HELLO_TIMEOUT = 4000  # application range: no hello within the binding's timeout


class ConnectionClosed(TransportError):
    """The connection is gone (peer closed, network failed, or we closed it)."""

    default_code = "connection-closed"
    default_reason = "transport.routing-refused"

    def __init__(
        self, message: str = "connection closed", *, close_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.close_code = close_code


@runtime_checkable
class FrameConnection(Protocol):
    """One signaling connection carrying whole DSIP frames."""

    @property
    def remote(self) -> str:
        """A printable peer address (for logs and per-IP policy)."""
        ...

    @property
    def remote_ip(self) -> str:
        """The peer's IP address alone (per-IP rate limits)."""
        ...

    async def send(self, frame: str | bytes) -> None:
        """Queue one frame; waits while the binding's send buffer is full (backpressure)."""
        ...

    async def recv(self) -> str | bytes:
        """The next whole frame; raises ``ConnectionClosed`` when the peer is gone."""
        ...

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close; idempotent."""
        ...

    @property
    def closed(self) -> bool: ...
