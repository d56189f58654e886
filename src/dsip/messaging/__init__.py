"""End-to-end encrypted messaging.

MLS groups (RFC 9420): :mod:`dsip.messaging.mls` is one device's group state,
:mod:`dsip.messaging.mls_delivery` the sans-I/O delivery service a relay runs; both carry
:class:`~dsip.messaging.mls.MlsMessage`, the body of the ``mls`` payload type.

The MLS names below load on first use, so importing another module of this package does
not import the MLS library (nor apply :mod:`dsip.messaging.mls`'s fixes to it).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CIPHER_SUITE",
    "ContentType",
    "Decrypted",
    "Delivery",
    "DeliveryService",
    "MlsError",
    "MlsMember",
    "MlsMessage",
    "Outcome",
    "Processed",
    "StagedCommit",
]

_HOME = dict.fromkeys(__all__, "dsip.messaging.mls") | {
    "Delivery": "dsip.messaging.mls_delivery",
    "DeliveryService": "dsip.messaging.mls_delivery",
    "Outcome": "dsip.messaging.mls_delivery",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'dsip.messaging' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
