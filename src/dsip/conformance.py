"""Conformance runner for the language-neutral DSIP v0.7 vectors.

A vector directory holds ``fixtures.json`` and one folder per category; each file is one
vector ``{vector, format, kind, description, spec_ref, context, input, expect}``. This module
maps each ``kind`` onto the real code path (no test doubles) and compares the outcome with
``expect``. Kinds whose component dsip does not implement yet are reported *skipped*,
never passed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsip.conformance_broadcast import run_broadcast
from dsip.core.envelope import ReplayStore, Verifier, check_decoded
from dsip.core.identity import StaticDocuments
from dsip.core.payloads.schema import validate_named
from dsip.core.semantic import SemanticContext
from dsip.core.version import Supported
from dsip.errors import DsipError

__all__ = ["Outcome", "Report", "load_vectors", "run_directory", "run_vector"]

# kind → why it is skipped (the issue that brings the component).
NOT_IMPLEMENTED: dict[str, str] = {}


@dataclass(frozen=True)
class Outcome:
    vector: str
    category: str
    kind: str
    status: str  # passed | failed | skipped
    detail: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def by_category(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for o in self.outcomes:
            row = table.setdefault(o.category, {"passed": 0, "failed": 0, "skipped": 0})
            row[o.status] += 1
        return dict(sorted(table.items()))

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0

    def summary_line(self) -> str:
        return f"{self.count('passed')} passed, {self.count('failed')} failed, {self.count('skipped')} skipped"

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.count("passed"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "categories": self.by_category(),
            "outcomes": [o.__dict__ for o in self.outcomes],
        }


def load_vectors(directory: Path, only: set[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """All vectors under ``directory`` (which must hold ``fixtures.json``), sorted by id."""
    if not (directory / "fixtures.json").is_file():
        raise FileNotFoundError(f"{directory} has no fixtures.json: not a vector directory")
    out = []
    for path in sorted(directory.glob("*/*.json")):
        category = path.parent.name
        if only and category not in only:
            continue
        out.append((f"{category}/{path.stem}", json.loads(path.read_text(encoding="utf-8"))))
    return out


def run_directory(directory: Path, only: set[str] | None = None) -> Report:
    report = Report()
    for vid, vec in load_vectors(directory, only):
        report.outcomes.append(run_vector(vid, vec))
    return report


def run_vector(vid: str, vec: Mapping[str, Any]) -> Outcome:
    category = vid.split("/", 1)[0]
    kind = str(vec.get("kind"))
    if kind == "state":
        return _run_state_vector(vid, category, vec)
    if kind == "media-binding":
        return _run_media_binding_vector(vid, category, vec)
    if kind == "gateway":
        return _run_gateway_vector(vid, category, vec)
    if kind == "trust":
        return _run_trust_vector(vid, category, vec)
    handler = _HANDLERS.get(kind)
    if handler is None:
        why = NOT_IMPLEMENTED.get(kind, f"unknown vector kind {kind!r}")
        return Outcome(vid, category, kind, "skipped", why)
    try:
        got = handler(vec.get("context", {}), vec["input"])
    except Exception as exc:  # a crash is a failure, reported, never swallowed silently
        return Outcome(vid, category, kind, "failed", f"crashed: {type(exc).__name__}: {exc}")
    problems = _compare(vec["expect"], got)
    if problems:
        return Outcome(vid, category, kind, "failed", "; ".join(problems))
    return Outcome(vid, category, kind, "passed")


# --- kinds ----------------------------------------------------------------------------


def _run_state_vector(vid: str, category: str, vec: Mapping[str, Any]) -> Outcome:
    from dsip.conformance_state import StateSkip, run_state

    try:
        problems = run_state(vec.get("context", {}), vec["input"])
    except StateSkip as skip:
        return Outcome(vid, category, "state", "skipped", str(skip))
    except Exception as exc:
        return Outcome(vid, category, "state", "failed", f"crashed: {type(exc).__name__}: {exc}")
    if problems:
        return Outcome(vid, category, "state", "failed", "; ".join(problems[:5]))
    return Outcome(vid, category, "state", "passed")


def _run_media_binding_vector(vid: str, category: str, vec: Mapping[str, Any]) -> Outcome:
    from dsip.conformance_media import run_media_binding

    kind = "media-binding"
    try:
        problems = run_media_binding(vec.get("context", {}), vec["input"], vec["expect"])
    except Exception as exc:
        return Outcome(vid, category, kind, "failed", f"crashed: {type(exc).__name__}: {exc}")
    if problems:
        return Outcome(vid, category, kind, "failed", "; ".join(problems[:5]))
    return Outcome(vid, category, kind, "passed")


def _run_trust_vector(vid: str, category: str, vec: Mapping[str, Any]) -> Outcome:
    from dsip.core.trust.display import run_trust

    try:
        got = run_trust(vec.get("context", {}), vec["input"])
    except Exception as exc:
        return Outcome(vid, category, "trust", "failed", f"crashed: {type(exc).__name__}: {exc}")
    expect = vec["expect"]
    # A display string is compared whole; an object expectation field by field.
    if isinstance(expect, Mapping) and isinstance(got, Mapping):
        problems = [
            f"{k} {got.get(k)!r}, expected {v!r}" for k, v in expect.items() if got.get(k) != v
        ]
    else:
        problems = [] if got == expect else [f"got {got!r}, expected {expect!r}"]
    if problems:
        return Outcome(vid, category, "trust", "failed", "; ".join(problems[:5]))
    return Outcome(vid, category, "trust", "passed")


def _run_gateway_vector(vid: str, category: str, vec: Mapping[str, Any]) -> Outcome:
    from dsip.conformance_gateway import run_gateway

    kind = "gateway"
    try:
        problems = run_gateway(vec.get("context", {}), vec["input"], vec["expect"])
    except Exception as exc:
        return Outcome(vid, category, kind, "failed", f"crashed: {type(exc).__name__}: {exc}")
    if problems:
        return Outcome(vid, category, kind, "failed", "; ".join(problems[:5]))
    return Outcome(vid, category, kind, "passed")


def _supported(ctx: Mapping[str, Any]) -> Supported:
    return Supported.from_mapping(ctx.get("supported", {}))


def _semantic_context(ctx: Mapping[str, Any]) -> SemanticContext:
    return SemanticContext(
        offer=ctx.get("offer"),
        known_introductions=ctx.get("known_introductions"),
        sent_hello_id=ctx.get("sent_hello_id"),
        encoded_size=ctx.get("encoded_size"),
        signer_kid=ctx.get("signer_kid"),
    )


def _reject(exc: DsipError) -> dict[str, Any]:
    return {"verdict": "reject", "code": exc.code, "reason": exc.reason, "message": exc.message}


def _run_envelope(ctx: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    now = int(ctx["now"])
    replay = ReplayStore()
    for seen in ctx.get("seen_ids", []):
        replay.add(seen, now)
    verifier = Verifier(
        StaticDocuments(ctx.get("did_documents", {})),
        delegations=ctx.get("delegations", []),
        replay=replay,
        supported=_supported(ctx),
    )
    try:
        v = verifier.verify(
            inp["frame"] if "frame" in inp else inp["envelope"],
            now=now,
            hello_verified=ctx.get("hello_verified"),
            context=_semantic_context(ctx),
        )
    except DsipError as exc:
        return _reject(exc)
    out: dict[str, Any] = {
        "verdict": "accept",
        "type": v.type,
        "signer": v.signer,
        "identity": v.identity,
    }
    if v.effective:
        out["effective"] = v.effective
    if v.warnings:
        out["warnings"] = list(v.warnings)
    return out


def _run_payload(ctx: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    try:
        validate_named(inp["schema"], inp["payload"])
    except DsipError as exc:
        return _reject(exc)
    return {"verdict": "accept"}


def _run_semantic(ctx: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    try:
        interp = check_decoded(inp["payload"], _supported(ctx), _semantic_context(ctx))
    except DsipError as exc:
        return _reject(exc)
    out: dict[str, Any] = {"verdict": "accept"}
    if interp.effective:
        out["effective"] = interp.effective
    if interp.warnings:
        out["warnings"] = list(interp.warnings)
    return out


def _run_dht(ctx: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    from dsip.core.presence import RecordValidator, judge

    now = int(ctx["now"])
    validator = RecordValidator(
        StaticDocuments(ctx.get("did_documents", {})), delegations=ctx.get("delegations", [])
    )
    try:
        record = validator.verify(inp["envelope"], now=now)
    except DsipError as exc:
        return _reject(exc)
    existing = None
    if ctx.get("existing") is not None:
        # A record the node already holds was verified when it arrived: re-check its
        # signature at its own issue time; judge() then applies today's expiry (§8.3).
        held = ctx["existing"]
        issued = int(json.loads(_b64(held["payload"]))["issued_at"])
        existing = validator.verify(held, now=issued)
    j = judge(record, existing, now)
    return {
        "verdict": "accept",
        "type": record.verified.type,
        "signer": record.verified.signer,
        "identity": record.verified.identity,
        "winner": j.winner,
        "conflict": j.conflict,
    }


def _b64(text: str) -> bytes:
    from dsip.core.b64 import b64url_decode

    return b64url_decode(text)


_HANDLERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]] = {
    "broadcast": run_broadcast,
    "dht": _run_dht,
    "envelope": _run_envelope,
    "transport": _run_envelope,
    "payload": _run_payload,
    "semantic": _run_semantic,
}


def _compare(expect: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    problems = []
    if expect.get("verdict") != got.get("verdict"):
        detail = (
            f" ({got.get('code')}: {got.get('message')})" if got.get("verdict") == "reject" else ""
        )
        return [f"verdict {got.get('verdict')}{detail}, expected {expect.get('verdict')}"]
    if expect["verdict"] == "reject":
        if expect.get("code") != got.get("code"):
            problems.append(
                f"code {got.get('code')!r} ({got.get('message')}), expected {expect.get('code')!r}"
            )
        if "reason" in expect and expect["reason"] != got.get("reason"):
            problems.append(f"reason {got.get('reason')!r}, expected {expect['reason']!r}")
        return problems
    for key in ("type", "signer", "identity", "winner", "conflict"):
        if key in expect and expect[key] != got.get(key):
            problems.append(f"{key} {got.get(key)!r}, expected {expect[key]!r}")
    for key in ("selected_variant", "provenance", "display"):  # broadcast: compared exactly
        if key in expect and expect[key] != got.get(key):
            problems.append(f"{key} {got.get(key)!r}, expected {expect[key]!r}")
    if expect.get("effective", {}) != got.get("effective", {}):
        problems.append(
            f"effective {got.get('effective', {})}, expected {expect.get('effective', {})}"
        )
    if list(expect.get("warnings", [])) != list(got.get("warnings", [])):
        problems.append(
            f"warnings {got.get('warnings', [])}, expected {expect.get('warnings', [])}"
        )
    return problems
