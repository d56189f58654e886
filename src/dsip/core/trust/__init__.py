"""Trust (seed §6.2, §8–§9; v0.7 §18–§19): credentials, Rich Caller ID, policy, first contact.

One concept per module: :mod:`~dsip.core.trust.display` (basis lines, never badges),
:mod:`~dsip.core.trust.vc` (W3C Verifiable Credentials and Bitstring Status Lists),
:mod:`~dsip.core.trust.rcid` (``rcid.v1`` on invites), :mod:`~dsip.core.trust.policy`
(declarative TOML policy engine), :mod:`~dsip.core.trust.first_contact` (gated
introductions and signed community lists), :mod:`~dsip.core.trust.issuance` (the issuer's
challenge / proof of control / revocation protocol), :mod:`~dsip.core.trust.reputation`
(signed ratings and their sybil-bounded aggregation), :mod:`~dsip.core.trust.disclosure`
(SD-JWT VC selective disclosure) and :mod:`~dsip.core.trust.predicates` (AnonCreds
"score ≥ X" proofs). Everything here is sans-I/O: time is ``now``.
"""
