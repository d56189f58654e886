"""The trust policy engine (seed §9 "client/relay policy engine enforces issuer allowlists
and thresholds"; v0.7 §19.1–§19.2, §15.4): declarative TOML, deterministic, explainable.

A policy is one TOML file per user or per relay, validated twice before it is used: by
``trust-policy.schema.json`` (shape: every level closed, so a misspelt key is an error, not
a silently ignored rule) and by :meth:`TrustPolicy.from_mapping` (meaning: reason tokens
map into the v0.7 registry, time zones exist, rule ids are unique, every rule can fire —
a rule needing a credential type for which no issuer is trusted is refused). A file that
fails either **refuses to load** with :class:`~dsip.errors.ConfigError`; nothing here ever
falls back to "allow".

Example (a user)::

    version = 1
    scope = "user"                      # or "relay": actions allow / reject
    [defaults]
    action = "ring"
    timezone = "Europe/Paris"

    [issuers]                           # §18.2: trust per claim type
    DisplayNameCredential = ["did:web:voice.net"]
    ReputationScore = ["did:web:trustgraph.org"]

    [first_contact]                     # introductions: any one proof admits
    min_reputation = 600
    pow_difficulty = 20

    [[lists]]
    publisher = "did:web:lists.example"
    id = "robocallers"

    [[rules]]
    id = "community-block"
    when = { listed = "block" }
    action = "reject"
    reason = "policy:blocked"

    [[rules]]
    id = "low-reputation"
    when = { known_contact = false, reputation_below = 500 }
    action = "reject"
    reason = "policy:reputation-too-low"

    [[rules]]
    id = "night"
    when = { time = { from = "22:00", to = "07:00" } }
    action = "voicemail"

Evaluation: rules are tried in file order; the first whose every ``when`` condition holds
decides (an empty ``when`` always holds); otherwise ``defaults``. Each
:class:`Decision` names the rule that fired, why each of its conditions held, the wire
reason and, for community lists, the audit line naming the list, its version, its
publisher and the entry's reason.

Reason tokens: a rule may use the seed's ``category:condition`` style (§21.A,
``policy:reputation-too-low``) or a v0.7 token. Seed tokens map through
:data:`SEED_REASONS` to the registered v0.7 token that goes on the wire (``reason``), the
seed token itself travelling in ``detail``; an unmapped seed token or an unregistered v0.7
token is a load error (extension categories ``x-…`` excepted, §15.6).

Trust tiers (§19.1) as :func:`tier_of` computes them: 0 an unrecognised DID method,
1 ``did:key`` (self-issued), 2 a known contact (relationship-gated), 3 ``did:web``
(domain-bound), 4 at least one verified credential from a trusted issuer. dsip assigns
tier 5 (regulated) to nobody yet: no credential type here attests regulation.
"""

from __future__ import annotations

import logging
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dsip.core.envelope import Verified
from dsip.core.identity import DocumentSource
from dsip.core.payloads.schema import validate_named
from dsip.core.registry import REASONS
from dsip.core.trust.display import did_label
from dsip.core.trust.first_contact import (
    CommunityLists,
    FirstContactConfig,
    FirstContactGate,
    GateResult,
    Listing,
    ReceiptLedger,
    reputation_of,
)
from dsip.core.trust.rcid import CredentialCheck, IssuerTrust, render_caller
from dsip.core.trust.vc import StatusListSource, VerifiedCredential
from dsip.errors import ConfigError, DsipError

__all__ = [
    "SEED_REASONS",
    "CallerFacts",
    "Decision",
    "PolicyRefusal",
    "Rule",
    "TrustPolicy",
    "endpoint_screen",
    "gather_facts",
    "relay_first_contact_hook",
    "tier_of",
]

logger = logging.getLogger("dsip.trust")

USER_ACTIONS: Final = frozenset({"ring", "silent", "voicemail", "reject"})
RELAY_ACTIONS: Final = frozenset({"allow", "reject"})

