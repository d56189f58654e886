"""Discrete-event simulation of the dsip presence DHT at internet scale (10⁴–10⁵ nodes).

Sans-I/O: no sockets, no clocks; simulated time is a float in seconds and every random
draw comes from generators seeded by :attr:`SimConfig.seed`, so a run is reproducible.
Library: numpy for the per-node arrays (ids, regions, churn timelines) and the vectorised
routing-table construction; the heap of ``(time, seq, action)`` events is :mod:`heapq`.

What is reused from the real overlay (``dsip.dht.node``)
    * the parameters — ``k`` (replication), ``alpha``, the read ``quorum`` and the per-RPC
      timeout are :class:`~dsip.dht.node.DhtNodeConfig`'s defaults;
    * record keys — each simulated DID's key is :meth:`RecordKey.presence`, and its place in
      the key space is ``sha256(key.wire)``, as py-libp2p's ``sort_peer_ids_by_distance``
      hashes the wire key;
    * the lookup — :class:`_Op` follows ``DhtNode._lookup`` step for step: seed with the
      ``k`` closest from the own table, keep ``alpha`` RPCs in flight on the closest
      unqueried, not-failed known peers, stop when the ``k`` closest known have all answered
      or failed (waiting for in-flight RPCs, timeouts included), or — for reads — once
      ``quorum`` peers returned *a* value (any value counts, as in ``_learn``);
    * PUT — a FIND_NODE lookup, then PUT_VALUE to the ``k`` closest that answered, at most
      ``alpha`` at a time;
    * validation — every record is a real Ed25519-signed presence envelope
      (:func:`~dsip.core.presence.make_presence`); a storing node accepts a PUT only if
      :func:`~dsip.dht.node.check_value` (the same function ``NamespaceValidator`` runs)
      accepts it and re-checks before serving (``VerifyingValueStore``); the reader picks the
      winner with :meth:`RecordValidator.best`, as ``DhtClient.resolve`` does. Storing-node
      verdicts are memoised per (value, second): ``check_value`` is a pure function of the
      key, the bytes and ``now`` (did:key, no replay memory), so the memo changes no verdict,
      only the CPU bill. Reader selection is not memoised.

Routing tables (a model, not a join-by-join simulation)
    Node ids are uniform 64-bit prefixes of the 256-bit key space (ids that agree on 64 bits
    are vanishingly rare at 10⁵–10⁶ nodes, so XOR order is that of the full ids). A node's
    bucket ``b`` (peers sharing exactly ``b`` leading bits) is built lazily from the sorted
    id array: the candidates are a contiguous id range, up to ``6k`` of them are drawn by a
    deterministic hash, those online at the node's last table refresh are kept, first ``k``
    win. A node rebuilds its table every ``refresh_s`` (own phase); between refreshes,
    departed peers stay in it and cost a timeout when asked. A node that joined after its
    last refresh builds its table at its join. The real node also evicts a peer after one
    failed RPC; the model does not, so it overstates stale entries for nodes doing many
    lookups in a row.

WAN latency model
    Six regions (North America, South America, Europe, Africa, Asia, Oceania) with node
    shares ``REGION_SHARE`` and a median inter-region round-trip matrix ``REGION_RTT_MS``,
    rounded from public city-to-city ping tables (WonderNetwork global ping statistics;
    Verizon's published IP latency averages: ~70–90 ms transatlantic, ~100–170 ms
    transpacific, 10–40 ms within a continent). Each node adds an access-link delay
    (log-normal, median ``access_ms``, σ = 0.6) and each RPC a log-normal jitter (σ = 0.2).
    An RPC costs one round trip to a peer the requester is already connected to (its own
    table's seeds, peers already asked in the same operation) and ``1 + connect_rtts``
    round trips otherwise (TCP handshake + Noise + multistream negotiation: 2 extra by
    default). A peer that is offline, or one of the ``unreachable`` fraction (NAT), never
    answers: the RPC fails after ``rpc_timeout_s``.

Churn model
    Alternating on/off sessions with Weibull lengths (shape < 1: heavy-tailed), started in
    the renewal process's stationary state (length-biased current period, uniform residual).
    Shape 0.5 is in the range Stutzbach & Rejaie fitted for Kad, BitTorrent and Gnutella
    sessions (IMC 2006); the medians are presets (``CHURN_PRESETS``). A node that leaves
    loses what it stored (py-libp2p's value store is in memory). Bootstrap nodes and Sybils
    never leave. ``nodes`` is the number online at any time; the id population is larger by
    the on/off ratio.

Bootstrap load
    A joining node connects to *every* configured bootstrap node and looks itself up
    (``DhtNode.bootstrap``): ``joins`` such join lookups are simulated and their RPCs to
    bootstrap nodes counted. Load per bootstrap node = join rate (from the churn timelines)
    × bootstrap RPCs per join / bootstrap count, plus the bootstrap nodes' share of the
    presence-republish traffic, assuming one presence record per online node republished
    every ``ttl_s / 2``. Read traffic depends on call rates and is not included.

Sybils (optional: ``sybil`` fraction, ``eclipse`` targeted keys)
    Colluding always-online nodes: a PUT to them is acknowledged and dropped; a read gets a
    forged presence record for the DID (signed by the attacker's key); a FIND_NODE gets the
    ``k`` Sybils closest to the target. ``eclipse`` places ``k`` more Sybil ids right next to
    each of the first records' keys. Two reader-side counter-measures can be switched on:
    ``quorum_valid`` (only values that verify count towards the read quorum; the real node
    counts any value) and ``disjoint`` paths that never ask the same peer (S/Kademlia).

Figures
    Hops (sequential RPCs from the reader to the first holder of the genuine record), read
    latency percentiles (failed reads included), success, availability and live replicas
    just before each of three republish points, bootstrap load, PUT latency and the share
    of the true ``k`` closest honest nodes a first PUT reached, forged values rejected.

Run ``python -m dsip.dht.sim --help``; ``docs/scale.md`` has the figures and their limits.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import heapq
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np
import numpy.typing as npt

from dsip.core.identity import KeyPair
from dsip.core.presence import PRESENCE_TTL_MAX, PRESENCE_TTL_MIN, RecordValidator, make_presence
from dsip.dht.node import DhtNodeConfig, RecordKey, check_value
from dsip.errors import ConfigError, DsipError

__all__ = [
    "CHURN_PRESETS",
    "DESCRIPTION",
    "REGION_RTT_MS",
    "REGION_SHARE",
    "ChurnModel",
    "DhtSim",
    "SimConfig",
    "SimResult",
    "add_arguments",
    "format_details",
    "format_table",
    "main",
    "run",
    "run_args",
]

_NODE = DhtNodeConfig()  # the real node's defaults: k, alpha, quorum, RPC timeout
_EPOCH = 1_800_000_000  # simulated t = 0 as a Unix time, for record timestamps

REGIONS = ("na", "sa", "eu", "af", "as", "oc")
REGION_SHARE = (0.25, 0.05, 0.35, 0.03, 0.28, 0.04)
REGION_RTT_MS = (
    (40, 130, 90, 200, 170, 160),
    (130, 60, 200, 280, 300, 300),
    (90, 200, 25, 150, 200, 280),
    (200, 280, 150, 80, 300, 350),
    (170, 300, 200, 300, 60, 130),
    (160, 300, 280, 350, 130, 40),
)


@dataclass(frozen=True)
class ChurnModel:
    """Weibull on/off session lengths (seconds); shape < 1 is heavy-tailed."""

    session_median_s: float
    offline_median_s: float
    shape: float = 0.5

    def scale(self, median: float) -> float:
        return float(median / math.log(2) ** (1 / self.shape))

    def mean(self, median: float) -> float:
        return self.scale(median) * math.gamma(1 + 1 / self.shape)

    @property
    def online_fraction(self) -> float:
        on, off = self.mean(self.session_median_s), self.mean(self.offline_median_s)
        return on / (on + off)


CHURN_PRESETS: dict[str, ChurnModel | None] = {
    "none": None,
    "moderate": ChurnModel(session_median_s=3600, offline_median_s=7200),
    "heavy": ChurnModel(session_median_s=600, offline_median_s=1800),
}


@dataclass(frozen=True)
class SimConfig:
    """One simulation run. Defaults: the real node's k/alpha/quorum/timeout, 5-min records."""

    nodes: int = 10_000
    lookups: int = 2_000
    churn: str = "moderate"
    republish: bool = True
    ttl_s: int = PRESENCE_TTL_MAX
    k: int = _NODE.replication
    alpha: int = _NODE.alpha
    quorum: int = _NODE.quorum
    rpc_timeout_s: float = _NODE.rpc_timeout_s
    refresh_s: float = 600.0
    connect_rtts: float = 2.0
    access_ms: float = 10.0
    unreachable: float = 0.0
    bootstrap: int = 4
    joins: int = 100
    sybil: float = 0.0
    eclipse: int = 0  # records whose key k Sybils surround (a targeted eclipse)
    disjoint: int = 1  # reads over this many disjoint paths (S/Kademlia); 1 = as the node
    quorum_valid: bool = False  # count only values that verify toward the read quorum
    seed: int = 1

    def validate(self) -> SimConfig:
        if self.nodes < 2 * self.k or self.nodes > 2_000_000:
            raise ConfigError(f"nodes must be in {2 * self.k}..2000000")
        if self.lookups < 3 or self.joins < 0 or not 1 <= self.bootstrap <= self.k:
            raise ConfigError("need lookups >= 3, joins >= 0 and 1 <= bootstrap <= k")
        if self.churn not in CHURN_PRESETS:
            raise ConfigError(f"churn must be one of {sorted(CHURN_PRESETS)}")
        if not PRESENCE_TTL_MIN <= self.ttl_s <= PRESENCE_TTL_MAX:
            raise ConfigError(f"ttl_s must be {PRESENCE_TTL_MIN}..{PRESENCE_TTL_MAX}")
        if min(self.k, self.alpha) < 1 or self.quorum < 0:
            raise ConfigError("k and alpha must be >= 1, quorum >= 0")
        if min(self.rpc_timeout_s, self.refresh_s) <= 0 or self.access_ms < 0:
            raise ConfigError("timeouts and refresh interval must be > 0, access_ms >= 0")
        if not 0 <= self.eclipse <= math.ceil(self.lookups / 3):
            raise ConfigError("eclipse must be 0..records (lookups / 3)")
        if not 1 <= self.disjoint <= self.k:
            raise ConfigError("disjoint must be 1..k")
        if self.connect_rtts < 0 or not 0 <= self.unreachable < 1 or not 0 <= self.sybil < 0.5:
            raise ConfigError("connect_rtts >= 0, 0 <= unreachable < 1, 0 <= sybil < 0.5")
        return self

    @property
    def interval_s(self) -> float:
        """Republish interval: TTL/2, as :class:`~dsip.dht.publisher.PresencePublisher`."""
        return self.ttl_s / 2


