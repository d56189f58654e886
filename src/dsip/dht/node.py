"""The trio side: one libp2p host and Kad-DHT per :class:`DhtNode`, dsip's validator inside.

Everything in this module runs on a trio thread (see :mod:`dsip.dht.bridge` for how asyncio
code reaches it). Library: py-libp2p (``libp2p`` on PyPI, pinned to 0.8.1 because we reach
into ``KadDHT.value_store``, ``routing_table`` and ``peer_routing``).

Record keys (seed §21.C, encoded for the DHT)
    py-libp2p decodes every record key as UTF-8 and routes on the namespace before the first
    ``/``; its FIND_NODE handler refuses targets that are neither a multihash nor at most
    50 bytes, and a PUT's closest-peer lookup is a FIND_NODE on the record key. A raw
    32-byte digest is therefore unusable and the ``/namespace/<hex>`` form (79 bytes) breaks
    routing. We use ``/<ns>/`` + unpadded base64url of the 32-byte digest:

    ============  =======================================================  =======
    namespace     digest                                                   length
    ============  =======================================================  =======
    ``dsip``      ``sha256("dsip-presence:" + DID)`` (presence record)     49 B
    ``dsipg``     ``sha256("dsip-presence:geo:" + prefix)`` (region)       50 B
    ``dsiph``     digest of the hints-profile multihash (reachability)     50 B
    ============  =======================================================  =======

    Provider records use the multihash ``0x12 0x20 ‖ digest`` (34 B, under the 80 B
    ADD_PROVIDER limit).

Verification at the storage boundary
    Every node registers :class:`NamespaceValidator` for the three namespaces (strict mode:
    any other namespace except libp2p's own ``pk``/``ipns`` is refused). py-libp2p calls it on
    every inbound PUT_VALUE before storing; it runs :class:`dsip.core.presence.RecordValidator`
    in full (signature, delegation, expiry, replay window, schema, key binding, size) and
    §8.3 selection against the held value, so a storing node refuses forged, expired,
    seq-regressed and non-delegated records. A refused PUT gets no echo (the stream is reset).
    :class:`VerifyingValueStore` re-verifies held values before serving them (at most once per
    second per key), so a record that expired in storage is not handed out either.

Region buckets
    A DHT key holds one value, a region must hold many DIDs. The value is the signed-entry
    document of :meth:`RecordValidator.merge_region`; the ``dsipg`` selector always takes the
    incoming value and :class:`VerifyingValueStore` merges it into the held one instead of
    replacing it. A publisher PUTs a bucket holding only its own entry; every storing node
    folds it in. See :mod:`dsip.dht` for why this beats provider records.

Reads
    :meth:`DhtNode.get` runs its own iterative GET_VALUE lookup, closest peers first, and
    returns *every* distinct value it was given (local store included) for the reader's own
    §8.3 selection; py-libp2p's ``get_value`` returns only one value and trusts its local
    store without validation. By default a read stops once 3 peers returned a value
    (``quorum``): the publisher wrote to all ``k`` closest, so 3 independent copies suffice
    to pick the newest, at a quarter of the cost of asking all 20 (``bench/dht.py`` has
    both). ``quorum=0`` asks every one of the ``k`` closest.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import multiaddr  # type: ignore[import-untyped]  # multiaddr 0.2 ships no py.typed
import trio
import varint  # type: ignore[import-untyped]  # varint ships no py.typed
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.kad_dht.common import MAX_DHT_MESSAGE_SIZE, PROTOCOL_ID, format_time_rfc3339
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Message, Record
from libp2p.kad_dht.utils import maybe_consume_signed_record, sort_peer_ids_by_distance
from libp2p.kad_dht.value_store import ValueStore
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.records.validator import Validator
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from dsip.config import read_toml_table
from dsip.core.jws import MAX_FRAME_BYTES
from dsip.core.presence import RecordValidator, hint_key, presence_key, region_key
from dsip.errors import ConfigError, DsipError, EnvelopeError, FrameTooLargeError

__all__ = [
    "KAD_PROTOCOL",
    "MAX_KEY_BYTES",
    "DhtClosedError",
    "DhtError",
    "DhtKeyError",
    "DhtNode",
    "DhtNodeConfig",
    "DhtTimeoutError",
    "DhtUnavailableError",
    "NamespaceValidator",
    "Provider",
    "RecordKey",
    "VerifyingValueStore",
    "check_value",
    "load_dht_config",
]

logger = logging.getLogger("dsip.dht")


class _QuietStreamEnd(logging.Filter):
    """py-libp2p 0.8.1 logs a WARNING each time a requester closes its stream after the
    answer (the normal end of every Kademlia RPC, ours and js-libp2p's); drop exactly that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to read DHT message from stream")


logging.getLogger("libp2p.kad_dht.kad_dht").addFilter(_QuietStreamEnd())


class _QuietStoppedSwarm(logging.Filter):
    """py-libp2p 0.8.1 logs a WARNING with a traceback for every connection that reaches a
    host after its service stopped (peers keep dialling a node that was just closed); the
    connection is refused either way, so drop exactly that record."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (
            text.startswith("[ADDCONN_FAIL]")
            and "Cannot schedule task after service has stopped" in text
        )


logging.getLogger("libp2p.network.swarm").addFilter(_QuietStoppedSwarm())

KAD_PROTOCOL = str(PROTOCOL_ID)  # /ipfs/kad/1.0.0: what py-libp2p 0.8.1 registers, fixed
MAX_KEY_BYTES = 50  # py-libp2p FIND_NODE refuses longer non-multihash targets
_MULTIHASH_SHA256 = b"\x12\x20"
_REGION_PREFIX = b'{"type":"dsip-region/1"'

Kind = Literal["presence", "region", "hint"]
_NAMESPACE: dict[Kind, str] = {"presence": "dsip", "region": "dsipg", "hint": "dsiph"}
_KIND: dict[str, Kind] = {ns: kind for kind, ns in _NAMESPACE.items()}


# --- errors -------------------------------------------------------------------------------


class DhtError(DsipError):
    """The DHT overlay could not do what was asked (local condition, never on the wire)."""

    default_code = "dht-error"
    default_reason = "x-dsip.dht-unavailable"
    default_remote = False


class DhtKeyError(DhtError):
    """A record key is not one of dsip's namespaces or has the wrong digest length."""

    default_code = "dht-key-invalid"
    default_reason = "x-dsip.dht-key-invalid"


class DhtTimeoutError(DhtError):
    """A DHT operation did not finish within its deadline."""

    default_code = "dht-timeout"


class DhtUnavailableError(DhtError):
    """The overlay failed underneath (no peers reachable, libp2p error)."""

    default_code = "dht-unavailable"


class DhtClosedError(DhtError):
    """The node or its trio runtime is closed."""

    default_code = "dht-closed"


# --- keys ---------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class RecordKey:
    """A dsip record key: its kind and the 32-byte sha256 digest of seed §21.C."""

    kind: Kind
    digest: bytes

    def __post_init__(self) -> None:
        if self.kind not in _NAMESPACE:
            raise DhtKeyError(f"unknown record kind {self.kind!r}")
        if len(self.digest) != 32:
            raise DhtKeyError(f"a record key digest is 32 bytes, got {len(self.digest)}")

    @classmethod
    def presence(cls, did: str) -> RecordKey:
        return cls("presence", presence_key(did))

    @classmethod
    def region(cls, geohash_prefix: str) -> RecordKey:
        return cls("region", region_key(geohash_prefix))

    @classmethod
    def hint(cls, did: str) -> RecordKey:
        return cls("hint", hint_key(did)[2:])

    @property
    def wire(self) -> bytes:
        """The DHT record key: ``/<namespace>/<base64url(digest)>``, at most 50 bytes."""
        return f"/{_NAMESPACE[self.kind]}/{_b64url(self.digest)}".encode("ascii")

    @property
    def validator_key(self) -> bytes:
        """The key :class:`RecordValidator` binds records to (hints: the full multihash)."""
        return _MULTIHASH_SHA256 + self.digest if self.kind == "hint" else self.digest

    @property
    def provider_key(self) -> bytes:
        """Provider-record key: multihash sha2-256 of the digest (34 bytes)."""
        return _MULTIHASH_SHA256 + self.digest

    @classmethod
    def parse(cls, wire: bytes | str) -> RecordKey:
        """Strict inverse of :attr:`wire`; anything else raises :class:`DhtKeyError`."""
        try:
            text = wire.decode("ascii") if isinstance(wire, bytes) else wire
        except UnicodeDecodeError:
            raise DhtKeyError("record key is not ASCII") from None
        if len(text) > MAX_KEY_BYTES or text.count("/") != 2 or not text.startswith("/"):
            raise DhtKeyError(f"not a dsip record key: {text[:60]!r}")
        _, ns, encoded = text.split("/")
        kind = _KIND.get(ns)
        if kind is None:
            raise DhtKeyError(f"namespace {ns[:20]!r} is not a dsip namespace")
        try:
            digest = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise DhtKeyError("record key digest is not base64url") from None
        key = cls(kind, digest)
        if key.wire.decode("ascii") != text:
            raise DhtKeyError("record key digest is not canonical base64url")
        return key


def _maybe_key(wire: bytes) -> RecordKey | None:
    try:
        return RecordKey.parse(wire)
    except DhtKeyError:
        return None


# --- validation ---------------------------------------------------------------------------


def _is_region(value: bytes) -> bool:
    return value[:40].lstrip().startswith(_REGION_PREFIX)


def _region_size(value: bytes) -> int:
    try:
        doc = json.loads(value)
        return len(doc["entries"])
    except (ValueError, TypeError, KeyError):
        return 0


def check_value(key: RecordKey, value: bytes, records: RecordValidator, *, now: int) -> None:
    """Full verification of ``value`` for ``key``; raises the ``DsipError`` verdict.

    On top of :meth:`RecordValidator.validate`: the value's shape must match the namespace
    (a region document under a presence key, or a bare record under a region key, is
    refused), and a region value must hold at least one entry.
    """
    if len(value) > MAX_FRAME_BYTES:
        raise FrameTooLargeError(f"value of {len(value)} bytes exceeds {MAX_FRAME_BYTES}")
    region = _is_region(value)
    if key.kind == "region" and not region:
        raise EnvelopeError("a region key holds a dsip-region/1 document", code="key-mismatch")
    if key.kind != "region" and region:
        raise EnvelopeError("a region document under a presence key", code="key-mismatch")
    records.validate(key.validator_key, value, now=now)
    if region and _region_size(value) == 0:
        raise EnvelopeError("an empty region bucket is not stored", code="region-invalid")


class NamespaceValidator(Validator):
    """py-libp2p validator for one dsip namespace, backed by :class:`RecordValidator`."""

    def __init__(self, kind: Kind, records: RecordValidator, clock: Callable[[], int]) -> None:
        self.kind = kind
        self.records = records
        self.clock = clock

    def _key(self, key: str) -> RecordKey:
        parsed = RecordKey.parse(key)
        if parsed.kind != self.kind:
            raise DhtKeyError(f"{parsed.kind} key routed to the {self.kind} validator")
        return parsed

    def validate(self, key: str, value: bytes) -> None:
        check_value(self._key(key), value, self.records, now=self.clock())

    def select(self, key: str, values: list[bytes]) -> int:
        parsed = self._key(key)
        if len(values) == 2 and values[0] == values[1]:
            return 1  # §8.3: identical content is a no-op, acknowledged
        if parsed.kind == "region":
            return len(values) - 1  # the newest value; VerifyingValueStore merges it in
        best = self.records.select(parsed.validator_key, values, now=self.clock())
        if best < 0:
            raise EnvelopeError("no valid value to select", code="no-valid-record")
        return best


class VerifyingValueStore(ValueStore):
    """py-libp2p's value store, with region merging and re-verification before serving."""

    def __init__(
        self, host: IHost, local_peer_id: ID, records: RecordValidator, clock: Callable[[], int]
    ) -> None:
        super().__init__(host, local_peer_id)
        self.records = records
        self.clock = clock
        self._checked: dict[bytes, tuple[int, bytes]] = {}  # key -> (second, value) verified

    def put_record(self, key: bytes, record: Record) -> None:
        parsed = _maybe_key(key)
        held = self.store.get(key)
        if parsed is not None and parsed.kind == "region" and held is not None:
            merged = self.records.merge_region(
                parsed.validator_key, [held[0].value, record.value], now=self.clock()
            )
            # A fresh, unsigned libp2p record: the old author signature covered other bytes.
            record = _record(key, merged)
        self._checked.pop(key, None)
        super().put_record(key, record)

    def get(self, key: bytes) -> Record | None:
        record = super().get(key)
        parsed = _maybe_key(key)
        if record is None or parsed is None:
            return record
        now = self.clock()
        if self._checked.get(key) == (now, record.value):
            return record
        try:
            if parsed.kind == "region":
                merged = self.records.merge_region(parsed.validator_key, [record.value], now=now)
                if _region_size(merged) == 0:
                    raise EnvelopeError("every entry expired", code="expired")
                if merged != record.value:  # expired entries pruned
                    record = _record(key, merged)
                    super().put_record(key, record)
            else:
                check_value(parsed, record.value, self.records, now=now)
        except DsipError as exc:
            logger.debug("dropping held %s value: %s", parsed.kind, exc.code)
            self.remove(key)
            return None
        self._checked[key] = (now, record.value)
        return record

    def remove(self, key: bytes) -> bool:
        self._checked.pop(key, None)
        return super().remove(key)


def _record(key: bytes, value: bytes) -> Record:
    record = Record()
    record.key = key
    record.value = value
    record.timeReceived = format_time_rfc3339()
    return record


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class DhtNodeConfig:
    """One DHT node. ``bootstrap`` holds full multiaddrs with ``/p2p/<peer id>``."""

    listen: str = "/ip4/127.0.0.1/tcp/0"
    bootstrap: tuple[str, ...] = ()
    server: bool = True  # False: client mode, stores nothing, serves nothing
    identity_seed_file: str | None = None  # 32 raw bytes; omitted -> ephemeral peer id
    replication: int = 20  # k: closest peers a value is stored at / read from
    alpha: int = 10  # concurrent RPCs per lookup
    max_outbound: int = 32  # concurrent RPCs of this node, all operations together
    quorum: int = 3  # a read stops once this many peers returned a value (0: ask all k)
    rpc_timeout_s: float = 5.0
    op_timeout_s: float = 15.0
    refresh_interval_s: float = 60.0
    identity_seed: bytes | None = field(default=None, repr=False)

    def validate(self) -> DhtNodeConfig:
        try:
            multiaddr.Multiaddr(self.listen)
            for addr in self.bootstrap:
                info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise ConfigError(f"dht: bad multiaddr ({exc})") from None
        for name in ("replication", "alpha", "max_outbound", "rpc_timeout_s", "op_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"dht.{name} must be > 0")
        if self.quorum < 0 or self.refresh_interval_s <= 0:
            raise ConfigError("dht.quorum must be >= 0 and dht.refresh_interval_s > 0")
        if self.identity_seed is not None and len(self.identity_seed) != 32:
            raise ConfigError("dht identity seed must be 32 bytes")
        return self

    def with_overrides(self, **changes: Any) -> DhtNodeConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).validate()


def load_dht_config(path: Path | None) -> DhtNodeConfig:
    """Read the ``[dht]`` table of a TOML file (``bootstrap`` is a list of multiaddrs)."""
    if path is None:
        return DhtNodeConfig().validate()
    section = read_toml_table(path, "dht")
    known = {f.name for f in fields(DhtNodeConfig)} - {"identity_seed"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown dht settings {unknown}")
    values = dict(section)
    if "bootstrap" in values:
        boot = values["bootstrap"]
        if not isinstance(boot, list) or not all(isinstance(a, str) for a in boot):
            raise ConfigError(f"{path}: dht.bootstrap must be a list of multiaddr strings")
        values["bootstrap"] = tuple(boot)
    try:
        return DhtNodeConfig(**values).validate()
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read_seed(path: str) -> bytes:
    seed_path = Path(path)
    if not seed_path.exists():
        import secrets

        seed_path.touch(mode=0o600)
        seed_path.write_bytes(secrets.token_bytes(32))
    seed = seed_path.read_bytes()
    if len(seed) != 32:
        raise ConfigError(f"{path} must hold exactly 32 bytes")
    return seed


# --- the node -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """A provider record: a peer and the addresses it announced."""

    peer_id: str
    addrs: tuple[str, ...]


@dataclass
class _Lookup:
    """State of one iterative lookup (GET_VALUE or FIND_NODE)."""

    target: bytes
    known: set[ID]
    queried: set[ID] = field(default_factory=set)
    failed: set[ID] = field(default_factory=set)
    responded: list[ID] = field(default_factory=list)
    values: dict[bytes, None] = field(default_factory=dict)
    answered: int = 0  # peers that returned a value
    in_flight: int = 0


def _wall_clock() -> int:
    return int(time.time())


def _known_non_server(host: IHost, peer: ID) -> bool:
    """Identify told us ``peer``'s protocols and the Kademlia protocol is not among them."""
    try:
        protocols = host.get_peerstore().get_protocols(peer)
    except Exception:  # unknown peer: not known to be a client
        return False
    return bool(protocols) and KAD_PROTOCOL not in protocols


class _ServerOnlyKadDHT(KadDHT):
    """py-libp2p adds every peer that opens a Kademlia stream to the routing table, client-
    mode peers included; lookups then waste a stream on each. Keep those out once identify
    has shown they do not serve the protocol."""

    async def add_peer(self, peer_id: ID, *, skip_server_mode_check: bool = False) -> bool:
        if _known_non_server(self.host, peer_id):
            return False
        return bool(await super().add_peer(peer_id, skip_server_mode_check=skip_server_mode_check))


class DhtNode:
    """A libp2p host with a Kad-DHT that stores only records dsip's validator accepts.

    Trio-only. ``await nursery.start(node.serve)`` brings it up (listening and
    bootstrapped); :meth:`close` takes it down.
    """

    def __init__(
        self,
        config: DhtNodeConfig | None = None,
        *,
        validator: RecordValidator | None = None,
        clock: Callable[[], int] = _wall_clock,
    ) -> None:
        self.config = (config or DhtNodeConfig()).validate()
        self.records = validator or RecordValidator()
        self.clock = clock
        seed = self.config.identity_seed
        if seed is None and self.config.identity_seed_file:
            seed = _read_seed(self.config.identity_seed_file)
        listen = multiaddr.Multiaddr(self.config.listen)
        self.host: IHost = new_host(key_pair=create_new_key_pair(seed), listen_addrs=[listen])
        mode = DHTMode.SERVER if self.config.server else DHTMode.CLIENT
        self.dht = _ServerOnlyKadDHT(self.host, mode, strict_validation=True)
        for kind in _NAMESPACE:
            self.dht.register_validator(
                _NAMESPACE[kind], NamespaceValidator(kind, self.records, clock)
            )
        self.store = VerifyingValueStore(self.host, self.host.get_id(), self.records, clock)
        self.dht.value_store = self.store
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self.refused_puts = 0  # our PUTs a peer refused (no echo)
        # py-libp2p serves at most 12 Kademlia streams at once and resets the rest: a node
        # running many lookups/puts in parallel must not flood its peers.
        self._outbound = trio.CapacityLimiter(self.config.max_outbound)

    # --- identity ---

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id())

    @property
    def addrs(self) -> list[str]:
        """Full multiaddrs with ``/p2p/<peer id>``, ready for someone's bootstrap list."""
        own = f"/p2p/{self.peer_id}"
        out = []
        for addr in self.host.get_addrs():
            text = str(addr)
            out.append(text if text.endswith(own) else text + own)
        return out

    def routing_table_size(self) -> int:
        return int(self.dht.get_routing_table_size())

    # --- lifecycle ---

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, bootstrap, report started, then run until :meth:`close` or cancellation."""
        listen = [multiaddr.Multiaddr(self.config.listen)]
        with trio.CancelScope() as scope:
            self._scope = scope
            async with (
                self.host.run(listen),
                background_trio_service(self.dht),
                trio.open_nursery() as nursery,
            ):
                self._nursery = nursery
                if self.config.bootstrap:
                    await self.bootstrap(self.config.bootstrap)
                nursery.start_soon(self._maintain)
                task_status.started()
                await trio.sleep_forever()
        self._nursery = None

    def close(self) -> None:
        """Stop serving (from the trio thread); :meth:`serve` returns once the host is down."""
        if self._scope is not None:
            self._scope.cancel()

    async def bootstrap(self, addrs: Sequence[str]) -> int:
        """Connect to ``addrs``, then look ourselves up to fill the routing table.

        Returns how many bootstrap peers answered. Unreachable ones are logged, not fatal:
        the maintenance loop retries while the routing table is empty.
        """
        reached = 0
        for addr in addrs:
            try:
                info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
                with trio.fail_after(self.config.rpc_timeout_s):
                    await self.host.connect(info)
                await self.dht.routing_table.add_peer(info, skip_server_mode_check=True)
                reached += 1
            except Exception as exc:
                logger.warning("bootstrap peer %s unreachable: %s", addr, exc)
        if reached:
            await self._lookup(self.host.get_id().to_bytes(), Message.MessageType.FIND_NODE)
        return reached

    async def _maintain(self) -> None:
        while True:
            await trio.sleep(self.config.refresh_interval_s)
            try:
                if self.routing_table_size() == 0 and self.config.bootstrap:
                    await self.bootstrap(self.config.bootstrap)
                else:
                    await self._lookup(self.host.get_id().to_bytes(), Message.MessageType.FIND_NODE)
            except Exception as exc:  # keep maintaining whatever one round hit
                logger.warning("routing table refresh failed: %s", exc)

    # --- values ---

    def store_local(self, key: RecordKey, value: bytes) -> bool:
        """Validate and keep ``value`` locally (server mode); ``False`` if §8.3 keeps the held one."""
        check_value(key, value, self.records, now=self.clock())
        if not self.config.server:
            return False
        wire = key.wire
        held = self.store.get(wire)
        if held is not None and key.kind != "region" and held.value != value:
            best = self.records.select(key.validator_key, [held.value, value], now=self.clock())
            if best != 1:
                return False
        self.store.put_record(wire, _record(wire, value))
        return True

    async def put(self, key: RecordKey, value: bytes) -> int:
        """Validate ``value``, store it locally and at the ``k`` closest peers.

        Returns how many remote peers acknowledged (echoed) the PUT. Raises the validator's
        ``DsipError`` if the value is not valid for ``key``: we do not publish what a
        storing node would refuse.
        """
        self.store_local(key, value)
        wire = key.wire
        closest = await self._closest_peers(wire)
        stored = 0

        async def put_one(peer: ID) -> None:
            nonlocal stored
            msg = self._message(Message.MessageType.PUT_VALUE, wire)
            msg.record.CopyFrom(_record(wire, value))
            msg.record.ClearField("timeReceived")
            resp = await self._rpc(peer, msg)
            if resp is not None and resp.type == Message.MessageType.PUT_VALUE:
                stored += 1
            else:
                self.refused_puts += 1

        limiter = trio.CapacityLimiter(self.config.alpha)

        async def limited(peer: ID) -> None:
            async with limiter:
                await put_one(peer)

        async with trio.open_nursery() as nursery:
            for peer in closest:
                nursery.start_soon(limited, peer)
        return stored

    async def get(self, key: RecordKey, quorum: int | None = None) -> list[bytes]:
        """Every distinct value held for ``key`` locally and by the ``k`` closest peers.

        ``quorum`` (default: the config's; 0 = ask all ``k`` closest) ends the lookup once
        that many peers returned a value. Nothing is verified here except by the storing
        nodes' own validators: the reader re-verifies and selects (§8.3) — see
        :meth:`dsip.dht.bridge.DhtClient.resolve`.
        """
        wire = key.wire
        values: dict[bytes, None] = {}
        held = self.store.get(wire)
        if held is not None:
            values[held.value] = None
        q = self.config.quorum if quorum is None else quorum
        state = await self._lookup(wire, Message.MessageType.GET_VALUE, quorum=q)
        values.update(state.values)
        return list(values)

    def raw_local(self, key: RecordKey) -> bytes | None:
        """The locally held value as stored, not re-verified (diagnostics and tests)."""
        entry = self.store.store.get(key.wire)
        return None if entry is None else bytes(entry[0].value)

    # --- providers ---

    async def provide(self, key: RecordKey) -> bool:
        """Announce this node as a provider for ``key`` to the closest peers."""
        return bool(await self.dht.provider_store.provide(key.provider_key))

    async def get_providers(self, key: RecordKey, count: int = 20) -> list[Provider]:
        infos = await self.dht.provider_store.find_providers(key.provider_key, count)
        return [Provider(str(i.peer_id), tuple(str(a) for a in i.addrs)) for i in infos]

    # --- Kademlia plumbing ---

    def _message(self, kind: Any, key: bytes) -> Message:
        msg = Message()
        msg.type = kind
        msg.key = key
        msg.senderRecord = env_to_send_in_RPC(self.host)[0]
        return msg

    async def _rpc(self, peer: ID, msg: Message) -> Message | None:
        """One request/response on a fresh stream; ``None`` on any failure or refusal.

        Opening the stream is tried twice (a busy peer resets streams it has no handler
        slot for); once the request is written, a reset means "refused" and is final.
        """
        async with self._outbound:
            return await self._rpc_once(peer, msg)

    async def _rpc_once(self, peer: ID, msg: Message) -> Message | None:
        stream = None
        try:
            with trio.fail_after(self.config.rpc_timeout_s):
                try:
                    stream = await self.host.new_stream(peer, [PROTOCOL_ID])
                except Exception as exc:
                    logger.debug("opening a stream to %s failed, retrying: %s", peer, exc)
                    await trio.sleep(0.05)
                    stream = await self.host.new_stream(peer, [PROTOCOL_ID])
                data = msg.SerializeToString()
                await stream.write(varint.encode(len(data)) + data)
                raw = await read_varint_prefixed_bytes_limited(stream, MAX_DHT_MESSAGE_SIZE)
            resp = Message()
            resp.ParseFromString(raw)
            maybe_consume_signed_record(resp, self.host, peer)
            return resp
        except Exception as exc:  # libp2p raises many unrelated types; all mean "no answer"
            logger.debug("rpc %s to %s failed: %s", msg.type, peer, exc)
            return None
        finally:
            if stream is not None:
                with trio.move_on_after(1):
                    try:
                        await stream.close()
                    except Exception:
                        logger.debug("closing stream to %s failed", peer)

    def _seed_peers(self, target: bytes) -> set[ID]:
        k = self.config.replication
        seeds = set(self.dht.routing_table.find_local_closest_peers(target, k))
        if len(seeds) < k:
            seeds.update(self.host.get_connected_peers())
        seeds.discard(self.host.get_id())
        return seeds

    async def _closest_peers(self, target: bytes) -> list[ID]:
        state = await self._lookup(target, Message.MessageType.FIND_NODE)
        return sort_peer_ids_by_distance(target, state.responded)[: self.config.replication]

    async def _lookup(self, target: bytes, kind: Any, *, quorum: int = 0) -> _Lookup:
        """Iterative Kademlia lookup: query the closest unqueried peers, ``alpha`` at a time,
        until the ``k`` closest known peers have all answered or failed (or, with a
        ``quorum``, until that many peers returned a value)."""
        state = _Lookup(target=target, known=self._seed_peers(target))
        send, recv = trio.open_memory_channel[tuple[ID, Message | None]](math.inf)
        me = self.host.get_id()
        k, alpha = self.config.replication, self.config.alpha
        if quorum:
            alpha = min(alpha, quorum + 1)  # do not open streams we will not wait for

        async def query(peer: ID) -> None:
            resp = await self._rpc(peer, self._message(kind, target))
            send.send_nowait((peer, resp))

        def launch(nursery: trio.Nursery) -> None:
            live = [
                p
                for p in state.known
                if p not in state.failed and not _known_non_server(self.host, p)
            ]
            for peer in sort_peer_ids_by_distance(target, live)[:k]:
                if state.in_flight >= alpha:
                    return
                if peer not in state.queried:
                    state.queried.add(peer)
                    state.in_flight += 1
                    nursery.start_soon(query, peer)

        async with trio.open_nursery() as nursery:
            launch(nursery)
            while state.in_flight:
                peer, resp = await recv.receive()
                state.in_flight -= 1
                if resp is None:
                    state.failed.add(peer)
                    self.dht.routing_table.remove_peer(peer)
                else:
                    state.responded.append(peer)
                    self._learn(peer, resp, state, me)
                if quorum and state.answered >= quorum:
                    nursery.cancel_scope.cancel()
                    break
                launch(nursery)
        return state

    def _learn(self, peer: ID, resp: Message, state: _Lookup, me: ID) -> None:
        if resp.HasField("record") and resp.record.value:
            value = bytes(resp.record.value)
            state.values[value] = None  # the reader re-verifies and selects (§8.3)
            if self._counts_for_quorum(state.target, value):
                state.answered += 1
        peerstore = self.host.get_peerstore()
        for closer in resp.closerPeers:
            try:
                closer_id = ID(closer.id)
                addrs = [multiaddr.Multiaddr(a) for a in closer.addrs]
            except Exception as exc:  # a malformed peer entry from a remote
                logger.debug("ignoring closer peer from %s: %s", peer, exc)
                continue
            if closer_id == me:
                continue
            if addrs:
                peerstore.add_addrs(closer_id, addrs, 3600)
            state.known.add(closer_id)
        if self._nursery is not None and not self.dht.routing_table.peer_in_table(peer):
            self._nursery.start_soon(self._add_to_table, peer)

    def _counts_for_quorum(self, target: bytes, value: bytes) -> bool:
        """Only a value that passes the storing-node checks counts toward a read quorum:
        otherwise a few Sybil peers answering first with forged values would end the
        lookup before any genuine copy was asked for (in the scale simulation, counting
        only valid values raised found reads from 75 % to 95 % with 20 % Sybils)."""
        key = _maybe_key(target)
        if key is None:
            return True
        try:
            check_value(key, value, self.records, now=self.clock())
        except DsipError:
            return False
        return True

    async def _add_to_table(self, peer: ID) -> None:
        with trio.move_on_after(self.config.rpc_timeout_s):
            await self.dht.routing_table.add_peer(peer, skip_server_mode_check=True)