#: Seed §21.A-style tokens → the registered v0.7 token sent on the wire (§15.4).
SEED_REASONS: Final[Mapping[str, str]] = {
    "policy:reputation-too-low": "policy.trust-insufficient",
    "policy:credential-required": "policy.trust-insufficient",
    "policy:untrusted-issuer": "policy.trust-insufficient",
    "policy:unverified-credential": "policy.trust-insufficient",
    "policy:tier-too-low": "policy.trust-insufficient",
    "policy:blocked": "policy.blocked",
    "policy:blocklisted": "policy.blocked",
    "policy:community-blocked": "policy.blocked",
    "policy:first-contact-required": "policy.first-contact-required",
    "policy:proof-required": "policy.first-contact-required",
    "policy:rate-limited": "policy.rate-limited",
    "policy:outside-hours": "endpoint.unavailable",
    "user:blocked": "user.blocked",
    "user:declined": "user.declined",
}

# Fixed evaluation (and explanation) order of conditions: cheap facts first.
_CONDITIONS: Final = (
    "messages",
    "callers",
    "methods",
    "known_contact",
    "listed",
    "tier_below",
    "tier_at_least",
    "credentials",
    "unverified_credentials",
    "reputation_below",
    "reputation_at_least",
    "roles",
    "organizations",
    "first_contact_proof",
    "proofs",
    "time",
)
_NEEDS_TYPE: Final = {
    "reputation_below": "ReputationScore",
    "reputation_at_least": "ReputationScore",
    "roles": "RoleCredential",
    "organizations": "OrganizationCredential",
}
_MAX_DETAIL: Final = 512  # an error detail names the rule; a list's reasons stay short
_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class CallerFacts:
    """Everything a decision may look at, established before the policy runs."""

    caller: str  # the verified identity DID
    message: str  # "invite" | "introduction"
    now: int
    known_contact: bool = False
    credentials: tuple[VerifiedCredential, ...] = ()  # verified, from trusted issuers
    failed: tuple[CredentialCheck, ...] = ()  # presented but not verified
    gate: GateResult | None = None  # first-contact proofs (introductions)
    listings: tuple[Listing, ...] = ()  # community list hits
    proven_reputation: int | None = None  # a verified "score ≥ X" proof (predicates)

    @property
    def method(self) -> str:
        return self.caller.split(":", 2)[1] if self.caller.count(":") >= 2 else ""


def tier_of(facts: CallerFacts) -> int:
    """§19.1 trust tier (see the module docstring for what each tier needs here)."""
    tier = {"key": 1, "web": 3}.get(facts.method, 0)
    if facts.known_contact:
        tier = max(tier, 2)
    if facts.credentials:
        tier = max(tier, 4)
    return tier


@dataclass(frozen=True)
class Rule:
    id: str
    action: str
    when: Mapping[str, Any]
    reason: str | None = None  # the v0.7 wire token
    detail: str | None = None  # the seed-style token, when the rule named one
    description: str = ""


@dataclass(frozen=True)
class Decision:
    """The action, the rule that fired and why: deterministic for the same facts."""

    action: str
    rule: str  # a rule id, or "defaults"
    reason: str | None  # v0.7 token for a reject (or the rule's token)
    detail: str | None  # the seed token (``policy:reputation-too-low``) if any
    because: tuple[str, ...]  # one line per condition of the firing rule
    audit: tuple[str, ...] = ()  # community-list lines: which list, version, publisher, why

    @property
    def refused(self) -> bool:
        return self.action == "reject"

    def reject_fields(self) -> dict[str, str]:
        """``reason`` (and the seed token as ``detail``, §15.2) for the ``reject`` payload."""
        if not self.refused or self.reason is None:
            raise ValueError("only a reject decision has reject fields")
        fields = {"reason": self.reason}
        if self.detail:
            fields["detail"] = self.detail
        return fields

    def explain(self) -> str:
        head = f"{self.action} by rule '{self.rule}'"
        if self.reason:
            head += f" ({self.reason}{', ' + self.detail if self.detail else ''})"
        parts = list(self.because) + list(self.audit)
        return head + (": " + "; ".join(parts) if parts else "")