@dataclass(frozen=True)
class SimResult:
    """Figures of one run (latencies in seconds)."""

    config: SimConfig
    gets: int
    success: float
    hops_p50: float
    hops_p95: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    rpcs_per_get: float
    put_latency_p50: float
    rpcs_per_put: float
    availability: tuple[float, float, float]
    replicas: tuple[float, float, float]
    joins_per_s: float
    boot_rpcs_per_join: float
    boot_rpc_per_s: float
    forged_seen: int
    forged_rejected: int
    forged_accepted: int
    rejected_codes: tuple[tuple[str, int], ...]
    mean_hops: float
    put_recall: float
    rpc_load_per_node: float
    eclipsed_success: float
    wall_s: float
    events: int


@dataclass(eq=False)
class _Op:
    """One iterative lookup, as ``DhtNode._lookup`` runs it."""

    kind: Literal["get", "find", "join"]
    origin: int
    target: int
    rec: int
    quorum: int
    alpha: int
    start: float
    done: Callable[[_Op, float], None]
    known: list[tuple[int, int]] = field(default_factory=list)  # sorted (distance, node)
    depth: dict[int, int] = field(default_factory=dict)
    queried: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    responded: list[int] = field(default_factory=list)
    connected: set[int] = field(default_factory=set)
    values: dict[bytes, int] = field(default_factory=dict)  # value -> depth of first holder
    answered: int = 0
    in_flight: int = 0
    rpcs: int = 0
    boot_rpcs: int = 0
    finished: bool = False
    claimed: set[int] | None = None  # peers taken by any of the disjoint paths


