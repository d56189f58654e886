"""A relay cluster: several ``dsip relay`` processes serving one domain as one relay.

What the nodes share, and through what (no consensus or gossip of our own):

* **Identity.** Every node runs with the same relay key (``--identity-seed-file``) and DID,
  so a client's relay hello verifies the same whichever node it reached.
* **Durable state: PostgreSQL** (``--store postgresql://…``). The store-and-forward queue,
  the known identities and custody acknowledgements live in the one database that every
  node writes. :mod:`dsip.storage.postgres` already serialises per-recipient writers with
  advisory locks, so a queue never depends on which node stored or flushes it.
* **Bindings and cross-node routing: NATS** (``--cluster nats://…``, Debian
  ``nats-server``, client ``nats-py``). A node that binds a device subscribes to one
  subject per DID it now serves (the device DID and its identity DID); NATS's own interest
  graph *is* the binding table, so no node keeps a copy that could go stale. To deliver to
  a DID bound nowhere locally, a node sends a NATS request on that DID's subject: a node
  that holds a binding hands the frame to its connections and replies; *no responders*
  (NATS 2.2+ answers that at once) or no reply within ``deliver_timeout_s`` means nobody
  holds the DID right now, and the envelope goes to the shared queue. After storing, a node
  publishes a "stored" notice on the subject, so a node where the recipient bound a moment
  earlier flushes it (the race between "nobody bound" and "just bound" closes either way).

Why the queue is PostgreSQL and not JetStream: the store-and-forward queue is more than a
log — per-recipient quotas, per-envelope expiry, custody acknowledgement of individual
envelope ids, and "is this identity served here" all need transactional reads and writes
on the same rows, which the PostgreSQL store already does and tests (including two writer
processes at once). A JetStream stream per recipient would keep a second copy of durable
state with its own failure modes. NATS carries only what is live; if the NATS server is
down, nodes still serve their own clients and queue everything else in PostgreSQL.

Delivery guarantees: a frame handed to a remote node's live connection is delivered as on
a single relay (at most once while live; envelopes stored for an offline recipient are
kept until acknowledged, so a node killed mid-flush loses nothing and the recipient's
duplicate-id check — which every DSIP receiver runs — hides a redelivery).

Limits, said plainly: the NATS link between nodes is inside the operator's trust domain
(nodes do not re-verify frames a peer node forwards; run NATS with TLS and credentials in
production); per-DID rate limits and the replay cache are per node; forking (§12.7) spans
the devices bound at the node that received the invite — devices of the same identity on
other nodes get plain (non-invite) envelopes, not forked invites.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dsip.errors import ConfigError

__all__ = ["ClusterBus", "ClusterConfig"]

logger = logging.getLogger("dsip.cluster")

_WIRE_HEADER = "Dsip-Wire"  # "jose" (text frame) or "cose" (binary frame)
_DELIVERED = b"delivered"

DeliverLocal = Callable[[str, str | bytes], Awaitable[bool]]
FlushLocal = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ClusterConfig:
    """``nats_url``: the NATS server(s), comma-separated; ``name``: nodes with the same name
    are one relay (it prefixes every subject, so clusters can share a NATS server)."""

    nats_url: str
    name: str = "dsip"
    deliver_timeout_s: float = 1.0
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        for url in self.servers:
            parts = urlsplit(url)
            if parts.scheme not in ("nats", "tls") or not parts.hostname:
                raise ConfigError(f"cluster: {url!r} is not a nats:// or tls:// URL")
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("cluster: name must be letters, digits, '-' or '_'")
        if not self.deliver_timeout_s > 0 or not self.connect_timeout_s > 0:
            raise ConfigError("cluster: timeouts must be > 0")

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]


def did_token(did: str) -> str:
    """The subject token for a DID: DIDs hold ``.`` and ``:`` that NATS subjects reserve."""
    return hashlib.sha256(did.encode("utf-8")).hexdigest()[:40]


class ClusterBus:
    """One node's link to the others: binds, remote deliveries, "stored" notices."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        on_deliver: DeliverLocal,
        on_stored: FlushLocal,
    ) -> None:
        self.config = config
        self.on_deliver = on_deliver
        self.on_stored = on_stored
        self.stats = {"sent": 0, "delivered_remote": 0, "no_responders": 0, "received": 0}
        self._nc: Any = None
        self._counts: dict[str, int] = {}
        self._subs: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()

    def _subject(self, kind: str, did: str) -> str:
        return f"{self.config.name}.{kind}.{did_token(did)}"

    async def start(self) -> None:
        import nats
        from nats.errors import NoServersError

        try:
            self._nc = await nats.connect(
                servers=self.config.servers,
                name=f"dsip-relay-{self.config.name}",
                no_echo=True,  # a node never receives its own deliveries
                connect_timeout=self.config.connect_timeout_s,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=self._on_error,
                reconnected_cb=self._on_reconnected,
            )
        except (NoServersError, OSError, TimeoutError) as exc:
            raise ConfigError(
                f"cluster: cannot reach NATS at {self.config.nats_url}: {exc}"
            ) from None
        logger.info("cluster %s: connected to NATS %s", self.config.name, self.config.nats_url)

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def _on_error(self, exc: Exception) -> None:
        logger.warning("cluster %s: NATS: %s", self.config.name, exc)

    async def _on_reconnected(self) -> None:
        logger.info("cluster %s: NATS reconnected (subscriptions restored)", self.config.name)

    # --- bindings ---------------------------------------------------------------------------

    async def bind(self, *dids: str) -> None:
        """This node now serves ``dids`` (counted: a device and its identity, several
        devices); returns once NATS has the interest, so routing works from here on."""
        for did in dict.fromkeys(dids):
            self._counts[did] = self._counts.get(did, 0) + 1
        await self._sync(list(dids))

    def unbind(self, *dids: str) -> None:
        """The counterpart of :meth:`bind`; called from synchronous code, so the
        unsubscription runs as a task (:meth:`_sync` converges whatever the order)."""
        for did in dict.fromkeys(dids):
            left = self._counts.get(did, 0) - 1
            if left > 0:
                self._counts[did] = left
            else:
                self._counts.pop(did, None)
        task = asyncio.get_running_loop().create_task(self._sync(list(dids)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _sync(self, dids: list[str]) -> None:
        """Make the subscriptions match the counts (bind/unbind may race; this converges)."""
        if self._nc is None:
            return
        async with self._lock:
            for did in dict.fromkeys(dids):
                want = self._counts.get(did, 0) > 0
                sub = self._subs.get(did)
                try:
                    if want and sub is None:
                        self._subs[did] = await self._nc.subscribe(
                            f"{self.config.name}.*.{did_token(did)}", cb=self._handler(did)
                        )
                        await self._nc.flush(timeout=self.config.connect_timeout_s)
                    elif not want and sub is not None:
                        del self._subs[did]
                        await sub.unsubscribe()
                except Exception as exc:  # NATS down: local service goes on; logged
                    logger.warning("cluster: (un)subscribe for %s failed: %s", did, exc)

    def _handler(self, did: str) -> Callable[[Any], Awaitable[None]]:
        async def handle(msg: Any) -> None:
            kind = msg.subject.split(".")[1]
            if kind == "to":
                self.stats["received"] += 1
                jose = (msg.headers or {}).get(_WIRE_HEADER, "jose") == "jose"
                wire: str | bytes = msg.data.decode("utf-8") if jose else bytes(msg.data)
                try:
                    delivered = await self.on_deliver(did, wire)
                except Exception:  # a bad frame from a peer node must not kill the handler
                    logger.exception("cluster: local delivery to %s failed", did)
                    delivered = False
                if delivered and msg.reply:
                    await msg.respond(_DELIVERED)
            elif kind == "stored":
                await self.on_stored(did)

        return handle

    # --- routing ----------------------------------------------------------------------------

    async def deliver(self, did: str, wire: str | bytes) -> bool:
        """Hand ``wire`` to the node(s) holding ``did``; ``False``: nobody holds it now."""
        if self._nc is None or not self._nc.is_connected:
            return False
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        data, kind = (wire.encode("utf-8"), "jose") if isinstance(wire, str) else (wire, "cose")
        self.stats["sent"] += 1
        try:
            reply = await self._nc.request(
                self._subject("to", did),
                data,
                timeout=self.config.deliver_timeout_s,
                headers={_WIRE_HEADER: kind},
            )
        except NoRespondersError:
            self.stats["no_responders"] += 1
            return False
        except (NatsTimeout, TimeoutError):
            return False
        except Exception as exc:  # connection trouble: fall back to the durable queue
            logger.warning("cluster: delivery request for %s failed: %s", did, exc)
            return False
        ok = bool(reply.data == _DELIVERED)
        if ok:
            self.stats["delivered_remote"] += 1
        return ok

    async def publish(self, did: str, wire: str | bytes) -> None:
        """Fan ``wire`` out to other nodes' devices of ``did`` (no reply awaited)."""
        if self._nc is None or not self._nc.is_connected:
            return
        data, kind = (wire.encode("utf-8"), "jose") if isinstance(wire, str) else (wire, "cose")
        with contextlib.suppress(Exception):
            await self._nc.publish(self._subject("to", did), data, headers={_WIRE_HEADER: kind})

    async def stored(self, did: str) -> None:
        """Tell a node where ``did`` may just have bound that its queue has something new."""
        if self._nc is None or not self._nc.is_connected:
            return
        with contextlib.suppress(Exception):
            await self._nc.publish(self._subject("stored", did), b"")