@dataclass(frozen=True)
class _Window:
    start: int  # minutes after local midnight
    end: int
    days: frozenset[int] | None

    def holds(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start <= self.end:
            inside = self.start <= minute < self.end
        else:  # wraps midnight: the small hours belong to the previous day's window
            inside = minute >= self.start or minute < self.end
            if minute < self.end:
                day = (day - 1) % 7
        return inside and (self.days is None or day in self.days)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _wire_reason(token: str | None, where: str) -> tuple[str | None, str | None]:
    """(v0.7 token, seed token) for a configured reason, or ConfigError."""
    if token is None:
        return None, None
    if ":" in token:
        mapped = SEED_REASONS.get(token)
        if mapped is None:
            known = ", ".join(sorted(SEED_REASONS))
            raise ConfigError(
                f"{where}: seed reason {token!r} has no v0.7 mapping (known: {known})"
            )
        return mapped, token
    if token not in REASONS and not token.startswith("x-"):
        raise ConfigError(f"{where}: {token!r} is not a registered v0.7 reason token")
    return token, None


class TrustPolicy:
    """A loaded, validated policy. Build with :meth:`load`, :meth:`from_toml` or
    :meth:`from_mapping`; each raises ``ConfigError`` rather than return a weaker policy."""

    def __init__(
        self,
        *,
        scope: str,
        name: str,
        default_action: str,
        default_reason: str | None,
        default_detail: str | None,
        timezone: ZoneInfo,
        issuers: Mapping[str, frozenset[str]],
        issuer_names: Mapping[str, str],
        lists: tuple[tuple[str, str], ...],
        first_contact: FirstContactConfig,
        rules: tuple[Rule, ...],
        windows: Mapping[str, _Window],
    ) -> None:
        self.scope = scope
        self.name = name
        self.default_action = default_action
        self.default_reason = default_reason
        self.default_detail = default_detail
        self.timezone = timezone
        self.issuers = issuers
        self.issuer_names = issuer_names
        self.lists = lists
        self.first_contact = first_contact
        self.rules = rules
        self._windows = windows

    # --- loading -----------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> TrustPolicy:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read policy: {exc}") from None
        return cls.from_toml(text, source=str(path))

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<policy>") -> TrustPolicy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<policy>") -> TrustPolicy:
        try:
            validate_named("trust-policy", dict(data))
        except DsipError as exc:
            raise ConfigError(f"{source}: {exc.message}") from None
        scope = data["scope"]
        allowed = USER_ACTIONS if scope == "user" else RELAY_ACTIONS
        defaults = data["defaults"]
        tz_name = defaults.get("timezone", "UTC")
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{source}: unknown time zone {tz_name!r}") from None
        if defaults["action"] not in allowed:
            raise ConfigError(
                f"{source}: defaults.action {defaults['action']!r} is not a {scope} action"
            )
        d_reason, d_detail = _wire_reason(defaults.get("reason"), f"{source}: defaults")
        if defaults["action"] == "reject" and d_reason is None:
            raise ConfigError(f"{source}: defaults.action reject needs a reason")
        issuers = {k: frozenset(v) for k, v in data.get("issuers", {}).items()}
        lists = tuple((x["publisher"], x["id"]) for x in data.get("lists", []))
        fc = data.get("first_contact", {})
        rep_issuers = issuers.get("ReputationScore", frozenset())
        if "min_reputation" in fc and not rep_issuers:
            raise ConfigError(
                f"{source}: first_contact.min_reputation needs a trusted ReputationScore issuer"
            )
        first_contact = FirstContactConfig(
            min_reputation=fc.get("min_reputation"),
            reputation_issuers=rep_issuers,
            pow_difficulty=fc.get("pow_difficulty"),
            payment_issuers=frozenset(fc.get("payment_issuers", [])),
            min_payment_msat=fc.get("min_payment_msat", 1),
        )
        rules: list[Rule] = []
        windows: dict[str, _Window] = {}
        for raw in data.get("rules", []):
            where = f"{source}: rule {raw['id']!r}"
            if any(r.id == raw["id"] for r in rules):
                raise ConfigError(f"{where}: duplicate rule id")
            if raw["action"] not in allowed:
                raise ConfigError(f"{where}: {raw['action']!r} is not a {scope} action")
            reason, detail = _wire_reason(raw.get("reason"), where)
            if raw["action"] == "reject" and reason is None:
                raise ConfigError(f"{where}: a reject rule needs a reason")
            when = dict(raw.get("when", {}))
            cls._check_reachable(when, issuers, lists, first_contact, where)
            if "time" in when:
                t = when["time"]
                if t["from"] == t["to"]:
                    raise ConfigError(f"{where}: an empty time window never holds")
                days = t.get("days")
                windows[raw["id"]] = _Window(
                    _minutes(t["from"]),
                    _minutes(t["to"]),
                    frozenset(_DAYS.index(d) for d in days) if days else None,
                )
            rules.append(
                Rule(raw["id"], raw["action"], when, reason, detail, raw.get("description", ""))
            )
        return cls(
            scope=scope,
            name=data.get("name", source),
            default_action=defaults["action"],
            default_reason=d_reason,
            default_detail=d_detail,
            timezone=tz,
            issuers=issuers,
            issuer_names=dict(data.get("issuer_names", {})),
            lists=lists,
            first_contact=first_contact,
            rules=tuple(rules),
            windows=windows,
        )

    @staticmethod
    def _check_reachable(
        when: Mapping[str, Any],
        issuers: Mapping[str, frozenset[str]],
        lists: tuple[tuple[str, str], ...],
        fc: FirstContactConfig,
        where: str,
    ) -> None:
        """A rule whose condition can never hold is a configuration mistake: refuse it."""
        needed = {_NEEDS_TYPE[k] for k in when if k in _NEEDS_TYPE}
        needed.update(when.get("credentials", []))
        for ctype in sorted(needed):
            if not issuers.get(ctype):
                raise ConfigError(f"{where}: needs {ctype} but [issuers] trusts no issuer for it")
        if "listed" in when and not lists:
            raise ConfigError(f"{where}: 'listed' needs at least one [[lists]] subscription")
        offered = set(fc.mechanisms)
        if ("first_contact_proof" in when or "proofs" in when) and not offered:
            raise ConfigError(f"{where}: proof conditions need a [first_contact] section")
        missing = set(when.get("proofs", [])) - offered
        if missing:
            raise ConfigError(
                f"{where}: proofs {sorted(missing)} are not configured in [first_contact]"
            )

    # --- using -------------------------------------------------------------------------

    @property
    def trust(self) -> IssuerTrust:
        return IssuerTrust.of(self.issuers, self.issuer_names)

    def gate(
        self, *, documents: DocumentSource | None = None, ledger: ReceiptLedger | None = None
    ) -> FirstContactGate | None:
        if not self.first_contact.mechanisms:
            return None
        return FirstContactGate(self.first_contact, documents=documents, ledger=ledger)

    def decide(self, facts: CallerFacts) -> Decision:
        """The first rule whose conditions all hold, else the defaults."""
        audit = tuple(x.explain() for x in facts.listings)
        for rule in self.rules:
            because = self._match(rule, facts)
            if because is not None:
                return Decision(rule.action, rule.id, rule.reason, rule.detail, because, audit)
        return Decision(
            self.default_action,
            "defaults",
            self.default_reason,
            self.default_detail,
            ("no rule matched",),
            audit,
        )

    def _label(self, did: str) -> str:
        return self.issuer_names.get(did) or did_label(did)

    def _match(self, rule: Rule, f: CallerFacts) -> tuple[str, ...] | None:
        why: list[str] = []
        for key in _CONDITIONS:
            if key not in rule.when:
                continue
            line = self._condition(key, rule.when[key], rule.id, f)
            if line is None:
                return None
            why.append(line)
        return tuple(why) or ("always",)

    def _condition(self, key: str, want: Any, rule_id: str, f: CallerFacts) -> str | None:
        """A line saying why condition ``key`` holds for ``f``, or ``None`` if it does not."""
        if key == "messages":
            return f"message is {f.message}" if f.message in want else None
        if key == "callers":
            return f"caller {f.caller} is listed" if f.caller in want else None
        if key == "methods":
            return f"DID method is {f.method}" if f.method in want else None
        if key == "known_contact":
            known = "is" if f.known_contact else "is not"
            return f"caller {known} a known contact" if f.known_contact == want else None
        if key == "listed":
            hits = [x for x in f.listings if x.kind == want]
            return hits[0].explain() if hits else None
        if key in ("tier_below", "tier_at_least"):
            tier = tier_of(f)
            holds = tier < want if key == "tier_below" else tier >= want
            op = "<" if key == "tier_below" else "≥"
            return f"trust tier {tier} {op} {want}" if holds else None
        if key == "credentials":
            have = {v.type for v in f.credentials}
            return f"holds verified {', '.join(want)}" if set(want) <= have else None
        if key == "unverified_credentials":
            failed = [c.explain(self.trust) for c in f.failed]
            if bool(failed) != want:
                return None
            return ("unverified: " + "; ".join(failed)) if failed else "no unverified credential"
        if key in ("reputation_below", "reputation_at_least"):
            return self._reputation(key, want, f)
        if key == "roles":
            roles = [str(v.subject["role"]) for v in f.credentials if v.type == "RoleCredential"]
            hit = next((r for r in roles if r in want), None)
            return f"verified role {hit}" if hit else None
        if key == "organizations":
            orgs = [
                str(v.subject["organization"])
                for v in f.credentials
                if v.type == "OrganizationCredential"
            ]
            hit = next((o for o in orgs if o in want), None)
            return f"verified organization {hit}" if hit else None
        if key == "first_contact_proof":
            admitted = f.gate is not None and f.gate.admitted
            if admitted != want:
                return None
            return f.gate.explain() if f.gate is not None else "no first-contact proof"
        if key == "proofs":
            held = sorted(set(want) & (f.gate.proofs if f.gate else frozenset()))
            return f"first-contact proof: {', '.join(held)}" if held else None
        if key == "time":
            local = datetime.fromtimestamp(f.now, self.timezone)
            if not self._windows[rule_id].holds(local):
                return None
            return f"local time {local:%a %H:%M} is within {want['from']}–{want['to']}"
        raise AssertionError(f"unhandled condition {key}")  # the schema lists every key

    def _reputation(self, key: str, want: int, f: CallerFacts) -> str | None:
        issuers = self.issuers.get("ReputationScore", frozenset())
        score = reputation_of(f.credentials, issuers)
        proven = f.proven_reputation
        if key == "reputation_below":
            if proven is not None and proven >= want:
                return None  # proven at least the threshold, score undisclosed
            # No trusted score counts as below any threshold: fail towards caution.
            if score is None:
                extra = f", only ≥ {proven} proven" if proven is not None else ""
                return f"no trusted reputation score (threshold {want}{extra})"
            return f"reputation {score} < {want}" if score < want else None
        if score is not None and score >= want:
            return f"reputation {score} ≥ {want}"
        if proven is not None and proven >= want:
            return f"reputation proven ≥ {proven} without disclosing it"
        return None


