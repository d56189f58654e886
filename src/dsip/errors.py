"""One exception tree for dsip.

Every error carries two names for what went wrong:

``code``
    The fine-grained, implementation-neutral condition — the verdict codes of the
    conformance vectors (``signature-invalid``, ``replay-window``, ...). Logs, tests
    and the CLI show it.

``reason``
    The wire reason token (v0.7 §15) a peer would see in an ``error``/``reject``.
    Where the spec assigns a token to the condition we use it
    (``transport.envelope-too-large``, ``session.expired``, ``transport.hello-rejected``
    on ``hello``, ...). Envelope conditions the registry does not name get
    ``transport.routing-refused``: the receiver refuses to act on an envelope it cannot
    authenticate. Conditions that never leave this process (a locked wallet, a bad
    configuration file) use our own extension namespace ``x-dsip.*`` (§15.6), which a
    peer would fall back to ``session.failed``.

``remote`` says whose fault it is: ``True`` when the bytes came from a peer,
``False`` for local misuse or local configuration (h11's local/remote split).

Parsers in dsip raise only ``DsipError`` subclasses on hostile input, never
``KeyError``/``ValueError``/``RecursionError``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DsipError",
    "EnvelopeError",
    "FrameTooLargeError",
    "IdentityError",
    "PayloadError",
    "ResolutionError",
    "SchemaError",
    "SemanticError",
    "TransportError",
    "VersionError",
    "WalletError",
]


class DsipError(Exception):
    """Base of every dsip error. ``code`` and ``reason`` are always set."""

    default_code = "dsip-error"
    default_reason = "session.failed"
    default_remote = True

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        reason: str | None = None,
        remote: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: str = code or self.default_code
        self.reason: str = reason or self.default_reason
        self.remote: bool = self.default_remote if remote is None else remote

    def __str__(self) -> str:
        return f"{self.code} ({self.reason}): {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r}, message={self.message!r})"


class EnvelopeError(DsipError):
    """The signed envelope failed verification (pipeline stages 2–11)."""

    default_code = "envelope-shape"
    default_reason = "transport.routing-refused"


class FrameTooLargeError(EnvelopeError):
    """A frame above the 65,536-byte binding constant, refused before parsing (§13.2)."""

    default_code = "frame-too-large"
    default_reason = "transport.envelope-too-large"


class PayloadError(EnvelopeError):
    """The payload bytes violate the §10.3 wire rules (UTF-8, JSON object, no floats)."""

    default_code = "payload-not-json"


class IdentityError(DsipError):
    """A DID, DID URL, key or DID document is malformed or cannot be used."""

    default_code = "did-invalid"
    default_reason = "transport.routing-refused"


class ResolutionError(IdentityError):
    """A DID could not be resolved (network, HTTP status, size cap, bad document)."""

    default_code = "kid-unresolvable"


class VersionError(DsipError):
    """§11 version negotiation failed; ``reason`` is one of the ``session.unsupported-*``."""

    default_code = "version-unsupported"
    default_reason = "session.unsupported-core-version"


class SchemaError(DsipError):
    """The decoded payload fails its JSON Schema, or its ``type`` is unknown (stage 13)."""

    default_code = "schema-invalid"
    default_reason = "transport.routing-refused"


class SemanticError(DsipError):
    """A stateless post-schema check failed (stage 14)."""

    default_code = "semantic-invalid"
    default_reason = "session.failed"


class TransportError(DsipError):
    """A signaling-binding condition (§13): hello binding, framing, connection state."""

    default_code = "transport-error"
    default_reason = "transport.routing-refused"


class WalletError(DsipError):
    """Local key storage: wrong passphrase, unreadable or unsafe wallet file."""

    default_code = "wallet-error"
    default_reason = "x-dsip.wallet-error"
    default_remote = False


class ConfigError(DsipError):
    """Local configuration is invalid; dsip refuses to start rather than guess."""

    default_code = "config-invalid"
    default_reason = "x-dsip.config-invalid"
    default_remote = False
