"""dsip — Decentralized SIP: DID identities, signed envelopes, calls and messaging.

The public API is small and re-exported here; everything else is importable from its
module (``dsip.core.envelope``, ``dsip.core.identity``, ...).
"""

from __future__ import annotations

from dsip.errors import DsipError

__version__ = "0.1.0"

__all__ = ["DsipError", "__version__"]