# --- gathering facts -----------------------------------------------------------------------


def gather_facts(
    payload: Mapping[str, Any],
    identity: str,
    policy: TrustPolicy,
    *,
    now: int,
    documents: DocumentSource | None = None,
    status_lists: StatusListSource | None = None,
    lists: CommunityLists | None = None,
    gate: FirstContactGate | None = None,
    known_contact: bool = False,
) -> CallerFacts:
    """Verify what a verified invite/introduction presents (its ``rcid.v1`` credentials,
    its first-contact proofs) and look the caller up on the subscribed lists."""
    display = render_caller(
        payload,
        identity,
        now=now,
        documents=documents,
        trust=policy.trust,
        status_lists=status_lists,
    )
    message = str(payload.get("type"))
    proven = _proven_reputation(payload, identity, policy, documents)
    result = None
    if gate is not None and message == "introduction" and not known_contact:
        result = gate.evaluate(
            payload,
            identity,
            now=now,
            credentials=display.credentials,
            proven_reputation=proven,
        )
    listings = lists.lookup(identity, policy.lists, now=now) if lists is not None else ()
    return CallerFacts(
        caller=identity,
        message=message,
        now=now,
        known_contact=known_contact,
        credentials=display.credentials,
        failed=tuple(c for c in display.checks if not c.verified),
        gate=result,
        listings=listings,
        proven_reputation=proven,
    )


