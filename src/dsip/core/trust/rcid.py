"""Rich Caller ID ``rcid.v1`` (seed §6.2, §12 step 4; v0.7 §18): attach, verify, render.

The caller attaches one ``rcid.v1`` object to an invite (or introduction) as an element of
``identity.claims`` — the v0.7 ``identity-info`` shape (``common.schema.json``) has
``display_name`` and ``claims``, and ``claims`` "carries credential presentations"::

    "identity": {"display_name": "James Ferris",
                 "claims": [{"type": "rcid.v1", "displayName": "James Ferris",
                             "avatar": "ipfs://bafy…/avatar.png",
                             "credentials": [<eddsa-jcs-2022 VC object> | "<vc+jwt>", …]}]}

The callee verifies *every* credential (signature, issuer trusted for that credential type,
subject = the caller's identity DID, validity period, Bitstring status) and renders a
:class:`RcidDisplay`. What it shows follows §18.1–§18.2:

* no generic "verified" flag exists on the record: each verified credential contributes a
  basis line naming its issuer (*Display name credential issued by voice.net*) and the
  seed's *Verified by voice.net*;
* the name is the one a trusted ``DisplayNameCredential`` vouches for; without one, the
  caller's own ``displayName`` is shown as a claim (``name_verified`` false);
* an avatar or logo counts as verified only inside a credential from an issuer trusted for
  that credential type; otherwise it is a claim;
* every credential that fails is listed with its one reason — expired, not yet valid,
  revoked, suspended, issued to a different identity, issuer not trusted, altered or forged
  signature, unsigned, unsupported proof, status unknown or stale, malformed — and
  contributes nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dsip.core.b64 import b64url_decode
from dsip.core.identity import DocumentSource
from dsip.core.payloads.schema import validate_named
from dsip.core.trust.display import (
    credential_basis,
    did_label,
    identity_basis,
    verified_by,
)
from dsip.core.trust.vc import (
    CREDENTIAL_TYPES,
    CredentialError,
    StatusListSource,
    VerifiedCredential,
    verify_credential,
)
from dsip.errors import DsipError

__all__ = [
    "FAILURE_TEXT",
    "RCID_TYPE",
    "CredentialCheck",
    "IssuerTrust",
    "RcidDisplay",
    "check_credential",
    "identity_with_rcid",
    "make_rcid",
    "rcid_of",
    "render_caller",
    "verify_rcid",
]

RCID_TYPE: Final = "rcid.v1"
MAX_CREDENTIALS: Final = 8

#: CredentialError code → what the callee reads about that credential (one each).
FAILURE_TEXT: Final[Mapping[str, str]] = {
    "credential-expired": "expired",
    "credential-not-yet-valid": "not valid yet",
    "credential-revoked": "revoked by its issuer",
    "credential-suspended": "suspended by its issuer",
    "credential-subject": "issued to a different identity",
    "credential-issuer": "issuer not trusted for this claim",
    "credential-signature": "signature does not verify (altered or forged)",
    "credential-unsigned": "unsigned",
    "credential-proof-unsupported": "unsupported proof type",
    "credential-status-unavailable": "revocation status could not be checked",
    "credential-status-stale": "revocation status is out of date",
    "credential-malformed": "malformed",
}
_CLAIMED_NAME: Final = "Name claimed by the caller; not verified"
_NO_NAME: Final = "No name presented"


@dataclass(frozen=True)
class IssuerTrust:
    """Which issuers the callee trusts for which credential type (§18.2: per claim), the
    labels their basis lines use, and how old a status list may be (§18.3)."""

    issuers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)
    max_status_age: int | None = 86_400

    @classmethod
    def of(
        cls,
        issuers: Mapping[str, Collection[str]],
        names: Mapping[str, str] | None = None,
        *,
        max_status_age: int | None = 86_400,
    ) -> IssuerTrust:
        return cls({k: frozenset(v) for k, v in issuers.items()}, dict(names or {}), max_status_age)

    def label(self, issuer: str) -> str:
        return self.names.get(issuer) or did_label(issuer)


@dataclass(frozen=True)
class CredentialCheck:
    """The outcome for one presented credential."""

    index: int
    type: str | None  # the DSIP credential type, when readable
    issuer: str | None  # the claimed issuer, when readable
    code: str  # "verified" or the CredentialError code
    reason: str  # "verified" or FAILURE_TEXT[code]
    basis: str | None = None  # §18.1 line, verified credentials only
    credential: VerifiedCredential | None = field(default=None, repr=False)

    @property
    def verified(self) -> bool:
        return self.credential is not None

    def explain(self, trust: IssuerTrust) -> str:
        what = self.type or "credential"
        who = f" from {trust.label(self.issuer)}" if self.issuer else ""
        return f"{what}{who}: {self.reason}"


@dataclass(frozen=True)
class RcidDisplay:
    """What the callee's UI shows. There is deliberately no overall "verified" flag."""

    caller: str
    identity_basis: str  # §18.1 line for the DID itself (Self-issued identity, ...)
    name: str | None
    name_verified: bool
    name_basis: str  # "Verified by voice.net" | "Name claimed by the caller; not verified"
    avatar: str | None
    avatar_verified: bool
    organization: str | None  # from a verified OrganizationCredential
    roles: tuple[str, ...]  # from verified RoleCredentials
    reputation: tuple[tuple[int, int, str], ...]  # (score, scale, issuer) verified
    verified_by: tuple[str, ...]  # "Verified by <issuer>", one per issuer
    basis_lines: tuple[str, ...]  # one per verified credential
    unverified: tuple[str, ...]  # one line per failed credential, naming its reason
    checks: tuple[CredentialCheck, ...]
    problem: str | None = None  # the rcid.v1 object itself was unusable

    @property
    def credentials(self) -> tuple[VerifiedCredential, ...]:
        return tuple(c.credential for c in self.checks if c.credential is not None)


