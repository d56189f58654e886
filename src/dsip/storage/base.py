"""The relay's store-and-forward storage contract (§13.3): records, limits, the protocol.

A relay holds envelopes for *known* but offline recipients and flushes them, in enqueue
order, on the recipient's next binding (§13.2 "Delivery semantics", §13.3). Every backend
(``dsip.storage.sqlite``, ``dsip.storage.postgres``) implements ``EnvelopeStore`` with the
same semantics, and one contract test suite runs against all of them.

What a row holds — and nothing more. The operator's view of the database is an opaque
blob (the envelope's wire bytes, sealed by the messaging layer when it is a message) plus
the minimum needed to route, bound and expire it: recipient, envelope id, size, expiry
and an enqueue sequence number. No sender, no arrival time, no message type.

Semantics shared by every backend:

* **One transaction per call.** ``put`` returns only after its transaction committed
  durably (each backend's docstring states its fsync policy), so a relay may acknowledge
  an envelope to its sender as soon as ``put`` returns.
* **Idempotent put.** ``(recipient, envelope_id)`` is unique: a sender's retry of an
  envelope still held returns ``False`` and stores nothing. After ``ack`` the row is
  gone; a later duplicate would be held again, and the recipient's replay window (§12.9)
  is what dedupes it — the application never sees an envelope id twice.
* **Hold deadline.** A held envelope lives until the earlier of its own ``expires_at``
  and ``now + StoreLimits.retention_s`` (the relay's ``offline_retention_s``, §13.3);
  the stored ``expires_at`` is that deadline. Expiry is silent (§13.3): ``pending``
  skips expired rows, ``purge_expired`` deletes them, and ``put`` drops the recipient's
  own expired rows before checking its quota.
* **Quota per recipient,** both a count and a byte budget over the recipient's
  unexpired envelopes (defaults: 1,000 envelopes, 16 MiB). The check and the insert are
  one transaction serialised per recipient, so concurrent puts can never overshoot. A full
  quota raises ``StoreError(code="store-quota", reason="transport.rate-limited")``,
  which the relay answers with a signed ``error`` (§13.2 forbids silent drops).
* **Deleted only on acknowledgement.** ``ack`` (or expiry) is the only way a held
  envelope leaves the store; delivering it does not.
* **Hostile input** (from the peer that sent the envelope) raises ``StoreError`` with
  ``remote=True`` and never reaches the database: keys are printable ASCII (DIDs and
  envelope ids are) of bounded length, ``wire`` is non-empty ``bytes`` no larger than the
  binding constant, times are integers in ``[0, 2**53)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from dsip.core.jws import MAX_FRAME_BYTES
from dsip.errors import DsipError

__all__ = [
    "MAX_ENVELOPE_ID_CHARS",
    "MAX_PENDING_LIMIT",
    "MAX_RECIPIENT_CHARS",
    "MAX_TIME",
    "EnvelopeStore",
    "PutRequest",
    "StoreError",
    "StoreLimits",
    "StoreStats",
    "StoredEnvelope",
    "check_envelope_id",
    "check_identity",
    "check_limit",
    "check_time",
    "check_wire",
    "quota_error",
]

MAX_RECIPIENT_CHARS = 1024  # a DID or DID URL; generous for did:web paths
MAX_ENVELOPE_ID_CHARS = 256  # DSIP ids are ULIDs (26 chars)
MAX_PENDING_LIMIT = 1000
MAX_TIME = 2**53 - 1  # I-JSON's exact integer range; fits SQLite INTEGER and SQL BIGINT


class StoreError(DsipError):
    """The store refused an operation, or the database failed.

    ``code`` tells which: ``store-quota`` (recipient's quota full), ``store-expired``
    (already expired on arrival), ``store-too-large``, ``store-invalid`` (hostile or
    malformed argument), ``store-closed``, ``store-config`` (bad URL, newer schema,
    missing driver) and ``store-error`` (the database itself failed; ``remote=False``).
    """

    default_code = "store-error"
    default_reason = "transport.routing-refused"
    default_remote = False


@dataclass(frozen=True)
class StoredEnvelope:
    """One held envelope as the store returns it (``seq`` is the enqueue order)."""

    seq: int
    recipient: str
    envelope_id: str
    wire: bytes
    expires_at: int
    size: int


@dataclass(frozen=True)
class StoreStats:
    """Counts over stored rows (expired rows not yet purged included)."""

    envelopes: int
    bytes: int
    recipients: int


@dataclass(frozen=True)
class StoreLimits:
    """Per-recipient quota and hold bounds; one instance per store."""

    max_envelopes_per_recipient: int = 1_000
    max_bytes_per_recipient: int = 16 * 1024 * 1024
    max_envelope_bytes: int = MAX_FRAME_BYTES  # ws/1.0 binding constant (§13.2)
    retention_s: int = 86_400  # offline_retention_s, RECOMMENDED default (§13.3)

    def __post_init__(self) -> None:
        for name in (
            "max_envelopes_per_recipient",
            "max_bytes_per_recipient",
            "max_envelope_bytes",
            "retention_s",
        ):
            value = getattr(self, name)
            if type(value) is not int or not 0 < value <= MAX_TIME:
                raise StoreError(
                    f"StoreLimits.{name} must be a positive integer, got {value!r}",
                    code="store-config",
                    reason="x-dsip.config-invalid",
                )


class EnvelopeStore(Protocol):
    """Durable store-and-forward queue; every method is one transaction."""

    async def put(
        self, recipient: str, envelope_id: str, wire: bytes, *, expires_at: int, now: int
    ) -> bool:
        """Hold ``wire`` for ``recipient``; ``False`` if that envelope id is already held.

        Returns only once the row is durable. Raises ``StoreError`` with code
        ``store-quota`` (reason ``transport.rate-limited``) when the recipient's quota is
        full and ``store-expired`` when ``expires_at <= now``.
        """
        ...

    async def pending(
        self, recipient: str, *, now: int, limit: int = 100, after_seq: int = 0
    ) -> list[StoredEnvelope]:
        """Unexpired envelopes for ``recipient`` with ``seq > after_seq``, in enqueue order."""
        ...

    async def ack(self, recipient: str, envelope_id: str) -> bool:
        """Delete a delivered envelope the recipient acknowledged; ``False`` if unknown."""
        ...

    async def purge_expired(self, now: int) -> int:
        """Delete every envelope whose hold deadline has passed; returns how many."""
        ...

    async def stats(self, recipient: str | None = None) -> StoreStats:
        """Envelope and byte counts, for one recipient or the whole store."""
        ...

    async def remember_identity(self, identity: str, *, now: int) -> None:
        """Record that a device completed a verified ``hello`` for ``identity`` (§13.3)."""
        ...

    async def is_known(self, identity: str, *, now: int, retention_s: int) -> bool:
        """Whether ``identity`` completed a verified hello here within ``retention_s``."""
        ...

    async def forget_identities(self, *, now: int, retention_s: int) -> int:
        """Drop identities last seen more than ``retention_s`` ago; returns how many."""
        ...

    async def close(self) -> None:
        """Finish in-flight calls, then release the database; later calls raise."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """``close()``."""
        ...


def _invalid(message: str) -> StoreError:
    return StoreError(message, code="store-invalid", remote=True)


def _check_key(value: object, what: str, max_chars: int) -> str:
    # Printable ASCII without spaces: every DID and DSIP id fits, and it rules out NULs
    # (PostgreSQL text refuses them), lone surrogates (not encodable) and look-alike keys.
    if type(value) is not str:
        raise _invalid(f"{what} must be a str, got {type(value).__name__}")
    if not 0 < len(value) <= max_chars:
        raise _invalid(f"{what} must be 1..{max_chars} characters, got {len(value)}")
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise _invalid(f"{what} must be printable ASCII without spaces")
    return value


def check_identity(value: object, what: str = "recipient") -> str:
    """A recipient or identity DID, validated (``StoreError`` on hostile input)."""
    return _check_key(value, what, MAX_RECIPIENT_CHARS)


def check_envelope_id(value: object) -> str:
    """An envelope id, validated."""
    return _check_key(value, "envelope_id", MAX_ENVELOPE_ID_CHARS)


def check_time(value: object, what: str) -> int:
    """A Unix time or duration in seconds: an ``int`` (not ``bool``) in ``[0, MAX_TIME]``."""
    if type(value) is not int:
        raise _invalid(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_TIME:
        raise _invalid(f"{what} out of range: {value}")
    return value


def check_limit(value: object, what: str, maximum: int) -> int:
    if type(value) is not int or not 0 < value <= maximum:
        raise _invalid(f"{what} must be an int in 1..{maximum}, got {value!r}")
    return value


def check_wire(value: object, limits: StoreLimits) -> bytes:
    """The envelope's wire bytes (``bytes``, ``bytearray`` or ``memoryview``), bounded."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise _invalid(f"wire must be bytes, got {type(value).__name__}")
    wire = bytes(value)
    if not wire:
        raise _invalid("wire must not be empty")
    if len(wire) > limits.max_envelope_bytes:
        raise StoreError(
            f"envelope is {len(wire)} bytes, above the {limits.max_envelope_bytes}-byte limit",
            code="store-too-large",
            reason="transport.envelope-too-large",
            remote=True,
        )
    return wire


@dataclass(frozen=True)
class PutRequest:
    """``put``'s arguments after validation, with the hold deadline applied (§13.3)."""

    recipient: str
    envelope_id: str
    wire: bytes
    expires_at: int
    now: int

    @classmethod
    def check(
        cls,
        recipient: object,
        envelope_id: object,
        wire: object,
        *,
        expires_at: object,
        now: object,
        limits: StoreLimits,
    ) -> PutRequest:
        now_i = check_time(now, "now")
        expires = check_time(expires_at, "expires_at")
        request = cls(
            check_identity(recipient),
            check_envelope_id(envelope_id),
            check_wire(wire, limits),
            min(expires, now_i + limits.retention_s),
            now_i,
        )
        if expires <= now_i:
            raise StoreError(
                f"envelope {request.envelope_id} expired at {expires}, now is {now_i}",
                code="store-expired",
                remote=True,
            )
        return request

    @property
    def size(self) -> int:
        return len(self.wire)


def quota_error(
    request: PutRequest, held: int, held_bytes: int, limits: StoreLimits
) -> StoreError | None:
    """The quota refusal for ``request`` given what the recipient already holds, if any."""
    if held + 1 > limits.max_envelopes_per_recipient:
        what = f"{held} envelopes held, limit {limits.max_envelopes_per_recipient}"
    elif held_bytes + request.size > limits.max_bytes_per_recipient:
        what = f"{held_bytes} + {request.size} bytes above limit {limits.max_bytes_per_recipient}"
    else:
        return None
    return StoreError(
        f"store quota full for {request.recipient}: {what}",
        code="store-quota",
        reason="transport.rate-limited",
        remote=True,
    )