def _proven_reputation(
    payload: Mapping[str, Any],
    identity: str,
    policy: TrustPolicy,
    documents: DocumentSource | None,
) -> int | None:
    """The minimum a ``reputation-proof`` claim proves (first such claim only), if it
    verifies for this message, this recipient and a trusted ReputationScore issuer."""
    trusted = policy.issuers.get("ReputationScore", frozenset())
    info = payload.get("identity")
    claims = info.get("claims") if isinstance(info, Mapping) else None
    found = [
        c
        for c in (claims if isinstance(claims, list) else [])
        if isinstance(c, Mapping) and c.get("type") == "reputation-proof"
    ]
    claim = found[0] if found else None
    if claim is None or not trusted:
        return None
    from dsip.core.trust.predicates import verify_reputation_claim  # loads anoncreds

    try:
        proof = verify_reputation_claim(
            claim,
            message_id=str(payload.get("id")),
            recipient=str(payload.get("to")),
            subject=identity,
            documents=documents,
            trusted=trusted,
        )
    except DsipError as exc:
        logger.info("reputation proof refused", extra={"did": identity, "code": exc.code})
        return None
    return proof.minimum


class PolicyRefusal(str):
    """A relay hook's refusal: the v0.7 reason token (what the hook contract returns), with
    the explanation (rule id, seed token, why) as ``detail`` for the ``error`` the relay
    sends back."""

    detail: str

    def __new__(cls, reason: str, detail: str) -> PolicyRefusal:
        self = super().__new__(cls, reason)
        self.detail = detail
        return self


