"""JSON Schemas for DSIP v0.7 payloads and their compiled validators (pipeline stage 13).

The schemas are package data in ``schemas/`` (Draft 2020-12, ``$id`` base
:data:`SCHEMA_BASE_URI`). One file per payload type holds the type's complete, closed
list of top-level fields; every field's *shape* (ULID, DID, timestamp, version block,
reason token, codec, media and transport descriptors, policy, ...) lives once in
``common.schema.json`` under ``$defs`` and is pulled in by relative ``$ref``. The core
fields (``dsip``, ``type``, ``id``, ``from``, ``issued_at``, ``expires_at``) are listed
in each file as one-line references rather than inherited through ``allOf``:
``additionalProperties: false`` cannot see properties declared in another subschema,
and the alternative, ``unevaluatedProperties``, costs annotation tracking on every
validation and is a 2020-12-only keyword. The schemas check *shape* only; registry
membership and cross-field rules are stage 14 (§10.3, §15.3).

Validator choice, measured by ``bench/schema_validators.py`` (860-byte invite with an
SDP offer; "invalid" = one bad ``direction``; best of 5, 2-core dev VM; rerun for today's):

=================  =========  ==========  ===================
validator          valid/s    invalid/s   payload vectors
=================  =========  ==========  ===================
jsonschema-rs      ~380 k     ~600 k      69/69
fastjsonschema     ~55 k      ~70 k       69/69
jsonschema         ~2.2 k     ~3.1 k      69/69
=================  =========  ==========  ===================

``jsonschema-rs`` is ~7x faster than fastjsonschema's generated Python and ~170x faster
than the pure-Python reference; all three agree on every vector. It is used here: it
implements 2020-12 natively (fastjsonschema compiles 2020-12 with its draft-2019
generator, so these schemas avoid 2020-12-only keywords to stay portable), and with
``RegexOptions`` it matches patterns in linear time, so no hostile string can make a
pattern backtrack. :func:`validate_payload` itself runs at ~370 k/s on the valid invite;
its failure path (~100 k/s) also builds the error message.

Validators are built lazily, once per schema, over one shared ``jsonschema_rs.Registry``
holding the whole set, so ``$ref`` across files resolves in memory and nothing is ever
fetched. The hot path is ``is_valid``; only a failure pays for ``validate`` to build an
error naming the failing field (``invite: /media/0/direction: ...``), clipped so hostile
input is never echoed at length.

Hostile input: these functions raise only :class:`~dsip.errors.SchemaError`.
jsonschema-rs reads Python values lazily, where a schema looks: there, a value that is
not JSON (non-``str`` key, set, bytes, nesting past its recursion limit) is a schema
failure, and ``NaN``/``Infinity`` read as ``null`` and fail any typed field. Inside open
members (codec parameters, ``notify.body``, ``data`` of bindings dsip does not
implement) nothing is read, so JSON-ness there is the parser's guarantee
(:mod:`dsip.core.jsonwire`: ``str`` keys, no ``NaN``, depth 64), not this stage's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

import jsonschema_rs

from dsip.errors import SchemaError

__all__ = [
    "INFO_DATA_SCHEMAS",
    "MESSAGE_TYPES",
    "SCHEMA_BASE_URI",
    "SCHEMA_NAMES",
    "schema_document",
    "validate_named",
    "validate_payload",
]

SCHEMA_BASE_URI: Final = "https://dsip.dev/schema/v0.7/"

#: Every payload ``type`` of v0.7: the §12.1 set, ``hello`` (§13.2) and the DHT Hints
#: Profile's ``reachability-hint``; plus the types of dsip's own profiles: ``ack``
#: (store-and-forward/1.0, custody acknowledgement to a relay) and ``presence``
#: (presence/1.0, DHT presence records), ``usage-record`` (metering/1.0) and ``sealed``
#: (sealed-envelope/1.0, HPKE store-and-forward).
MESSAGE_TYPES: Final[frozenset[str]] = frozenset(
    {
        "invite",
        "progress",
        "answer",
        "reject",
        "cancel",
        "update",
        "info",
        "bye",
        "error",
        "hello",
        "subscribe",
        "notify",
        "publish",
        "unpublish",
        "provenance",
        "introduction",
        "grant",
        "key-rotation",
        "reachability-hint",
        "ack",
        "presence",
        "usage-record",
        "mls",  # mls/1.0: one MLS (RFC 9420) group message (dsip.messaging.mls)
        "msg",  # messaging profile: 1:1 end-to-end encrypted message (dsip.messaging)
        "prekey-bundle",  # messaging profile: a device's X3DH prekeys (dsip.messaging)
        "sealed",
        "push-subscription",
        "prekey-claim",
        "prekey-claimed",
        "mls-fetch",  # mls/1.0: ask the relay for key packages or a GroupInfo
        "mls-fetched",  # mls/1.0: the relay's answer (dsip.messaging.mls_service)
    }
)

#: Everything :func:`validate_named` accepts: the payload types plus the JWS envelope
#: object (§10.2) and the WebRTC binding's ``info.data`` shape.
SCHEMA_NAMES: Final[frozenset[str]] = MESSAGE_TYPES | {
    "envelope",
    "webrtc-info-data",
    "access-token",
    "msg-inner",  # the plaintext inside a msg, validated after decryption
    "verifiable-credential",
    "vc-display-name",
    "vc-organization",
    "vc-reputation-score",
    "vc-role",
    "vc-phone-number",  # seed §15: E.164 ⇄ DID only through a credential (dsip gateway)
    "vc-status-list",
    "rcid",
    "payment-receipt",
    "community-list",
    "trust-policy",
    "reputation-rating",  # dsip.core.trust.reputation: a signed call rating's claims
    # emergency/1.0 (dsip.core.emergency): the sealed content of invite.emergency, the
    # dual-signed geo-attestation, device certification subjects, public warnings
    "emergency-content",
    "geo-attestation",
    "vc-device-certification",
    "alert",
}

#: ``info.about`` value -> schema of its ``data``, for the bindings dsip implements.
#: Any other ``about`` leaves ``data`` uninspected (§12.12: unknown ``about`` is ignored).
INFO_DATA_SCHEMAS: Final[Mapping[str, str]] = MappingProxyType(
    {"transport:webrtc": "webrtc-info-data"}
)

_SHARED = "common"
_DOCUMENT_NAMES: Final[frozenset[str]] = SCHEMA_NAMES | {_SHARED}
_PACKAGE = "dsip.core.payloads"

# Error text limits: a path segment, the whole path, the validator's own message.
_MAX_SEGMENT = 40
_MAX_PATH = 120
_MAX_DETAIL = 240

_documents: dict[str, dict[str, Any]] = {}
_registry: list[jsonschema_rs.Registry] = []
_validators: dict[str, jsonschema_rs.Validator] = {}


def _load(name: str) -> dict[str, Any]:
    document = _documents.get(name)
    if document is None:
        text = (
            resources.files(_PACKAGE).joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
        )
        document = json.loads(text)
        _documents[name] = document
    return document


def _shared_registry() -> jsonschema_rs.Registry:
    if not _registry:
        docs = [_load(name) for name in sorted(_DOCUMENT_NAMES)]
        _registry.append(jsonschema_rs.Registry([(doc["$id"], doc) for doc in docs]))
    return _registry[0]


def _validator(name: str) -> jsonschema_rs.Validator:
    validator = _validators.get(name)
    if validator is None:
        # RegexOptions selects the linear-time engine: no backtracking on hostile strings.
        validator = jsonschema_rs.validator_for(
            _load(name),
            registry=_shared_registry(),
            pattern_options=jsonschema_rs.RegexOptions(),
        )
        _validators[name] = validator
    return validator


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_middle(text: str, limit: int) -> str:
    # Validator messages put the offending value first and the rule last; keep both ends.
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return text[:head] + " … " + text[-(limit - head - 3) :]


def _pointer(prefix: str, path: list[str | int]) -> str:
    segments = (
        _clip(str(part), _MAX_SEGMENT).replace("~", "~0").replace("/", "~1") for part in path
    )
    return _clip(prefix + "".join("/" + seg for seg in segments), _MAX_PATH) or "(root)"


def _check(name: str, instance: Any, *, label: str, prefix: str = "") -> None:
    validator = _validators.get(name) or _validator(name)
    try:
        if validator.is_valid(instance):
            return
        validator.validate(instance)
    except jsonschema_rs.ValidationError as exc:
        where = _pointer(prefix, exc.instance_path)
        raise SchemaError(f"{label}: {where}: {_clip_middle(exc.message, _MAX_DETAIL)}") from None
    except Exception as exc:
        # Conversion failures: jsonschema-rs raises ValueError for a value that is not JSON
        # (non-str key, set, bytes, nesting past its limit). Caught broadly on purpose:
        # hostile input must surface as SchemaError and nothing else.
        where = prefix or "(root)"
        reason = _clip(str(exc), _MAX_DETAIL)
        raise SchemaError(f"{label}: {where}: not a JSON value ({reason})") from None
    # is_valid() said no, validate() found nothing: never expected, so fail closed.
    raise SchemaError(f"{label}: {prefix or '(root)'}: does not match the {name} schema")


def _check_info_data(info: Mapping[str, Any]) -> None:
    # Runs after the info schema passed: 'about' is a string, 'data' an object.
    binding = INFO_DATA_SCHEMAS.get(info["about"])
    if binding is not None:
        _check(binding, info["data"], label="info", prefix="/data")


def validate_payload(payload: Mapping[str, Any]) -> None:
    """Check a decoded payload against the schema its ``type`` names (stage 13).

    Raises :class:`SchemaError` with ``code="unknown-type"`` when ``type`` is missing,
    not a string or not a v0.7 type, and ``code="schema-invalid"`` for any other
    failure, including ``info.data`` of a binding dsip implements (§12.12).
    """
    if isinstance(payload, dict):
        instance: dict[str, Any] = payload
    elif isinstance(payload, Mapping):
        instance = dict(payload)
    else:
        got = type(payload).__name__
        raise SchemaError(f"payload: (root): expected a JSON object, got {got}")
    message_type = instance.get("type")
    if not isinstance(message_type, str):
        got = "nothing" if message_type is None else type(message_type).__name__
        raise SchemaError(f"payload: /type: expected a string, got {got}", code="unknown-type")
    if message_type not in MESSAGE_TYPES:
        shown = _clip(message_type, _MAX_SEGMENT)
        raise SchemaError(f"payload: /type: unknown message type {shown!r}", code="unknown-type")
    _check(message_type, instance, label=message_type)
    if message_type == "info":
        _check_info_data(instance)


def validate_named(name: str, instance: Any) -> None:
    """Check ``instance`` against the schema called ``name`` (see :data:`SCHEMA_NAMES`).

    For ``"info"`` the binding ``data`` check of :func:`validate_payload` applies too,
    so a name means the same here as on the wire. An unknown name raises
    :class:`SchemaError` with ``code="unknown-type"``.
    """
    if name not in SCHEMA_NAMES:
        raise SchemaError(f"unknown schema {_clip(str(name), _MAX_SEGMENT)!r}", code="unknown-type")
    _check(name, instance, label=name)
    if name == "info":
        _check_info_data(instance)


def schema_document(name: str) -> dict[str, Any]:
    """The schema called ``name`` as parsed JSON (a fresh copy), or ``"common"`` for the
    shared definitions. An unknown name raises :class:`SchemaError` (``unknown-type``)."""
    if name not in _DOCUMENT_NAMES:
        raise SchemaError(f"unknown schema {_clip(str(name), _MAX_SEGMENT)!r}", code="unknown-type")
    copy: dict[str, Any] = json.loads(json.dumps(_load(name)))
    return copy
