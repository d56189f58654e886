"""DIDs, DID documents and key material (seed §4, v0.7 §7–§8).

* ``did:key`` for Ed25519: multicodec ``ed25519-pub`` (0xed01) + base58btc, ``z6Mk…``;
  resolves locally to a document with the Ed25519 verification method and the derived
  X25519 ``keyAgreement`` key (multicodec ``x25519-pub`` 0xec01, ``z6LS…``) for messaging.
* ``did:web``: the DID ⇄ HTTPS URL mapping of the did:web method; the fetch itself lives in
  ``dsip.agent.resolver`` (I/O stays out of the core).
* DID documents are parsed into frozen records; ``kid`` DID URLs resolve to a verification
  method only through the document (§8.1: the document is authoritative).

Libraries: ``base58`` for base58btc; ``cryptography`` for key generation, parsing and
X25519; PyNaCl (libsodium) for the Ed25519→X25519 birational map, which ``cryptography``
does not expose, and for the hot path of Ed25519 itself: on this project's machines
libsodium verifies in ~57 µs where OpenSSL (through ``cryptography``) needs ~111 µs, and
signs in ~23 µs against ~37 µs — every envelope a relay routes pays one verify, so this
halves the dominant cost. Ed25519 is deterministic: both produce byte-identical signatures
(tested), and they agree on every valid signature; libsodium is the stricter of the two on
malformed input (non-canonical encodings, small-order points), which is the safe direction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote

import base58
import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dsip.core.b64 import b64url_decode
from dsip.errors import DsipError, IdentityError, ResolutionError

__all__ = [
    "DID_CONTEXT",
    "DSIP_SERVICE_TYPE",
    "DSIP_SIGNALING_TYPE",
    "DidDocument",
    "DocumentSource",
    "KeyPair",
    "Service",
    "StaticDocuments",
    "VerificationMethod",
    "did_key_document",
    "did_key_from_public",
    "did_method",
    "did_web_document",
    "did_web_to_url",
    "document_for",
    "ed25519_from_did_key",
    "is_did",
    "parse_did_document",
    "resolve_kid",
    "split_did_url",
    "url_to_did_web",
    "x25519_multibase",
]

DID_CONTEXT = ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"]
DSIP_SERVICE_TYPE = "DSIPService"  # seed §4.2: ws / libp2p / turn / sfu endpoints
DSIP_SIGNALING_TYPE = "DSIPSignaling"  # v0.7 §13.2 endpoint advertisement

_ED25519_PUB = b"\xed\x01"
_X25519_PUB = b"\xec\x01"
_DID = re.compile(r"did:([a-z0-9]+):([A-Za-z0-9._%:-]+)")
_DID_URL = re.compile(r"(did:[a-z0-9]+:[A-Za-z0-9._%:-]+)#([A-Za-z0-9._~%:!$&'()*+,;=@/?-]+)")
_HOST = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
_MAX_DID_LEN = 2048
_ED_TYPES = frozenset({"Multikey", "Ed25519VerificationKey2020", "Ed25519VerificationKey2018"})


def is_did(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) <= _MAX_DID_LEN and _DID.fullmatch(value) is not None
    )


def did_method(did: str) -> str:
    m = _DID.fullmatch(did) if isinstance(did, str) else None
    if m is None:
        raise IdentityError(f"not a DID: {str(did)[:80]!r}", code="did-invalid")
    return m.group(1)


def split_did_url(kid: object) -> tuple[str, str]:
    """``did:…#frag`` → (did, fragment); raises ``kid-invalid`` otherwise (§10.2)."""
    if not isinstance(kid, str) or len(kid) > _MAX_DID_LEN:
        raise IdentityError("kid is not a DID URL", code="kid-invalid")
    m = _DID_URL.fullmatch(kid)
    if m is None:
        raise IdentityError(
            f"kid {kid[:80]!r} is not a DID URL with a fragment", code="kid-invalid"
        )
    return m.group(1), m.group(2)


# --- did:key ---------------------------------------------------------------------------


def _multibase_key(prefix: bytes, raw: bytes) -> str:
    return "z" + base58.b58encode(prefix + raw).decode("ascii")