def relay_first_contact_hook(
    policy: TrustPolicy,
    *,
    documents: DocumentSource | None = None,
    status_lists: StatusListSource | None = None,
    lists: CommunityLists | None = None,
    ledger: ReceiptLedger | None = None,
    contacts: Callable[[str, str], bool] | None = None,
    clock: Callable[[], float] = time.time,
) -> Callable[[Verified], str | None]:
    """A :class:`~dsip.services.relay.Relay` ``first_contact`` hook from a relay policy.

    Invites and introductions are decided by ``policy`` (scope ``relay``); every other
    type passes. ``contacts(caller, to)`` tells whether a relationship exists (e.g. the
    relay has seen a grant). A refusal is a :class:`PolicyRefusal`: the v0.7 reason token,
    with the explanation (which rule fired, its seed token, why) as ``detail``.
    """
    if policy.scope != "relay":
        raise ConfigError(f"{policy.name}: a relay hook needs a policy with scope = 'relay'")
    gate = policy.gate(documents=documents, ledger=ledger)

    def hook(v: Verified) -> str | None:
        if v.type not in ("invite", "introduction"):
            return None
        to = v.payload.get("to")
        known = bool(contacts(v.identity, str(to))) if contacts is not None else False
        facts = gather_facts(
            v.payload,
            v.identity,
            policy,
            now=int(clock()),
            documents=documents,
            status_lists=status_lists,
            lists=lists,
            gate=gate,
            known_contact=known,
        )
        decision = policy.decide(facts)
        if not decision.refused:
            return None
        logger.info(
            "first contact refused",
            extra={
                "did": v.identity,
                "message_id": v.id,
                "rule": decision.rule,
                "reason": decision.reason,
                "detail": decision.detail,
                "explanation": decision.explain(),
            },
        )
        assert decision.reason is not None  # a reject rule always names one (load check)
        return PolicyRefusal(decision.reason, decision.explain()[:_MAX_DETAIL])

    return hook


def endpoint_screen(
    policy: TrustPolicy,
    *,
    documents: DocumentSource | None = None,
    status_lists: StatusListSource | None = None,
    lists: CommunityLists | None = None,
    ledger: ReceiptLedger | None = None,
    contacts: Callable[[str], bool] | None = None,
    clock: Callable[[], float] = time.time,
) -> Callable[[Verified], Decision]:
    """A :class:`~dsip.agent.calls.CallAgent` ``screen``: the user policy's decision
    (ring / silent / voicemail / reject, and the rule that fired) for a verified invite.
    ``contacts(caller)`` tells whether the caller is a known contact."""
    if policy.scope != "user":
        raise ConfigError(f"{policy.name}: an endpoint screen needs scope = 'user'")
    gate = policy.gate(documents=documents, ledger=ledger)

    def screen(v: Verified) -> Decision:
        facts = gather_facts(
            v.payload,
            v.identity,
            policy,
            now=int(clock()),
            documents=documents,
            status_lists=status_lists,
            lists=lists,
            gate=gate,
            known_contact=bool(contacts(v.identity)) if contacts is not None else False,
        )
        decision = policy.decide(facts)
        logger.info(
            "invite screened",
            extra={"did": v.identity, "session": v.id, "explanation": decision.explain()},
        )
        return decision

    return screen