# --- caller side -------------------------------------------------------------------------


def make_rcid(
    credentials: Sequence[Mapping[str, Any] | str],
    *,
    display_name: str | None = None,
    avatar: str | None = None,
) -> dict[str, Any]:
    """An ``rcid.v1`` claim object (schema-checked)."""
    rcid: dict[str, Any] = {"type": RCID_TYPE}
    if display_name is not None:
        rcid["displayName"] = display_name
    if avatar is not None:
        rcid["avatar"] = avatar
    rcid["credentials"] = [c if isinstance(c, str) else dict(c) for c in credentials]
    validate_named("rcid", rcid)
    return rcid


def identity_with_rcid(
    rcid: Mapping[str, Any], *, claims: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The ``identity`` member of an invite/introduction carrying ``rcid``: v0.7's
    ``display_name`` mirrors the rcid's claimed name for clients that know no rcid."""
    identity: dict[str, Any] = {"claims": [*(dict(c) for c in claims), dict(rcid)]}
    if isinstance(rcid.get("displayName"), str):
        identity["display_name"] = rcid["displayName"]
    return identity


def rcid_of(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first ``rcid.v1`` claim of a payload's ``identity.claims``, if any."""
    identity = payload.get("identity")
    claims = identity.get("claims") if isinstance(identity, Mapping) else None
    if not isinstance(claims, list):
        return None
    for claim in claims:
        if isinstance(claim, Mapping) and claim.get("type") == RCID_TYPE:
            return claim
    return None


# --- callee side -------------------------------------------------------------------------


def _peek(presented: object) -> tuple[str | None, str | None]:
    """(DSIP type, issuer) of a credential as it claims them, for the failure line only."""
    body: object = presented
    if isinstance(presented, str):
        try:
            body = json.loads(b64url_decode(presented.split(".")[1]))
        except (DsipError, ValueError, IndexError):
            return None, None
    if not isinstance(body, Mapping):
        return None, None
    types = body.get("type")
    ctype = None
    if isinstance(types, list):
        found = sorted(t for t in types if isinstance(t, str) and t in CREDENTIAL_TYPES)
        ctype = found[0] if found else None
    issuer = body.get("issuer")
    if isinstance(issuer, Mapping):
        issuer = issuer.get("id")
    return ctype, issuer if isinstance(issuer, str) else None


def check_credential(
    index: int,
    presented: object,
    *,
    caller: str,
    now: int,
    documents: DocumentSource | None,
    trust: IssuerTrust,
    status_lists: StatusListSource | None,
) -> CredentialCheck:
    """Verify one presented credential against the caller and the trust configuration."""
    ctype, issuer = _peek(presented)
    try:
        if not isinstance(presented, (Mapping, str)):
            raise CredentialError("a credential is a JSON object or a compact vc+jwt")
        vc = verify_credential(
            presented,
            documents=documents,
            now=now,
            trusted_issuers=trust.issuers,
            subject=caller,
            status_lists=status_lists,
            max_status_age=trust.max_status_age,
        )
    except CredentialError as exc:
        text = FAILURE_TEXT.get(exc.code, FAILURE_TEXT["credential-malformed"])
        return CredentialCheck(index, ctype, issuer, exc.code, text)
    except DsipError:  # a schema or identity failure deep inside: still one line, never a crash
        return CredentialCheck(
            index, ctype, issuer, "credential-malformed", FAILURE_TEXT["credential-malformed"]
        )
    basis = credential_basis(vc.type, trust.label(vc.issuer))
    return CredentialCheck(index, vc.type, vc.issuer, "verified", "verified", basis, vc)


def verify_rcid(
    rcid: Mapping[str, Any] | None,
    *,
    caller: str,
    now: int,
    documents: DocumentSource | None,
    trust: IssuerTrust,
    status_lists: StatusListSource | None = None,
    claims: Sequence[Any] = (),
    display_name: str | None = None,
) -> RcidDisplay:
    """Verify every credential of ``rcid`` for ``caller`` (the verified identity DID) and
    build the display record. ``claims`` are the other ``identity.claims`` (a gateway's
    ``tel`` claim shapes the identity basis); ``display_name`` is v0.7's claimed name."""
    problem = None
    checks: list[CredentialCheck] = []
    claimed_name = display_name
    claimed_avatar = None
    if rcid is not None:
        try:
            validate_named("rcid", dict(rcid))
        except DsipError as exc:
            problem = f"rcid.v1 is malformed: {exc.message}"
        else:
            claimed_name = rcid.get("displayName", display_name)
            claimed_avatar = rcid.get("avatar")
            checks = [
                check_credential(
                    i,
                    presented,
                    caller=caller,
                    now=now,
                    documents=documents,
                    trust=trust,
                    status_lists=status_lists,
                )
                for i, presented in enumerate(rcid["credentials"][:MAX_CREDENTIALS])
            ]
    return _render(caller, claims, claimed_name, claimed_avatar, checks, trust, problem)


def render_caller(
    payload: Mapping[str, Any],
    caller: str,
    *,
    now: int,
    documents: DocumentSource | None,
    trust: IssuerTrust,
    status_lists: StatusListSource | None = None,
) -> RcidDisplay:
    """:func:`verify_rcid` on a verified invite/introduction payload; ``caller`` is the
    identity the envelope was verified for (``Verified.identity``)."""
    identity = payload.get("identity")
    claims = identity.get("claims", []) if isinstance(identity, Mapping) else []
    name = identity.get("display_name") if isinstance(identity, Mapping) else None
    return verify_rcid(
        rcid_of(payload),
        caller=caller,
        now=now,
        documents=documents,
        trust=trust,
        status_lists=status_lists,
        claims=[c for c in claims if not (isinstance(c, Mapping) and c.get("type") == RCID_TYPE)]
        if isinstance(claims, list)
        else [],
        display_name=name if isinstance(name, str) else None,
    )


def _render(
    caller: str,
    claims: Sequence[Any],
    claimed_name: str | None,
    claimed_avatar: str | None,
    checks: list[CredentialCheck],
    trust: IssuerTrust,
    problem: str | None,
) -> RcidDisplay:
    good = [c.credential for c in checks if c.credential is not None]
    names = [v for v in good if v.type == "DisplayNameCredential"]
    orgs = [v for v in good if v.type == "OrganizationCredential"]
    name, name_verified, name_basis = claimed_name, False, _CLAIMED_NAME
    if names:
        first = names[0]
        name, name_verified = str(first.subject["displayName"]), True
        name_basis = verified_by(trust.label(first.issuer))
    elif claimed_name is None:
        name_basis = _NO_NAME
    avatar, avatar_verified = claimed_avatar, False
    for v in [*names, *orgs]:  # §18.2: only an image inside a trusted credential is verified
        image = v.subject.get("avatar") or v.subject.get("logo")
        if isinstance(image, str):
            avatar, avatar_verified = image, True
            break
    issuers = list(dict.fromkeys(trust.label(v.issuer) for v in good))
    return RcidDisplay(
        caller=caller,
        identity_basis=identity_basis(caller, claims),
        name=name,
        name_verified=name_verified,
        name_basis=name_basis,
        avatar=avatar,
        avatar_verified=avatar_verified,
        organization=str(orgs[0].subject["organization"]) if orgs else None,
        roles=tuple(str(v.subject["role"]) for v in good if v.type == "RoleCredential"),
        reputation=tuple(
            (int(v.subject["score"]), int(v.subject.get("scale", 1000)), v.issuer)
            for v in good
            if v.type == "ReputationScore"
        ),
        verified_by=tuple(verified_by(label) for label in issuers),
        basis_lines=tuple(c.basis for c in checks if c.basis),
        unverified=tuple(c.explain(trust) for c in checks if not c.verified),
        checks=tuple(checks),
        problem=problem,
    )