def _decode_multibase_key(value: str, prefix: bytes, *, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("z") or len(value) > 128:
        raise IdentityError(f"{what} is not a base58btc multibase key", code="key-invalid")
    try:
        raw = base58.b58decode(value[1:])
    except ValueError:
        raise IdentityError(f"{what} is not valid base58btc", code="key-invalid") from None
    if raw[:2] != prefix or len(raw) != 34:
        raise IdentityError(
            f"{what} is not a 32-byte key with the expected multicodec", code="key-invalid"
        )
    return raw[2:]


def did_key_from_public(public: Ed25519PublicKey | bytes) -> str:
    raw = public if isinstance(public, bytes) else public.public_bytes_raw()
    if len(raw) != 32:
        raise IdentityError("Ed25519 public key must be 32 bytes", code="key-invalid")
    return "did:key:" + _multibase_key(_ED25519_PUB, raw)


def ed25519_from_multibase(value: str) -> Ed25519PublicKey:
    raw = _decode_multibase_key(value, _ED25519_PUB, what="publicKeyMultibase")
    return Ed25519PublicKey.from_public_bytes(raw)


def ed25519_from_did_key(did: str) -> Ed25519PublicKey:
    if not isinstance(did, str) or not did.startswith("did:key:"):
        raise IdentityError("not a did:key", code="did-invalid")
    return ed25519_from_multibase(did[len("did:key:") :])


def x25519_multibase(ed_public: Ed25519PublicKey | bytes) -> str:
    """Multibase of the X25519 key derived from an Ed25519 public key (did:key §3.1.2)."""
    raw = ed_public if isinstance(ed_public, bytes) else ed_public.public_bytes_raw()
    try:
        x = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(raw)
    except Exception:  # libsodium rejects small-order / non-canonical points
        raise IdentityError("Ed25519 key has no X25519 counterpart", code="key-invalid") from None
    return _multibase_key(_X25519_PUB, x)


# --- documents -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerificationMethod:
    id: str  # absolute DID URL
    controller: str
    public_key: Ed25519PublicKey = field(repr=False, compare=False)
    public_key_multibase: str
    raw_key: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.raw_key:
            object.__setattr__(self, "raw_key", self.public_key.public_bytes_raw())

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Ed25519 verification (libsodium; see the module docstring)."""
        if len(signature) != 64:
            return False
        try:
            nacl.bindings.crypto_sign_open(signature + data, self.raw_key)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    type: str
    endpoint: Any  # str | dict | list, as the document states it


@dataclass(frozen=True, slots=True)
class DidDocument:
    id: str
    methods: Mapping[str, VerificationMethod]
    authentication: tuple[str, ...]
    assertion: tuple[str, ...]
    key_agreement: tuple[str, ...]
    recovery: tuple[str, ...]
    services: tuple[Service, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def method(self, kid: str) -> VerificationMethod | None:
        return self.methods.get(kid)

    def service(self, type_: str) -> Service | None:
        return next((s for s in self.services if s.type == type_), None)

    def dsip_endpoints(self) -> dict[str, list[str]]:
        """The seed §4.2 ``DSIPService`` endpoints (ws/libp2p/turn/sfu), plus v0.7
        ``DSIPSignaling`` URIs folded into ``ws``."""
        out: dict[str, list[str]] = {}
        for s in self.services:
            ep = s.endpoint
            if s.type == DSIP_SERVICE_TYPE and isinstance(ep, Mapping):
                for k, v in ep.items():
                    vals = (
                        [v]
                        if isinstance(v, str)
                        else [x for x in v if isinstance(x, str)]
                        if isinstance(v, list)
                        else []
                    )
                    out.setdefault(str(k), []).extend(vals)
            elif (
                s.type == DSIP_SIGNALING_TYPE
                and isinstance(ep, Mapping)
                and isinstance(ep.get("uri"), str)
            ):
                out.setdefault("ws", []).append(ep["uri"])
        return {k: list(dict.fromkeys(v)) for k, v in out.items()}


def _absolute(ref: object, did: str) -> str:
    if not isinstance(ref, str):
        raise ResolutionError("verification method id is not a string", code="document-invalid")
    return did + ref if ref.startswith("#") else ref


def parse_did_document(doc: object, expected_did: str) -> DidDocument:
    """Validate a DID document for ``expected_did``. Unknown key types are skipped (only
    Ed25519 keys can sign DSIP envelopes); structural errors raise ``ResolutionError``."""
    if not isinstance(doc, Mapping):
        raise ResolutionError("DID document is not a JSON object", code="document-invalid")
    if doc.get("id") != expected_did:
        raise ResolutionError(
            f"DID document id {str(doc.get('id'))[:80]!r} is not {expected_did!r}",
            code="document-invalid",
        )
    methods: dict[str, VerificationMethod] = {}
    embedded: list[Any] = []
    vms = doc.get("verificationMethod", [])
    if not isinstance(vms, list):
        raise ResolutionError("verificationMethod is not a list", code="document-invalid")
    rel_names = (
        "authentication",
        "assertionMethod",
        "keyAgreement",
        "capabilityInvocation",
        "dsipRecovery",
    )
    for rel in rel_names:
        rel_refs = doc.get(rel, [])
        if not isinstance(rel_refs, list):
            raise ResolutionError(f"{rel} is not a list", code="document-invalid")
        embedded.extend(r for r in rel_refs if isinstance(r, Mapping))
    for vm in [*vms, *embedded]:
        if not isinstance(vm, Mapping):
            raise ResolutionError("verification method is not an object", code="document-invalid")
        vm_id = _absolute(vm.get("id"), expected_did)
        if not vm_id.startswith(expected_did + "#"):
            continue  # a method of some other DID cannot speak for this one
        pk = _public_key_of(vm)
        if pk is None:
            continue
        controller = vm.get("controller", expected_did)
        methods[vm_id] = VerificationMethod(
            id=vm_id,
            controller=controller if isinstance(controller, str) else expected_did,
            public_key=pk[0],
            public_key_multibase=pk[1],
        )

    def refs(rel: str) -> tuple[str, ...]:
        out = []
        for r in doc.get(rel, []) or []:
            out.append(_absolute(r.get("id") if isinstance(r, Mapping) else r, expected_did))
        return tuple(out)

    services = []
    raw_services = doc.get("service", [])
    if not isinstance(raw_services, list):
        raise ResolutionError("service is not a list", code="document-invalid")
    for s in raw_services:
        if isinstance(s, Mapping) and isinstance(s.get("type"), str):
            sid = s.get("id")
            services.append(
                Service(
                    id=_absolute(sid, expected_did) if isinstance(sid, str) else "",
                    type=s["type"],
                    endpoint=s.get("serviceEndpoint"),
                )
            )
    return DidDocument(
        id=expected_did,
        methods=MappingProxyType(methods),
        authentication=refs("authentication"),
        assertion=refs("assertionMethod"),
        key_agreement=refs("keyAgreement"),
        recovery=refs("dsipRecovery"),
        services=tuple(services),
        raw=MappingProxyType(dict(doc)),
    )


def _public_key_of(vm: Mapping[str, Any]) -> tuple[Ed25519PublicKey, str] | None:
    vtype = vm.get("type")
    mb = vm.get("publicKeyMultibase")
    if vtype in _ED_TYPES and isinstance(mb, str):
        if mb.startswith("z6LS"):
            return None  # an X25519 key-agreement key listed as Multikey
        try:
            return ed25519_from_multibase(mb), mb
        except DsipError:
            return None
    jwk = vm.get("publicKeyJwk")
    if (
        vtype == "JsonWebKey2020"
        and isinstance(jwk, Mapping)
        and (
            jwk.get("kty") == "OKP"
            and jwk.get("crv") == "Ed25519"
            and isinstance(jwk.get("x"), str)
        )
    ):
        try:
            raw = b64url_decode(jwk["x"], what="publicKeyJwk.x")
            pk = Ed25519PublicKey.from_public_bytes(raw)
        except (DsipError, ValueError):
            return None
        return pk, _multibase_key(_ED25519_PUB, raw)
    return None


def did_key_document(did: str) -> DidDocument:
    """Resolve a ``did:key`` locally (no I/O): one Ed25519 method, one derived X25519 key."""
    mb = did[len("did:key:") :] if did.startswith("did:key:") else ""
    pk = ed25519_from_multibase(mb)
    xmb = x25519_multibase(pk)
    kid = f"{did}#{mb}"
    raw = {
        "@context": DID_CONTEXT,
        "id": did,
        "verificationMethod": [
            {"id": kid, "type": "Multikey", "controller": did, "publicKeyMultibase": mb},
            {
                "id": f"{did}#{xmb}",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": xmb,
            },
        ],
        "authentication": [kid],
        "assertionMethod": [kid],
        "capabilityInvocation": [kid],
        "keyAgreement": [f"{did}#{xmb}"],
    }
    return DidDocument(
        id=did,
        methods=MappingProxyType(
            {
                kid: VerificationMethod(
                    id=kid, controller=did, public_key=pk, public_key_multibase=mb
                )
            }
        ),
        authentication=(kid,),
        assertion=(kid,),
        key_agreement=(f"{did}#{xmb}",),
        recovery=(),
        services=(),
        raw=MappingProxyType(raw),
    )


def did_web_document(
    did: str,
    keys: Sequence[tuple[str, str]],
    *,
    services: Mapping[str, Any] | None = None,
    signaling_uri: str | None = None,
    recovery: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Build a did:web document. ``keys``: (fragment, Ed25519 multibase) pairs, the first
    being the primary signing key; ``services``: the seed §4.2 ``DSIPService`` endpoint map;
    ``recovery``: keys designated for §7.5 recovery signing (``dsipRecovery``)."""
    url_to = did_web_to_url(did)  # validates the DID
    del url_to
    vms = [
        {"id": f"{did}#{frag}", "type": "Multikey", "controller": did, "publicKeyMultibase": mb}
        for frag, mb in [*keys, *recovery]
    ]
    signing = [f"{did}#{frag}" for frag, _ in keys]
    doc: dict[str, Any] = {
        "@context": DID_CONTEXT,
        "id": did,
        "verificationMethod": vms,
        "authentication": signing,
        "assertionMethod": signing,
    }
    if keys:
        doc["keyAgreement"] = [
            {
                "id": f"{did}#{keys[0][0]}-x25519",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": x25519_multibase(ed25519_from_multibase(keys[0][1])),
            }
        ]
    if recovery:
        doc["dsipRecovery"] = [f"{did}#{frag}" for frag, _ in recovery]
    svc: list[dict[str, Any]] = []
    if services:
        svc.append(
            {"id": f"{did}#dsip", "type": DSIP_SERVICE_TYPE, "serviceEndpoint": dict(services)}
        )
    if signaling_uri:
        svc.append(
            {
                "id": f"{did}#dsip-signaling",
                "type": DSIP_SIGNALING_TYPE,
                "serviceEndpoint": {"uri": signaling_uri, "bindings": ["ws/1.0"]},
            }
        )
    if svc:
        doc["service"] = svc
    return doc


# --- did:web URL mapping -----------------------------------------------------------------


def did_web_to_url(did: str) -> str:
    """did:web method §3.2: ``did:web:host%3Aport:a:b`` → ``https://host:port/a/b/did.json``;
    no path → ``/.well-known/did.json``."""
    if not isinstance(did, str) or not did.startswith("did:web:") or len(did) > _MAX_DID_LEN:
        raise IdentityError("not a did:web DID", code="did-invalid")
    parts = did[len("did:web:") :].split(":")
    host = unquote(parts[0])
    hostname, _, port = host.partition(":")
    if not _HOST.fullmatch(hostname) or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise IdentityError(f"did:web host {host[:80]!r} is not a valid host", code="did-invalid")
    segments = parts[1:]
    for seg in segments:
        if not _SEGMENT.fullmatch(seg) or seg in (".", ".."):
            raise IdentityError(
                f"did:web path segment {seg[:40]!r} is not allowed", code="did-invalid"
            )
    path = "/" + "/".join(segments) + "/did.json" if segments else "/.well-known/did.json"
    return f"https://{host}{path}"


def url_to_did_web(host: str, path_segments: Sequence[str] = ()) -> str:
    return "did:web:" + ":".join([quote(host, safe=""), *path_segments])


# --- key material ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 signing key and the DID URL (``kid``) under which it signs."""

    private_key: Ed25519PrivateKey = field(repr=False)
    kid: str

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.for_did_key(Ed25519PrivateKey.generate())

    @classmethod
    def for_did_key(cls, private_key: Ed25519PrivateKey) -> KeyPair:
        did = did_key_from_public(private_key.public_key())
        return cls(private_key, f"{did}#{did[len('did:key:') :]}")

    @classmethod
    def from_seed(cls, seed: bytes, kid: str | None = None) -> KeyPair:
        sk = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(sk, kid) if kid else cls.for_did_key(sk)

    @property
    def did(self) -> str:
        return self.kid.split("#", 1)[0]

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_key_multibase(self) -> str:
        return _multibase_key(_ED25519_PUB, self.public_key.public_bytes_raw())

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature (libsodium; byte-identical to ``cryptography``'s)."""
        return nacl.bindings.crypto_sign(data, self._libsodium_secret)[:64]

    @cached_property
    def _libsodium_secret(self) -> bytes:
        return self.seed() + self.public_key.public_bytes_raw()

    def seed(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def x25519_private(self) -> X25519PrivateKey:
        """The X25519 key matching this key's derived ``keyAgreement`` public key."""
        sk64 = self.seed() + self.public_key.public_bytes_raw()
        return X25519PrivateKey.from_private_bytes(
            nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(sk64)
        )


# --- kid resolution (pipeline stage 4) ----------------------------------------------------

DocumentSource = Callable[[str], "DidDocument | None"]
"""Sans-I/O lookup of an already-resolved DID document (did:web etc.); ``None`` if unknown."""


class StaticDocuments:
    """A fixed DID → document map (injected documents, e.g. vectors' ``context.did_documents``)."""

    def __init__(self, documents: Mapping[str, Any] | None = None) -> None:
        self._docs: dict[str, DidDocument] = {}
        for did, doc in (documents or {}).items():
            self.add(did, doc)

    def add(self, did: str, doc: Mapping[str, Any] | DidDocument) -> None:
        self._docs[did] = doc if isinstance(doc, DidDocument) else parse_did_document(doc, did)

    def __call__(self, did: str) -> DidDocument | None:
        return self._docs.get(did)


@lru_cache(maxsize=8192)
def _did_key_method(kid: str) -> VerificationMethod | None:
    did, _, frag = kid.partition("#")
    mb = did[len("did:key:") :]
    if frag != mb:
        return None  # a did:key has exactly one signing method, named by the key itself
    try:
        pk = ed25519_from_multibase(mb)
    except DsipError:
        return None
    return VerificationMethod(id=kid, controller=did, public_key=pk, public_key_multibase=mb)


def document_for(did: str, source: DocumentSource | None) -> DidDocument | None:
    if did.startswith("did:key:"):
        try:
            return _did_key_document_cached(did)
        except DsipError:
            return None
    return source(did) if source is not None else None


@lru_cache(maxsize=4096)
def _did_key_document_cached(did: str) -> DidDocument:
    return did_key_document(did)


def resolve_kid(kid: str, source: DocumentSource | None) -> VerificationMethod:
    """Stage 4: the verification method a ``kid`` names, through its DID document (§8.1)."""
    did, _frag = split_did_url(kid)
    if did.startswith("did:key:"):
        vm = _did_key_method(kid)
        if vm is None:
            raise ResolutionError(
                f"{kid[:100]} names no Ed25519 key of its did:key", code="kid-unresolvable"
            )
        return vm
    doc = source(did) if source is not None else None
    if doc is None:
        raise ResolutionError(f"no DID document available for {did[:100]}", code="kid-unresolvable")
    vm = doc.method(kid)
    if vm is None:
        raise ResolutionError(
            f"{kid[:100]} names no Ed25519 verification method", code="kid-unresolvable"
        )
    return vm
