"""The DSIP presence overlay on libp2p's Kademlia DHT (seed §5, §11, §21.C).

Discovery without a registrar: a DID's current presence record lives in a Kad-DHT under
``sha256("dsip-presence:" + DID)``; region buckets under
``sha256("dsip-presence:geo:" + geohash_prefix)`` list the DIDs present in a geohash cell.
Records are signed DSIP envelopes, verified by :mod:`dsip.core.presence` (sans-I/O); this
package only moves them.

Modules, bottom up:

:mod:`dsip.dht.node`
    trio side: a py-libp2p host + ``KadDHT`` whose every storing node runs the full record
    validator, the key encoding (``/dsip/…``, ``/dsipg/…``, ``/dsiph/…``, ≤ 50 bytes), the
    iterative lookup that returns *all* values.
:mod:`dsip.dht.bridge`
    one trio thread per process and the asyncio-facing :class:`DhtClient`.
:mod:`dsip.dht.publisher`
    publish, then re-sign and republish at TTL/2.

Why region buckets are merged values, not provider records
    Provider records (ADD_PROVIDER/GET_PROVIDERS) can hold many entries per key, but an
    entry is a *peer* (peer id + addresses), announced by that peer, signed by nobody the
    reader cares about: it cannot say which DID is present, one node publishing for many
    DIDs appears once, and a reader needs one more lookup per provider to learn anything.
    py-libp2p also rate-limits ADD_PROVIDER to 10 per peer per 10 s. A region bucket
    instead stores a ``dsip-region/1`` document of individually signed presence records
    (:meth:`~dsip.core.presence.RecordValidator.merge_region`): the ``dsipg`` selector
    accepts every valid incoming bucket and the storing node's value store *merges* it into
    what it holds (per DID, the §8.3 winner; expired entries dropped; at most 64 entries
    and 64 KiB). A reader asks *all* ``k`` closest nodes (a presence read stops at 3
    copies; a set read cannot) and merges every value, so an entry one node missed — a PUT
    that failed under load — is still found on another; when the nodes disagreed the reader
    writes the union back (read-repair). Nothing can be forged or altered — each
    entry keeps its own DSIP signature — a storing node can only drop entries, which the
    next republish repairs. Provider records remain available (``provide`` /
    ``get_providers``) for peer-level announcements, e.g. "this node serves region u4pr".
"""

from __future__ import annotations

from dsip.dht.bridge import DhtClient, LookupSource, TrioRuntime
from dsip.dht.node import (
    DhtClosedError,
    DhtError,
    DhtKeyError,
    DhtNode,
    DhtNodeConfig,
    DhtTimeoutError,
    DhtUnavailableError,
    Provider,
    RecordKey,
    load_dht_config,
)
from dsip.dht.publisher import PresencePublisher, PublishReport

__all__ = [
    "DhtClient",
    "DhtClosedError",
    "DhtError",
    "DhtKeyError",
    "DhtNode",
    "DhtNodeConfig",
    "DhtTimeoutError",
    "DhtUnavailableError",
    "LookupSource",
    "PresencePublisher",
    "Provider",
    "PublishReport",
    "RecordKey",
    "TrioRuntime",
    "load_dht_config",
]