@dataclass
class _Held:
    frame: bytes
    seq: int
    stored_at: float


@dataclass
class _Stats:
    get_latency: list[float] = field(default_factory=list)
    get_hops: list[int] = field(default_factory=list)
    get_ok: list[bool] = field(default_factory=list)
    get_rpcs: list[int] = field(default_factory=list)
    put_latency: list[float] = field(default_factory=list)
    put_rpcs: list[int] = field(default_factory=list)
    put_boot_rpcs: list[int] = field(default_factory=list)
    put_recall: list[float] = field(default_factory=list)
    probe_ok: list[list[bool]] = field(default_factory=lambda: [[], [], []])
    probe_replicas: list[list[int]] = field(default_factory=lambda: [[], [], []])
    join_boot_rpcs: list[int] = field(default_factory=list)
    forged_seen: int = 0
    forged_accepted: int = 0
    eclipsed_ok: list[bool] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)


_MASK64 = (1 << 64) - 1
_FORGED_SEQ = 1_000_000  # a Sybil claims a far newer record than the DID's own
_EMPTY = np.zeros(0, dtype=np.int64)


def _mix(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: a deterministic hash of 64-bit integers (wraps by design)."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _key_position(key: RecordKey) -> int:
    """Where py-libp2p places a record key: sha256 of the wire key (top 64 bits)."""
    return int.from_bytes(hashlib.sha256(key.wire).digest()[:8], "big")


class DhtSim:
    """The simulated network. Build with a :class:`SimConfig`, then :meth:`run` once."""

    def __init__(self, config: SimConfig) -> None:
        self.cfg = config.validate()
        self.churn = CHURN_PRESETS[self.cfg.churn]
        self.rng = np.random.default_rng(self.cfg.seed)
        self.rand = random.Random(self.cfg.seed)  # noqa: S311 - simulation draws, not keys
        iv = self.cfg.interval_s
        self.horizon = 4 * iv + 4 * self.cfg.rpc_timeout_s + 60
        self.store: list[dict[int, _Held]] = []
        self.keys: list[KeyPair] = []
        self.rkeys: list[RecordKey] = []
        self.rpos: list[int] = []
        self.current: list[bytes] = []
        self.records = math.ceil(self.cfg.lookups / 3)
        self.eclipsed = self.cfg.eclipse
        for r in range(self.records):
            self._add_record(r)
        self._build_population()
        self._build_latency()
        self._build_churn()
        self.validator = RecordValidator()
        self._events: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = 0
        self.events = 0
        self.stats = _Stats()
        self._buckets: dict[tuple[int, float, int], npt.NDArray[np.int64]] = {}
        self._verdicts: dict[tuple[bytes, int], str | None] = {}
        self._forged_frames: dict[tuple[int, int], bytes] = {}
        self._attacker = KeyPair.from_seed(self._seed_bytes("attacker"))

    # --- set-up ---------------------------------------------------------------------------

    def _seed_bytes(self, *parts: object) -> bytes:
        text = ":".join(str(p) for p in (self.cfg.seed, *parts))
        return hashlib.sha256(text.encode()).digest()

    def _build_population(self) -> None:
        cfg = self.cfg
        online = self.churn.online_fraction if self.churn else 1.0
        regular_online = cfg.nodes - cfg.bootstrap - round(cfg.sybil * cfg.nodes)
        self.n_boot = cfg.bootstrap
        self.n_sybil = round(cfg.sybil * cfg.nodes) + self.eclipsed * cfg.k
        self.n_regular = max(cfg.k, round(regular_online / online))
        self.n = self.n_boot + self.n_sybil + self.n_regular
        self.first_regular = self.n_boot + self.n_sybil
        raw = np.frombuffer(self.rng.bytes(8 * self.n), dtype=">u8").astype(np.uint64)
        if self.eclipsed:
            # k Sybil ids per eclipsed key, closer to it than any honest node is likely to be
            spread = 1 << max(0, 64 - math.ceil(math.log2(self.n)) - 8)
            first = self.n_boot + round(cfg.sybil * cfg.nodes)
            near = self.rng.integers(0, spread, size=(self.eclipsed, cfg.k), dtype=np.uint64)
            keys = np.array(self.rpos[: self.eclipsed], dtype=np.uint64)[:, None]
            raw[first : self.first_regular] = (keys ^ near).ravel()
        self.pos = raw
        self.pos_list: list[int] = raw.tolist()
        self.order = np.argsort(raw, kind="stable").astype(np.int64)
        self.sorted_list: list[int] = raw[self.order].tolist()
        sy = np.arange(self.n_boot, self.first_regular, dtype=np.int64)
        self.sybil_idx = sy
        self.sybil_pos = raw[sy]
        self.unreachable = self.rng.random(self.n) < cfg.unreachable
        self.unreachable[: self.first_regular] = False
        self.unreachable_list: list[bool] = self.unreachable.tolist()
        # deepest non-empty bucket: one past the longest prefix shared with a sorted neighbour
        s = self.sorted_list
        depth = [0] * self.n
        for j, node in enumerate(self.order.tolist()):
            prev = 64 - (s[j] ^ s[j - 1]).bit_length() if j else 0
            nxt = 64 - (s[j] ^ s[j + 1]).bit_length() if j + 1 < self.n else 0
            depth[node] = min(64, max(prev, nxt) + 1)
        self.depth = depth
        self.phase: list[float] = (self.rng.random(self.n) * cfg.refresh_s).tolist()

    def _build_latency(self) -> None:
        share = np.array(REGION_SHARE) / sum(REGION_SHARE)
        self.region: list[int] = self.rng.choice(len(REGIONS), size=self.n, p=share).tolist()
        access = self.cfg.access_ms * np.exp(self.rng.normal(0.0, 0.6, self.n))
        self.access: list[float] = (access / 1000).tolist()
        self.base = [[ms / 1000 for ms in row] for row in REGION_RTT_MS]

    def _build_churn(self) -> None:
        """Per-node initial state and transition times over [-refresh_s, horizon]."""
        n, cfg = self.n, self.cfg
        start = -cfg.refresh_s
        self.t0 = start
        if self.churn is None:
            self.on0 = [True] * n
            self.on0_np = np.ones(n, dtype=bool)
            self.toffs = [0] * (n + 1)
            self.tflat: list[float] = []
            self.tkeys = np.zeros(0)
            self.toffs_np = np.zeros(n + 1, dtype=np.int64)
            self.span = 1.0
            self.joins_total = 0
            return
        ch = self.churn
        scale_on, scale_off = ch.scale(ch.session_median_s), ch.scale(ch.offline_median_s)
        c = ch.shape
        state = self.rng.random(n) < ch.online_fraction
        state[: self.first_regular] = True
        # stationary start: the current period is length-biased, the residual uniform in it
        gamma = self.rng.gamma(1 + 1 / c, 1.0, n) ** (1 / c)
        current = np.where(state, scale_on, scale_off) * gamma
        t = start + current * self.rng.random(n)
        t[: self.first_regular] = np.inf
        times: list[npt.NDArray[np.float64]] = []
        owners: list[npt.NDArray[np.int64]] = []
        cur = state.copy()
        active = np.nonzero(t < self.horizon)[0]
        while active.size:
            times.append(t[active])
            owners.append(active)
            cur[active] = ~cur[active]
            draw = self.rng.weibull(c, active.size)
            t[active] += np.where(cur[active], scale_on, scale_off) * draw
            active = active[t[active] < self.horizon]
        all_t = np.concatenate(times) if times else np.zeros(0)
        all_o = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
        idx = np.lexsort((all_t, all_o))
        all_t, all_o = all_t[idx], all_o[idx]
        counts = np.bincount(all_o, minlength=n)
        self.toffs_np = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self.toffs = self.toffs_np.tolist()
        self.tflat = all_t.tolist()
        self.span = self.horizon - start + 1.0
        self.tkeys = all_o.astype(np.float64) * self.span + (all_t - start)
        self.on0 = state.tolist()
        self.on0_np = state
        # joins (off -> on) inside the measured window [0, horizon]
        flips = np.arange(all_t.size) - self.toffs_np[all_o]
        went_on = (~state[all_o]) ^ (flips % 2 == 1)
        self.joins_total = int(np.count_nonzero(went_on & (all_t >= 0)))

    # --- churn queries --------------------------------------------------------------------

    def _flips(self, i: int, t: float) -> int:
        lo = self.toffs[i]
        return bisect.bisect_right(self.tflat, t, lo, self.toffs[i + 1]) - lo

    def online(self, i: int, t: float) -> bool:
        if self.churn is None:
            return True
        return self.on0[i] ^ bool(self._flips(i, t) & 1)

    def _stable(self, i: int, since: float, t: float) -> bool:
        """Online at ``t`` and without a departure since ``since`` (still holds its store)."""
        if self.churn is None:
            return True
        flips = self._flips(i, t)
        return self.on0[i] ^ bool(flips & 1) and flips == self._flips(i, since)

    def _online_vec(self, idx: npt.NDArray[np.int64], t: float) -> npt.NDArray[np.bool_]:
        if self.churn is None:
            return np.ones(idx.size, dtype=bool)
        keys = idx.astype(np.float64) * self.span + (t - self.t0)
        flips = np.searchsorted(self.tkeys, keys, side="right") - self.toffs_np[idx]
        online: npt.NDArray[np.bool_] = self.on0_np[idx] ^ (flips % 2 == 1)
        return online

    # --- routing tables -------------------------------------------------------------------

    def _snapshot(self, x: int, t: float) -> float:
        """When ``x`` last rebuilt its table: its last refresh, or its join if later."""
        if self.churn is None:
            return 0.0
        r = self.cfg.refresh_s
        ph = self.phase[x]
        snap = math.floor((t - ph) / r) * r + ph
        flips = self._flips(x, t)
        if flips:
            snap = max(snap, self.tflat[self.toffs[x] + flips - 1])
        return max(snap, self.t0)

    def _bucket(self, x: int, b: int, snap: float) -> npt.NDArray[np.int64]:
        cache_key = (x, snap, b)
        hit = self._buckets.get(cache_key)
        if hit is not None:
            return hit
        shift = 63 - b
        lo = ((self.pos_list[x] >> shift) ^ 1) << shift
        j0 = bisect.bisect_left(self.sorted_list, lo)
        j1 = bisect.bisect_left(self.sorted_list, lo + (1 << shift))
        count = j1 - j0
        k = self.cfg.k
        if count == 0:
            out = _EMPTY
        else:
            sample = 6 * k
            if count <= sample:
                cand = self.order[j0:j1]
            else:
                salt = hash((self.cfg.seed, x, b, snap)) & _MASK64
                h = _mix(np.arange(sample, dtype=np.uint64) + np.uint64(salt))
                cand = self.order[j0 + (h % np.uint64(count)).astype(np.int64)]
                _, first = np.unique(cand, return_index=True)
                cand = cand[np.sort(first)]
            if self.churn is not None:
                cand = cand[self._online_vec(cand, snap)]
            out = cand[:k]
        if len(self._buckets) > 400_000:
            self._buckets.clear()
        self._buckets[cache_key] = out
        return out

    def closest_in_table(self, x: int, target: int, t: float) -> list[int]:
        """The ``k`` peers of ``x``'s routing table closest to ``target`` (a FIND_NODE answer)."""
        snap = self._snapshot(x, t)
        k = self.cfg.k
        cpl = min(63, 64 - (self.pos_list[x] ^ target).bit_length())
        parts = [self._bucket(x, cpl, snap)]
        total = parts[0].size
        if total < k:
            # deeper buckets are next closest to the target, then the shallower ones
            for b in range(cpl + 1, self.depth[x]):
                parts.append(self._bucket(x, b, snap))
                total += parts[-1].size
            b = cpl - 1
            while total < k and b >= 0:
                parts.append(self._bucket(x, b, snap))
                total += parts[-1].size
                b -= 1
        cand = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if cand.size > k:
            dist = self.pos[cand] ^ np.uint64(target)
            cand = cand[np.argsort(dist, kind="stable")[:k]]
        return list(cand.tolist())

    def _sybil_closest(self, target: int) -> list[int]:
        dist = self.sybil_pos ^ np.uint64(target)
        k = min(self.cfg.k, dist.size)
        part = np.argpartition(dist, k - 1)[:k] if dist.size > k else np.arange(dist.size)
        return list(self.sybil_idx[part].tolist())

    # --- latency --------------------------------------------------------------------------

    def rtt(self, a: int, b: int) -> float:
        base = self.base[self.region[a]][self.region[b]] + self.access[a] + self.access[b]
        return base * math.exp(self.rand.gauss(0.0, 0.2))

    # --- events ---------------------------------------------------------------------------

    def _at(self, t: float, action: Callable[[float], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, action))

    def _is_sybil(self, i: int) -> bool:
        return self.n_boot <= i < self.first_regular

    def _random_regular(self, t: float) -> int:
        while True:
            i = self.rand.randrange(self.first_regular, self.n)
            if self.online(i, t) and not self.unreachable_list[i]:
                return i

    # --- records and validation -----------------------------------------------------------

    def _verdict(self, rec: int, value: bytes, now: int) -> str | None:
        """``check_value`` for a storing node or reader: ``None`` if valid, else its code."""
        memo = (value, now)
        if memo in self._verdicts:
            return self._verdicts[memo]
        try:
            check_value(self.rkeys[rec], value, self.validator, now=now)
            verdict: str | None = None
        except DsipError as exc:
            verdict = exc.code
        if len(self._verdicts) > 200_000:
            self._verdicts.clear()
        self._verdicts[memo] = verdict
        return verdict

    def _forged(self, rec: int, now: int) -> bytes:
        """A Sybil's answer: a newer-looking presence record for the DID, signed by the attacker."""
        memo = (rec, now // 60)
        frame = self._forged_frames.get(memo)
        if frame is None:
            frame = make_presence(
                self._attacker,
                subject=self.keys[rec].did,
                endpoints={"ws": ["wss://attacker.example/dsip"]},
                seq=_FORGED_SEQ,
                now=now,
                ttl=self.cfg.ttl_s,
            ).encode()
            self._forged_frames[memo] = frame
        return frame

    def _now(self, t: float) -> int:
        return _EPOCH + int(t)

    def _add_record(self, r: int) -> None:
        kp = KeyPair.from_seed(self._seed_bytes("record", r))
        key = RecordKey.presence(kp.did)
        self.keys.append(kp)
        self.rkeys.append(key)
        self.rpos.append(_key_position(key))
        self.store.append({})
        self.current.append(b"")

    def _sign(self, rec: int, seq: int, t: float) -> bytes:
        return make_presence(
            self.keys[rec],
            endpoints={"ws": ["wss://relay.example/dsip"]},
            seq=seq,
            now=self._now(t),
            ttl=self.cfg.ttl_s,
        ).encode()

    def _held_value(self, node: int, rec: int, t: float) -> bytes | None:
        held = self.store[rec].get(node)
        if held is None:
            return None
        if not self._stable(node, held.stored_at, t):
            del self.store[rec][node]  # left and came back: the in-memory store is gone
            return None
        if self._verdict(rec, held.frame, self._now(t)) is not None:
            del self.store[rec][node]  # VerifyingValueStore drops what no longer verifies
            return None
        return held.frame

    def _put_at(self, node: int, rec: int, value: bytes, seq: int, t: float) -> bool:
        """A storing node's PUT_VALUE handler: validate, keep the §8.3 winner (higher seq)."""
        if self._is_sybil(node):
            return True  # acknowledged, silently dropped
        if self._verdict(rec, value, self._now(t)) is not None:
            return False
        held = self.store[rec].get(node)
        if (
            held is None
            or held.seq < seq
            or self._held_value(node, rec, t) is None
            or held.frame == value
        ):
            self.store[rec][node] = _Held(value, seq, t)
        return True

    def _recall(self, target: int, chosen: Sequence[int], t: float) -> float:
        """Share of the true ``k`` closest live, honest, reachable nodes a PUT went to."""
        k = self.cfg.k
        dist = self.pos ^ np.uint64(target)
        near = np.argpartition(dist, 40 * k)[: 40 * k] if dist.size > 40 * k else np.arange(self.n)
        near = near[np.argsort(dist[near], kind="stable")]
        ok = self._online_vec(near, t) & ~self.unreachable[near]
        ok &= (near < self.n_boot) | (near >= self.first_regular)
        truth = set(near[ok][:k].tolist())
        return len(truth.intersection(chosen)) / max(1, len(truth))

    def live_replicas(self, rec: int, t: float) -> int:
        return sum(1 for node in list(self.store[rec]) if self._held_value(node, rec, t))

    # --- lookups --------------------------------------------------------------------------

    def _start(self, op: _Op, t: float, seeds: Sequence[int], connected: bool) -> None:
        for peer in seeds:
            if peer != op.origin and peer not in op.depth:
                op.depth[peer] = 1
                bisect.insort(op.known, (self.pos_list[peer] ^ op.target, peer))
                if connected:
                    op.connected.add(peer)
        self._launch(op, t)
        if op.in_flight == 0:
            self._finish(op, t)

    def _launch(self, op: _Op, t: float) -> None:
        seen = 0
        for _, peer in op.known:
            if peer in op.failed:
                continue
            seen += 1
            if seen > self.cfg.k or op.in_flight >= op.alpha:
                return
            if peer not in op.queried:
                if op.claimed is not None:
                    if peer in op.claimed:
                        continue  # another disjoint path asked it
                    op.claimed.add(peer)
                op.queried.add(peer)
                op.in_flight += 1
                self._send(op, peer, t)

    def _send(self, op: _Op, peer: int, t: float) -> None:
        op.rpcs += 1
        if peer < self.n_boot:
            op.boot_rpcs += 1
        rtt = self.rtt(op.origin, peer)
        latency = rtt * (1 if peer in op.connected else 1 + self.cfg.connect_rtts)
        arrive = t + latency - rtt / 2
        if self.unreachable_list[peer] or not self.online(peer, arrive):
            self._at(t + self.cfg.rpc_timeout_s, lambda now: self._answer(op, peer, None, now))
            return
        value: bytes | None = None
        if self._is_sybil(peer):
            closer = self._sybil_closest(op.target)
            if op.kind == "get":
                value = self._forged(op.rec, self._now(arrive))
        else:
            closer = self.closest_in_table(peer, op.target, arrive)
            if op.kind == "get":
                value = self._held_value(peer, op.rec, arrive)
        answer = (value, closer)
        self._at(t + latency, lambda now: self._answer(op, peer, answer, now))

    def _answer(
        self, op: _Op, peer: int, answer: tuple[bytes | None, list[int]] | None, t: float
    ) -> None:
        if op.finished:
            return  # a cancelled lookup's late answers (the nursery was cancelled)
        op.in_flight -= 1
        if answer is None:
            op.failed.add(peer)
        else:
            value, closer = answer
            op.responded.append(peer)
            op.connected.add(peer)
            d = op.depth[peer]
            if value is not None:
                op.values.setdefault(value, d)
                if not self.cfg.quorum_valid or self._verdict(op.rec, value, self._now(t)) is None:
                    op.answered += 1
            for c in closer:
                if c != op.origin and c not in op.depth:
                    op.depth[c] = d + 1
                    bisect.insort(op.known, (self.pos_list[c] ^ op.target, c))
            if op.quorum and op.answered >= op.quorum:
                self._finish(op, t)
                return
        self._launch(op, t)
        if op.in_flight == 0:
            self._finish(op, t)

    def _finish(self, op: _Op, t: float) -> None:
        if not op.finished:
            op.finished = True
            op.done(op, t)

    def lookup(
        self,
        kind: Literal["get", "find", "join"],
        origin: int,
        target: int,
        t: float,
        done: Callable[[_Op, float], None],
        *,
        rec: int = -1,
    ) -> None:
        quorum = self.cfg.quorum if kind == "get" else 0
        alpha = min(self.cfg.alpha, quorum + 1) if quorum else self.cfg.alpha
        op = _Op(kind, origin, target, rec, quorum, alpha, t, done)
        if kind == "join":  # DhtNode.bootstrap: every bootstrap node, then a self-lookup
            self._start(op, t, range(self.n_boot), connected=False)
        else:
            self._start(op, t, self.closest_in_table(origin, target, t), connected=True)

    # --- operations -----------------------------------------------------------------------

    def publish(self, rec: int, seq: int, t: float) -> None:
        value = self._sign(rec, seq, t)
        self.current[rec] = value
        origin = self._random_regular(t)

        def found(op: _Op, t1: float) -> None:
            ranked = sorted(op.responded, key=lambda p: self.pos_list[p] ^ op.target)
            pending = ranked[: self.cfg.k]
            if seq == 1:
                self.stats.put_recall.append(self._recall(op.target, pending, t1))
            state = {"in_flight": 0, "rpcs": op.rpcs, "boot": op.boot_rpcs}

            def next_put(now: float) -> None:
                while pending and state["in_flight"] < self.cfg.alpha:
                    peer = pending.pop(0)
                    state["in_flight"] += 1
                    state["rpcs"] += 1
                    state["boot"] += peer < self.n_boot
                    rtt = self.rtt(origin, peer)
                    if self.unreachable_list[peer] or not self.online(peer, now + rtt / 2):
                        self._at(now + self.cfg.rpc_timeout_s, put_done)
                    else:
                        self._put_at(peer, rec, value, seq, now + rtt / 2)
                        self._at(now + rtt, put_done)
                if state["in_flight"] == 0:
                    self.stats.put_latency.append(now - t)
                    self.stats.put_rpcs.append(state["rpcs"])
                    self.stats.put_boot_rpcs.append(state["boot"])

            def put_done(now: float) -> None:
                state["in_flight"] -= 1
                next_put(now)

            next_put(t1)

        self.lookup("find", origin, self.rpos[rec], t, found, rec=rec)

    def probe(self, rec: int, round_: int, t: float) -> None:
        reader = self._random_regular(t)
        replicas = self.live_replicas(rec, t)

        def got(op: _Op, t1: float) -> None:
            now = self._now(t1)
            key = self.rkeys[rec]
            genuine = -1
            for value, depth in op.values.items():
                code = self._verdict(rec, value, now)
                if code is not None:
                    self.stats.forged_seen += value != self.current[rec]
                    self.stats.rejected[code] += 1
                elif genuine < 0 or depth < genuine:
                    genuine = depth
            best = self.validator.best(key.validator_key, list(op.values), now=now)
            ok = best is not None and best.subject == self.keys[rec].did
            if best is not None and best.seq == _FORGED_SEQ:
                ok = False
                self.stats.forged_accepted += 1
            self.stats.get_latency.append(t1 - op.start)
            self.stats.get_ok.append(ok)
            self.stats.get_rpcs.append(op.rpcs)
            if ok and genuine > 0:
                self.stats.get_hops.append(genuine)
            self.stats.probe_ok[round_].append(ok)
            if rec < self.eclipsed:
                self.stats.eclipsed_ok.append(ok)
            self.stats.probe_replicas[round_].append(replicas)

        self.read(reader, rec, t, got)

    def read(self, reader: int, rec: int, t: float, done: Callable[[_Op, float], None]) -> None:
        """A GET_VALUE lookup; with ``disjoint > 1``, that many paths that share no peer.

        S/Kademlia's rule: the reader's ``k`` closest seeds are dealt out to the paths and a
        peer asked on one path is never asked on another, so one Sybil cannot steer them
        all. The reader waits for every path and validates the union of their values.
        """
        paths = self.cfg.disjoint
        target = self.rpos[rec]
        if paths == 1:
            self.lookup("get", reader, target, t, done, rec=rec)
            return
        merged = _Op("get", reader, target, rec, self.cfg.quorum, self.cfg.alpha, t, done)
        left = [paths]

        def path_done(op: _Op, t1: float) -> None:
            for value, depth in op.values.items():
                merged.values[value] = min(depth, merged.values.get(value, depth))
            merged.rpcs += op.rpcs
            left[0] -= 1
            if left[0] == 0:
                self._finish(merged, t1)

        claimed: set[int] = set()
        seeds = self.closest_in_table(reader, target, t)
        alpha = min(self.cfg.alpha, self.cfg.quorum + 1) if self.cfg.quorum else self.cfg.alpha
        ops = [
            _Op("get", reader, target, rec, self.cfg.quorum, alpha, t, path_done, claimed=claimed)
            for _ in range(paths)
        ]
        for i, op in enumerate(ops):
            self._start(op, t, seeds[i::paths], connected=True)

    def join(self, t: float) -> None:
        node = self.rand.randrange(self.first_regular, self.n)

        def joined(op: _Op, t1: float) -> None:
            self.stats.join_boot_rpcs.append(op.boot_rpcs)

        self.lookup("join", node, self.pos_list[node], t, joined)

    # --- the run --------------------------------------------------------------------------

    def _schedule(self) -> None:
        cfg, iv = self.cfg, self.cfg.interval_s
        for r in range(self.records):
            t_pub = self.rand.uniform(0, iv)
            self._at(t_pub, partial(self.publish, r, 1))
            for j in (1, 2, 3):
                if cfg.republish and j < 3:
                    self._at(t_pub + j * iv, partial(self.publish, r, j + 1))
                probe_t = t_pub + j * iv - iv / 10  # just before the j-th republish
                self._at(probe_t, partial(self.probe, r, j - 1))
        for _ in range(cfg.joins):
            self._at(self.rand.uniform(0, 4 * iv), self.join)

    def run(self) -> SimResult:
        began = time.perf_counter()
        self._schedule()
        while self._events:
            t, _, action = heapq.heappop(self._events)
            self.events += 1
            action(t)
        return self._result(time.perf_counter() - began)

    def _result(self, wall: float) -> SimResult:
        s, cfg = self.stats, self.cfg

        def pct(data: Sequence[float], q: float) -> float:
            return float(np.percentile(data, q)) if len(data) else math.nan

        def mean(data: Sequence[float]) -> float:
            return float(np.mean(data)) if len(data) else math.nan

        window = self.horizon
        joins_per_s = self.joins_total / window
        boot_per_join = mean(s.join_boot_rpcs) if s.join_boot_rpcs else 0.0
        # Presence traffic: one record per online node, republished every TTL/2. Bootstrap
        # nodes are ordinary members of the key space, so their share is the average node's.
        put_load = mean(s.put_rpcs) / cfg.interval_s if s.put_rpcs else 0.0
        boot = joins_per_s * boot_per_join / self.n_boot + put_load
        return SimResult(
            config=cfg,
            gets=len(s.get_ok),
            success=mean([float(ok) for ok in s.get_ok]),
            hops_p50=pct(s.get_hops, 50),
            hops_p95=pct(s.get_hops, 95),
            latency_p50=pct(s.get_latency, 50),
            latency_p95=pct(s.get_latency, 95),
            latency_p99=pct(s.get_latency, 99),
            rpcs_per_get=mean(s.get_rpcs),
            put_latency_p50=pct(s.put_latency, 50),
            rpcs_per_put=mean(s.put_rpcs),
            availability=(
                mean([float(x) for x in s.probe_ok[0]]),
                mean([float(x) for x in s.probe_ok[1]]),
                mean([float(x) for x in s.probe_ok[2]]),
            ),
            replicas=(
                mean(s.probe_replicas[0]),
                mean(s.probe_replicas[1]),
                mean(s.probe_replicas[2]),
            ),
            joins_per_s=joins_per_s,
            boot_rpcs_per_join=boot_per_join,
            boot_rpc_per_s=boot,
            forged_seen=s.forged_seen,
            forged_rejected=sum(s.rejected.values()),
            forged_accepted=s.forged_accepted,
            rejected_codes=tuple(sorted(s.rejected.items())),
            mean_hops=mean(s.get_hops),
            put_recall=mean(s.put_recall),
            rpc_load_per_node=put_load,
            eclipsed_success=mean([float(x) for x in s.eclipsed_ok]),
            wall_s=wall,
            events=self.events,
        )


def run(config: SimConfig) -> SimResult:
    """Build and run one simulation."""
    return DhtSim(config).run()


# --- output -------------------------------------------------------------------------------

_HEADER = (
    "| nodes | churn | republish | hops p50/p95 | GET latency p50/p95/p99 | success "
    "| avail. 1/2/3 intervals | live replicas 1/2/3 | boot RPC/s per node | RPCs/GET "
    "| PUT p50 | PUT reached true k closest | forged rejected |"
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def format_row(r: SimResult) -> str:
    c = r.config
    avail = "/".join(f"{a * 100:.1f}%" for a in r.availability)
    reps = "/".join(f"{x:.1f}" for x in r.replicas)
    return (
        f"| {c.nodes:,} | {c.churn} | {'on' if c.republish else 'off'} "
        f"| {r.hops_p50:.0f}/{r.hops_p95:.0f} "
        f"| {_ms(r.latency_p50)}/{_ms(r.latency_p95)}/{_ms(r.latency_p99)} "
        f"| {r.success * 100:.1f}% | {avail} | {reps} | {r.boot_rpc_per_s:.2f} "
        f"| {r.rpcs_per_get:.1f} | {_ms(r.put_latency_p50)} | {r.put_recall * 100:.1f}% "
        f"| {r.forged_rejected} |"
    )


def format_details(r: SimResult) -> str:
    """The figures the table leaves out, one line per run."""
    eclipsed = (
        f", eclipsed-record success {r.eclipsed_success * 100:.1f}%" if r.config.eclipse else ""
    )
    return (
        f"- {r.config.nodes:,} nodes: {r.gets} GETs, mean hops {r.mean_hops:.2f}, "
        f"RPCs/PUT {r.rpcs_per_put:.1f}, PUT load {r.rpc_load_per_node:.2f} RPC/s per node, "
        f"joins {r.joins_per_s:.2f}/s, bootstrap RPCs per join {r.boot_rpcs_per_join:.1f}, "
        f"forged values seen {r.forged_seen} (accepted {r.forged_accepted}), "
        f"rejections {dict(r.rejected_codes)}{eclipsed}; {r.events:,} events, "
        f"{r.wall_s:.1f} s"
    )


def format_table(results: Sequence[SimResult]) -> str:
    sep = "|" + "|".join("---" for _ in range(_HEADER.count("|") - 1)) + "|"
    return "\n".join([_HEADER, sep, *(format_row(r) for r in results)])


DESCRIPTION = (
    "Discrete-event simulation of the dsip presence DHT (Kademlia, k/alpha/quorum of the "
    "real node) with a WAN latency model, churn and signed records. Prints a Markdown "
    "table, one row per --nodes value."
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dsip.dht.sim", description=DESCRIPTION)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The simulator's options (shared by ``python -m dsip.dht.sim`` and ``dsip dht-sim``)."""
    d = SimConfig()
    p.add_argument("--nodes", type=int, nargs="+", default=[d.nodes], help="online nodes")
    p.add_argument("--lookups", type=int, default=d.lookups, help="measured GET lookups")
    p.add_argument("--churn", choices=sorted(CHURN_PRESETS), default=d.churn)
    p.add_argument(
        "--no-republish", action="store_true", help="publish once, never republish at TTL/2"
    )
    p.add_argument("--ttl", type=int, default=d.ttl_s, help="presence record lifetime, s")
    p.add_argument("--k", type=int, default=d.k, help="replication / bucket size")
    p.add_argument("--alpha", type=int, default=d.alpha, help="RPCs in flight per lookup")
    p.add_argument("--quorum", type=int, default=d.quorum, help="read quorum (0: ask all k)")
    p.add_argument("--rpc-timeout", type=float, default=d.rpc_timeout_s, help="seconds")
    p.add_argument("--refresh", type=float, default=d.refresh_s, help="table refresh, s")
    p.add_argument("--connect-rtts", type=float, default=d.connect_rtts)
    p.add_argument("--unreachable", type=float, default=d.unreachable, help="NAT'd fraction")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap, help="bootstrap nodes")
    p.add_argument("--joins", type=int, default=d.joins, help="simulated join lookups")
    p.add_argument("--sybil", type=float, default=d.sybil, help="fraction of Sybil nodes")
    p.add_argument("--eclipse", type=int, default=d.eclipse, help="records to eclipse")
    p.add_argument("--disjoint", type=int, default=d.disjoint, help="disjoint read paths")
    p.add_argument(
        "--quorum-valid", action="store_true", help="only verified values count to the quorum"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--details", action="store_true", help="also print per-run details")


def main(argv: Sequence[str] | None = None) -> int:
    return run_args(_parser().parse_args(argv))


def run_args(args: argparse.Namespace) -> int:
    """Run one simulation per ``--nodes`` value and print the table; 2 on a bad setting."""
    results = []
    for nodes in args.nodes:
        config = SimConfig(
            nodes=nodes,
            lookups=args.lookups,
            churn=args.churn,
            republish=not args.no_republish,
            ttl_s=args.ttl,
            k=args.k,
            alpha=args.alpha,
            quorum=args.quorum,
            rpc_timeout_s=args.rpc_timeout,
            refresh_s=args.refresh,
            connect_rtts=args.connect_rtts,
            unreachable=args.unreachable,
            bootstrap=args.bootstrap,
            joins=args.joins,
            sybil=args.sybil,
            eclipse=args.eclipse,
            disjoint=args.disjoint,
            quorum_valid=args.quorum_valid,
            seed=args.seed,
        )
        try:
            results.append(run(config))
        except ConfigError as exc:
            print(f"error: {exc.code} ({exc.reason}): {exc.message}", file=sys.stderr)
            return 2
    print(format_table(results))
    if args.details:
        print()
        for r in results:
            print(format_details(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
