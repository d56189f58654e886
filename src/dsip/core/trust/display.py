"""What a client shows about who is calling: a *basis line*, never a badge (v0.7 §18.1).

§18.1 forbids a generic "verified" badge: the client names the basis of whatever it
verified, so the user can judge it. This module turns verification outcomes into those
lines. It decides nothing; the deciding happens in :mod:`dsip.core.trust.vc` (credentials),
:mod:`dsip.core.trust.rcid` (a caller's presented identity) and the gateway (``tel`` claims).

Lines, by source:

* **DID method** (§19.1 tiers 1 and 3): ``did:key`` → *Self-issued identity*; ``did:web`` →
  *Domain verified (<did>)*; anything else → *Unrecognized identity method* (we resolve
  no other method, so we verified nothing about it).
* **``tel`` claim** of a gateway (Gateway Profile G§5, spec-gap 25): the basis is the
  gateway's own claim, *Gateway attested by <gateway> · STIR attestation A (verified)*,
  *… (unverified)* or *… · no attestation*. A claim whose ``verifier`` is not the signing
  identity is somebody else's attestation relayed by the signer: it is shown, but never as
  verified (§15.2: a claim is attributed to its signer).
* **Credential** (§18.1 "Organization credential issued by Example Trust Registry"): the
  credential kind and the issuer's label.
* **Downgrade** (G§7, spec-gap 27): one sentence naming every guarantee a gateway crossing
  lost.

The exact strings are conformance facts (``vectors/trust/``); :func:`run_trust` is the vector
kind's runner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import unquote

__all__ = [
    "CREDENTIAL_KIND_LABELS",
    "DOWNGRADE_LOSSES",
    "credential_basis",
    "did_label",
    "downgrade_sentence",
    "identity_basis",
    "run_trust",
    "tel_basis",
    "tel_caller_headline",
    "verified_by",
]

SELF_ISSUED: Final = "Self-issued identity"
UNRECOGNIZED_METHOD: Final = "Unrecognized identity method"
_DOMAIN_VERIFIED: Final = "Domain verified ({did})"
_GATEWAY: Final = "Gateway attested by {gateway} · {level}"
_NO_ATTESTATION: Final = "no attestation"
_STIR: Final = "STIR attestation {level} ({state})"
_STIR_LEVELS: Final = frozenset({"A", "B", "C"})

#: G§7 loss token → the clause the callee reads (spec-gap 27 names the four losses).
DOWNGRADE_LOSSES: Final[Mapping[str, str]] = {
    "no-srtp-on-trunk": "media is not encrypted on the PSTN trunk",
    "identity-not-assertable": "your identity could not be asserted into the PSTN",
    "no-attestation": "the caller carried no verified attestation",
    "policy-unenforceable": "your media policy cannot be enforced past the gateway",
}
_DOWNGRADE_HEAD: Final = "Trust downgraded crossing the gateway (§6.3): "

#: Credential type → how a basis line names it (§18.1 wording: "<kind> issued by <issuer>").
CREDENTIAL_KIND_LABELS: Final[Mapping[str, str]] = {
    "DisplayNameCredential": "Display name credential",
    "OrganizationCredential": "Organization credential",
    "ReputationScore": "Reputation score",
    "RoleCredential": "Role credential",
    "PhoneNumberCredential": "Phone number credential",
}

_MAX_SHOWN = 200  # a hostile claim never makes a line longer than this per field


def _clip(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    text = "".join(ch for ch in text if ch.isprintable())  # no control/bidi tricks in a UI line
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def did_label(did: str) -> str:
    """A short, honest name for a DID: the host (and path) of a ``did:web``, else the DID.

    ``did:web:gw.example`` → ``gw.example``; ``did:web:example.com:orgs:acme`` →
    ``example.com/orgs/acme``. The label is derived from the identifier itself, never from
    a name the DID's owner chose, so it cannot impersonate another domain.
    """
    if isinstance(did, str) and did.startswith("did:web:"):
        parts = did[len("did:web:") :].split(":")
        return _clip("/".join(unquote(p) for p in parts))
    return _clip(did)


def _method(did: object) -> str | None:
    if not isinstance(did, str) or not did.startswith("did:"):
        return None
    method, sep, rest = did[4:].partition(":")
    return method if sep and rest else None


def _tel_claims(claims: Sequence[Any]) -> list[Mapping[str, Any]]:
    return [c for c in claims if isinstance(c, Mapping) and c.get("type") == "tel"]


def tel_basis(identity: str, claim: Mapping[str, Any]) -> str:
    """G§5: the gateway's attestation of a PSTN caller, as the gateway's own claim."""
    verifier = claim.get("verifier")
    own = verifier == identity  # only the signer's own verification counts as verified
    gateway = did_label(verifier if isinstance(verifier, str) else identity)
    level = claim.get("attestation")
    if level in _STIR_LEVELS:
        state = "verified" if claim.get("verified") is True and own else "unverified"
        shown = _STIR.format(level=level, state=state)
    else:  # "none", absent or unknown: never upgraded to an attestation
        shown = _NO_ATTESTATION
    return _GATEWAY.format(gateway=gateway, level=shown)


def identity_basis(identity: str, claims: Sequence[Any] = ()) -> str:
    """The §18.1 basis line for a verified signing identity and the claims it presented."""
    tel = _tel_claims(claims)
    if tel:
        return tel_basis(identity, tel[0])
    method = _method(identity)
    if method == "key":
        return SELF_ISSUED
    if method == "web":
        return _DOMAIN_VERIFIED.format(did=_clip(identity))
    return UNRECOGNIZED_METHOD


def tel_caller_headline(claim: Mapping[str, Any]) -> str:
    """The headline for a PSTN caller: the number, then the CNAM name when one came along.

    CNAM is the carrier's database entry, a claim like any display name (§18.2): it is shown
    beside the number, never instead of it.
    """
    number = _clip(claim.get("number", "unknown number"))
    cnam = claim.get("cnam")
    if isinstance(cnam, str) and cnam.strip():
        return f"PSTN caller {number} · {_clip(cnam.strip())}"
    return f"PSTN caller {number}"


def downgrade_sentence(losses: Sequence[str]) -> str | None:
    """G§7: one sentence naming every lost guarantee, in the order given; ``None`` if none.

    An unknown loss token is named as such rather than dropped: a downgrade the client
    cannot explain is still a downgrade.
    """
    if not losses:
        return None
    clauses = [
        DOWNGRADE_LOSSES.get(loss, f"an unrecognized guarantee was lost ({_clip(loss)})")
        for loss in losses
    ]
    return _DOWNGRADE_HEAD + "; ".join(clauses)


def credential_basis(credential_type: str, issuer_label: str) -> str:
    """§18.1: "Organization credential issued by Example Trust Registry"."""
    kind = CREDENTIAL_KIND_LABELS.get(credential_type, f"{_clip(credential_type)} credential")
    return f"{kind} issued by {_clip(issuer_label)}"


def verified_by(issuer_label: str) -> str:
    """The seed §12 step 4 line, "Verified by voice.net": it names who verified, so it is a
    basis, not a badge. Only ever built for a credential that passed every check."""
    return f"Verified by {_clip(issuer_label)}"


# --- conformance -------------------------------------------------------------------------


def run_trust(context: Mapping[str, Any], inp: Mapping[str, Any]) -> Any:
    """Runner of the ``trust`` vector kind: ``input.check`` selects the display rule and
    the result is the exact string the client shows (compared whole)."""
    del context  # the display rules need no receiver state
    check = inp.get("check")
    if check == "basis":
        return identity_basis(str(inp["identity"]), list(inp.get("claims", [])))
    if check == "tel-caller":
        return tel_caller_headline(inp["claim"])
    if check == "downgrade":
        return downgrade_sentence(list(inp.get("losses", [])))
    raise ValueError(f"unknown trust check {check!r}")
