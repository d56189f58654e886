"""1:1 end-to-end encrypted sessions: X3DH bootstrap + Double Ratchet (seed §8, §13).

Sans-I/O: every function takes what it needs (keys, prekey secrets, ``now``) and returns
new immutable values; nothing here touches a socket, a clock or a file. Persistence is
:mod:`dsip.messaging.session_store`, the wire profile :mod:`dsip.messaging.messages`.

Libraries
---------
Syndace's ``x3dh`` (1.3.0) and ``doubleratchet`` (1.3.0), the X3DH and Double Ratchet
implementations behind python-omemo. Chosen because they are the maintained option on
PyPI: typed (``py.typed``), released 2026-01, pydantic-serializable state with migrations,
a transactional ``decrypt_message`` (state changes only on success) and bounded skipped
keys. The alternatives are stale — ``signal-protocol`` 0.2.3 (Rust bindings, last release
2021-07), ``python-axolotl`` 0.2.3 (2019), ``libsignal`` 0.0.4 (2019) — so there was no
"clearly better" library to measure against; ``bench/ratchet.py`` measures the chosen
library raw against our full path (encrypt + sign + verify + decrypt).

Measured by ``bench/ratchet.py`` (58-byte text, encrypt + decrypt per message, median of
3 interleaved rounds, 2-core dev VM; rerun for today's figures):

=======================================  ===========  ===========
path                                     one-way/s    ping-pong/s
=======================================  ===========  ===========
raw ``doubleratchet`` (reference)        ~4,650       ~2,500
:class:`SessionRecord` (state per msg)   ~2,100       ~1,230
full path, SQLite ``synchronous=NORMAL`` ~560         ~450
full path, SQLite ``synchronous=FULL``   ~150         ~190
=======================================  ===========  ===========

"Full path" is send (load, encrypt, store, sign) + the 14-stage verify + receive (decrypt,
inner schema, one transaction for session, inbox and seen id); with ``FULL`` it is bound by
the two fsyncs per message, which is what makes an accepted message durable.

Both libraries expose ``async`` methods that never suspend (their crypto provider is
synchronous ``cryptography`` code). :func:`_complete` drives such a coroutine to its end
in one ``send``; a coroutine that does suspend (a future library version doing real I/O)
is closed and reported as :class:`MessagingError` ``msg-library-async`` rather than
silently blocking, so the core stays synchronous and sans-I/O.

Identity key bound to the DID
-----------------------------
The X3DH identity key of a device *is* its DID key: the Ed25519 key that signs the
device's envelopes (``IdentityKeyFormat.ED_25519``; for Diffie-Hellman the library maps
it to X25519 by the birational map, which gives exactly the ``keyAgreement`` key of the
device's ``did:key`` document). So a bundle's identity key needs no extra certificate:
it must equal the key of the verification method that signed the bundle, and the first
message's identity key must equal the key that signed that message. The signed prekey is
signed by the same DID key (plain Ed25519 over ``b"dsip/x25519:" + spk``; the library
verifies it as standard Ed25519). Reusing one Ed25519 key for signatures and X25519 is
the did:key design and is analysed as safe (Thormarker, "On using the same key pair for
Ed25519 and an X25519 based KEM", 2021); the alternative, a separate identity key signed
by the DID key, would add a certificate to every bundle and a revocation question, and
buys nothing while the DID key is per device.

Parameters
----------
* X3DH: SHA-256, info ``dsip x3dh v1``; associated data = both identity keys plus both
  device DIDs (initiator first), so a session is bound to the two devices.
* Double Ratchet: Curve25519 ratchet, HKDF-SHA-256 root chain, separate-HMAC message chain
  (constant ``0x02 0x01``), AES-256-CBC + HMAC-SHA-256 AEAD — Signal's recommended set.
* Skipped messages: at most :data:`MAX_SKIP` keys are derived for one message (DoS bound)
  and at most :data:`MAX_SKIP` are kept per session (oldest dropped first). A message
  further ahead than that fails with ``msg-decrypt-failed``.
* Until the initiator has decrypted one message from the responder, every message it sends
  repeats the X3DH fields (:class:`InitialHeader`): any of them can bootstrap the session
  when the first is lost or late. The responder recognises repeats by the ephemeral key.
* A :class:`SessionRecord` keeps the current session and up to :data:`MAX_PREVIOUS`
  older ones per device pair; decryption tries them in order and promotes the one that
  works. That resolves simultaneous initiation (both sides ran X3DH at once) the way
  Signal does: both keep both sessions and converge on the first one that carries traffic.

Errors and reason tokens
------------------------
Every failure is a :class:`MessagingError` (a ``DsipError``) with a code and a v0.7 §15
reason token:

=========================  ==============================  ===========================================
code                       reason                          why that token
=========================  ==============================  ===========================================
``msg-decrypt-failed``     ``session.failed``              authenticated decryption failed: tampered
                                                           ciphertext or AAD, wrong keys, DoS bound
``msg-unknown-session``    ``session.unknown-session``     no ratchet with that device and no X3DH
                                                           fields to start one (§15: unknown session)
``msg-replay``             ``session.invalid-state``       the message key was already used: the
                                                           message is not valid in the session's state
``prekey-reused``          ``session.invalid-state``       the one-time prekey was already consumed
``prekey-invalid``         ``policy.trust-insufficient``   a bundle or prekey that does not verify or
                                                           is unknown: its binding to the DID fails
``msg-sender-mismatch``    ``policy.trust-insufficient``   the X3DH identity key is not the signer's key
=========================  ==============================  ===========================================
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol, TypeVar, cast

import doubleratchet
import nacl.bindings
import nacl.exceptions
import x3dh
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from doubleratchet.recommended import HashFunction as DRHash
from doubleratchet.recommended import aead_aes_hmac, kdf_hkdf, kdf_separate_hmacs
from doubleratchet.recommended.diffie_hellman_ratchet_curve25519 import (
    DiffieHellmanRatchet as Curve25519Ratchet,
)
from x3dh.identity_key_pair import IdentityKeyPairSeed

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.identity import KeyPair
from dsip.errors import DsipError

__all__ = [
    "ENC",
    "MAX_PREVIOUS",
    "MAX_SKIP",
    "Accepted",
    "Encrypted",
    "InitialHeader",
    "MessagingError",
    "OneTimePrekey",
    "Peer",
    "PrekeySource",
    "RatchetHeader",
    "RemotePrekeys",
    "Session",
    "SessionRecord",
    "SignedPrekey",
    "accept",
    "generate_one_time_prekeys",
    "generate_signed_prekey",
    "initiate",
    "signed_prekey_message",
    "verify_signed_prekey",
]

T = TypeVar("T")

ENC: Final = "dr-v1"  # content.enc of every message this module encrypts
MAX_SKIP: Final = 1000
MAX_PREVIOUS: Final = 2

_X3DH_INFO = b"dsip x3dh v1"
_APPENDIX_TAG = b"dsip x3dh v1 devices\x00"
_SPK_DOMAIN = b"dsip/x25519:"
_IK_DOMAIN = b"dsip/ed25519:"
_STATE_VERSION = 1


class MessagingError(DsipError):
    """A messaging failure; ``code`` and ``reason`` per the module docstring's table."""

    default_code = "msg-error"
    default_reason = "session.failed"


REASONS: Final[dict[str, str]] = {
    "msg-decrypt-failed": "session.failed",
    "msg-unknown-session": "session.unknown-session",
    "msg-replay": "session.invalid-state",
    "prekey-reused": "session.invalid-state",
    "prekey-invalid": "policy.trust-insufficient",
    "msg-sender-mismatch": "policy.trust-insufficient",
    "msg-library-async": "session.failed",
    "session-state-invalid": "session.failed",
}


def _fail(code: str, message: str, *, remote: bool = True) -> MessagingError:
    return MessagingError(message, code=code, reason=REASONS.get(code), remote=remote)


# --- the libraries, configured ----------------------------------------------------------


def _complete(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its result (see the module docstring)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise _fail(
        "msg-library-async", "ratchet library coroutine suspended; expected none", remote=False
    )


class _X3DH(x3dh.BaseState):
    @staticmethod
    def _encode_public_key(key_format: x3dh.IdentityKeyFormat, pub: bytes) -> bytes:
        if key_format is x3dh.IdentityKeyFormat.CURVE_25519:
            return _SPK_DOMAIN + pub
        return _IK_DOMAIN + pub


class _RootKDF(kdf_hkdf.KDF):
    @staticmethod
    def _get_hash_function() -> DRHash:
        return DRHash.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return b"dsip dr-v1 root chain"


class _MessageKDF(kdf_separate_hmacs.KDF):
    @staticmethod
    def _get_hash_function() -> DRHash:
        return DRHash.SHA_256


class _AEAD(aead_aes_hmac.AEAD):
    @staticmethod
    def _get_hash_function() -> DRHash:
        return DRHash.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return b"dsip dr-v1 message keys"


class _DoubleRatchet(doubleratchet.DoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: doubleratchet.Header) -> bytes:
        # Length-prefixed so (associated data, header) parses back uniquely.
        return (
            len(associated_data).to_bytes(4, "big")
            + associated_data
            + header.ratchet_pub
            + header.previous_sending_chain_length.to_bytes(8, "big")
            + header.sending_chain_length.to_bytes(8, "big")
        )


_DR_CONFIG: Final = (
    Curve25519Ratchet,
    _RootKDF,
    _MessageKDF,
    b"\x02\x01",
    MAX_SKIP,
    MAX_SKIP,
    _AEAD,
)


# --- keys --------------------------------------------------------------------------------


def _x25519_keypair() -> tuple[bytes, bytes]:
    private = secrets.token_bytes(32)
    public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    return private, public


def signed_prekey_message(public: bytes) -> bytes:
    """What the DID key signs for a signed prekey (the library's encoding of an X25519 key)."""
    return _SPK_DOMAIN + public


def verify_signed_prekey(identity_key: bytes, public: bytes, signature: bytes) -> bool:
    """Ed25519 verification of a signed prekey under the device's DID key."""
    if len(identity_key) != 32 or len(public) != 32 or len(signature) != 64:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + signed_prekey_message(public), identity_key)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class SignedPrekey:
    """A device's signed prekey with its private half (kept only in the session store)."""

    id: int
    public: bytes
    signature: bytes
    created_at: int
    private: bytes = field(repr=False)


@dataclass(frozen=True)
class OneTimePrekey:
    """A one-time prekey with its private half (kept only in the session store)."""

    id: int
    public: bytes
    private: bytes = field(repr=False)


def generate_signed_prekey(device: KeyPair, prekey_id: int, *, now: int) -> SignedPrekey:
    private, public = _x25519_keypair()
    signature = device.sign(signed_prekey_message(public))
    return SignedPrekey(prekey_id, public, signature, now, private)


def generate_one_time_prekeys(first_id: int, count: int) -> list[OneTimePrekey]:
    out = []
    for i in range(count):
        private, public = _x25519_keypair()
        out.append(OneTimePrekey(first_id + i, public, private))
    return out


@dataclass(frozen=True)
class RemotePrekeys:
    """The public half of a peer device's bundle, one one-time prekey chosen (or none)."""

    device: str
    identity_key: bytes  # Ed25519: the device's DID key
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_signature: bytes
    one_time_prekey_id: int | None = None
    one_time_prekey: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "identity_key": b64url_encode(self.identity_key),
            "signed_prekey_id": self.signed_prekey_id,
            "signed_prekey": b64url_encode(self.signed_prekey),
            "signed_prekey_signature": b64url_encode(self.signed_prekey_signature),
            "one_time_prekey_id": self.one_time_prekey_id,
            "one_time_prekey": None
            if self.one_time_prekey is None
            else b64url_encode(self.one_time_prekey),
        }

    @classmethod
    def from_json(cls, obj: Any) -> RemotePrekeys:
        try:
            otk = obj["one_time_prekey"]
            return cls(
                device=str(obj["device"]),
                identity_key=b64url_decode(obj["identity_key"]),
                signed_prekey_id=int(obj["signed_prekey_id"]),
                signed_prekey=b64url_decode(obj["signed_prekey"]),
                signed_prekey_signature=b64url_decode(obj["signed_prekey_signature"]),
                one_time_prekey_id=obj["one_time_prekey_id"],
                one_time_prekey=None if otk is None else b64url_decode(otk),
            )
        except (KeyError, TypeError, ValueError, DsipError) as exc:
            raise _fail(
                "session-state-invalid", f"stored bundle is malformed: {exc!s:.80}", remote=False
            ) from None


class PrekeySource(Protocol):
    """The local device's prekey secrets as the session store sees them inside a transaction.

    ``one_time_prekey`` raises ``prekey-reused`` for a consumed id and ``prekey-invalid`` for
    an id it never issued; ``signed_prekey`` returns ``None`` for an unknown id.
    """

    def signed_prekey(self, prekey_id: int) -> SignedPrekey | None: ...

    def one_time_prekey(self, prekey_id: int) -> OneTimePrekey: ...


# --- headers -----------------------------------------------------------------------------


def _key32(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise _fail("msg-decrypt-failed", f"{what} is not base64url")
    try:
        raw = b64url_decode(text, what=what)
    except DsipError:
        raise _fail("msg-decrypt-failed", f"{what} is not base64url") from None
    if len(raw) != 32:
        raise _fail("msg-decrypt-failed", f"{what} is not a 32-byte key")
    return raw


def _uint(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**32:
        raise _fail("msg-decrypt-failed", f"{what} is not a 32-bit unsigned integer")
    return value


@dataclass(frozen=True)
class RatchetHeader:
    """The Double Ratchet header: the sender's ratchet key and chain positions (§8)."""

    ratchet_key: bytes
    previous_chain_length: int
    message_number: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ratchet_key": b64url_encode(self.ratchet_key),
            "previous_chain_length": self.previous_chain_length,
            "message_number": self.message_number,
        }

    @classmethod
    def from_json(cls, obj: object) -> RatchetHeader:
        if not isinstance(obj, dict):
            raise _fail("msg-decrypt-failed", "ratchet header is not an object")
        return cls(
            _key32(obj.get("ratchet_key"), "header.ratchet_key"),
            _uint(obj.get("previous_chain_length"), "header.previous_chain_length"),
            _uint(obj.get("message_number"), "header.message_number"),
        )

    def _library(self) -> doubleratchet.Header:
        return doubleratchet.Header(
            self.ratchet_key, self.previous_chain_length, self.message_number
        )


@dataclass(frozen=True)
class InitialHeader:
    """The X3DH fields an initiator repeats until the responder has answered."""

    identity_key: bytes
    ephemeral_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "identity_key": b64url_encode(self.identity_key),
            "ephemeral_key": b64url_encode(self.ephemeral_key),
            "signed_prekey_id": self.signed_prekey_id,
        }
        if self.one_time_prekey_id is not None:
            out["one_time_prekey_id"] = self.one_time_prekey_id
        return out

    @classmethod
    def from_json(cls, obj: object) -> InitialHeader:
        if not isinstance(obj, dict):
            raise _fail("msg-decrypt-failed", "x3dh header is not an object")
        otk = obj.get("one_time_prekey_id")
        return cls(
            _key32(obj.get("identity_key"), "x3dh.identity_key"),
            _key32(obj.get("ephemeral_key"), "x3dh.ephemeral_key"),
            _uint(obj.get("signed_prekey_id"), "x3dh.signed_prekey_id"),
            None if otk is None else _uint(otk, "x3dh.one_time_prekey_id"),
        )


@dataclass(frozen=True)
class Encrypted:
    """One encrypted message: ratchet header, ciphertext, and X3DH fields while needed."""

    header: RatchetHeader
    ciphertext: bytes
    initial: InitialHeader | None = None


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as the verified envelope says (never as the payload claims)."""

    local_device: str
    device: str  # the peer device's DID: the signer of its envelopes
    identity: str  # the DID it acts for (its own, or its delegating identity)
    signing_key: bytes  # raw Ed25519 key that verified the envelope (= its X3DH identity key)


# --- sessions ----------------------------------------------------------------------------


@contextmanager
def _library_errors() -> Iterator[None]:
    try:
        yield
    except MessagingError:
        raise
    except doubleratchet.DuplicateMessageException:
        raise _fail("msg-replay", "message key already used: a replayed message") from None
    except doubleratchet.DoSProtectionException:
        raise _fail("msg-decrypt-failed", f"more than {MAX_SKIP} skipped messages") from None
    except (doubleratchet.AuthenticationFailedException, doubleratchet.DecryptionFailedException):
        raise _fail("msg-decrypt-failed", "ciphertext does not authenticate") from None
    except x3dh.KeyAgreementException as exc:
        raise _fail("prekey-invalid", f"X3DH refused: {str(exc)[:120]}") from None
    except Exception as exc:
        # The libraries raise ValueError/AssertionError/cryptography errors on hostile
        # headers (small-order points, sizes); caught broadly so peers only see DsipError.
        raise _fail(
            "msg-decrypt-failed", f"ratchet rejected the message ({type(exc).__name__})"
        ) from None


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _appendix(initiator_device: str, responder_device: str) -> bytes:
    return _APPENDIX_TAG + _lp(initiator_device.encode()) + _lp(responder_device.encode())


def _message_ad(session_ad: bytes, aad: bytes) -> bytes:
    return _lp(session_ad) + aad


@dataclass(frozen=True)
class Session:
    """One Double Ratchet between two devices. Immutable: operations return a new Session.

    ``bootstrap`` (the X3DH ephemeral key) names the key agreement the session came from;
    ``pending`` are the X3DH fields an initiator still sends with every message.
    """

    local_device: str
    peer_device: str
    peer_identity: str
    role: Literal["initiator", "responder"]
    bootstrap: bytes
    associated_data: bytes
    created_at: int
    pending: InitialHeader | None
    state: str = field(repr=False)  # the library's serialized ratchet (secret)

    def _ratchet(self) -> _DoubleRatchet:
        try:
            return _DoubleRatchet.from_json(json.loads(self.state), *_DR_CONFIG)
        except Exception as exc:
            raise _fail(
                "session-state-invalid", f"stored ratchet does not load: {exc!s:.80}", remote=False
            ) from None

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[Session, Encrypted]:
        ratchet = self._ratchet()
        msg = _complete(ratchet.encrypt_message(plaintext, _message_ad(self.associated_data, aad)))
        header = RatchetHeader(
            msg.header.ratchet_pub,
            msg.header.previous_sending_chain_length,
            msg.header.sending_chain_length,
        )
        new = replace(self, state=json.dumps(ratchet.json))
        return new, Encrypted(header, msg.ciphertext, self.pending)

    def decrypt(self, message: Encrypted, aad: bytes) -> tuple[Session, bytes]:
        ratchet = self._ratchet()
        lib_msg = doubleratchet.EncryptedMessage(message.header._library(), message.ciphertext)
        with _library_errors():
            plaintext = _complete(
                ratchet.decrypt_message(lib_msg, _message_ad(self.associated_data, aad))
            )
        # A message from the peer on this session proves it has the session: stop sending X3DH.
        return replace(self, state=json.dumps(ratchet.json), pending=None), plaintext

    @property
    def sending_chain_length(self) -> int:
        return self._ratchet().sending_chain_length

    def to_json(self) -> dict[str, Any]:
        return {
            "v": _STATE_VERSION,
            "local_device": self.local_device,
            "peer_device": self.peer_device,
            "peer_identity": self.peer_identity,
            "role": self.role,
            "bootstrap": b64url_encode(self.bootstrap),
            "ad": b64url_encode(self.associated_data),
            "created_at": self.created_at,
            "pending": None if self.pending is None else self.pending.to_json(),
            "ratchet": json.loads(self.state),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Session:
        try:
            if obj["v"] != _STATE_VERSION or obj["role"] not in ("initiator", "responder"):
                raise ValueError("unknown session state version or role")
            return cls(
                local_device=str(obj["local_device"]),
                peer_device=str(obj["peer_device"]),
                peer_identity=str(obj["peer_identity"]),
                role=obj["role"],
                bootstrap=b64url_decode(obj["bootstrap"]),
                associated_data=b64url_decode(obj["ad"]),
                created_at=int(obj["created_at"]),
                pending=None if obj["pending"] is None else InitialHeader.from_json(obj["pending"]),
                state=json.dumps(obj["ratchet"]),
            )
        except (KeyError, TypeError, ValueError, DsipError) as exc:
            raise _fail(
                "session-state-invalid", f"stored session is malformed: {exc!s:.80}", remote=False
            ) from None


@dataclass(frozen=True)
class SessionRecord:
    """All sessions with one peer device, current first (see the module docstring)."""

    sessions: tuple[Session, ...]

    @property
    def current(self) -> Session:
        return self.sessions[0]

    def find(self, bootstrap: bytes) -> Session | None:
        return next((s for s in self.sessions if s.bootstrap == bootstrap), None)

    def promote(self, session: Session) -> SessionRecord:
        """``session`` becomes current (replacing its older self); at most 1 + MAX_PREVIOUS."""
        rest = tuple(s for s in self.sessions if s.bootstrap != session.bootstrap)
        return SessionRecord((session, *rest)[: 1 + MAX_PREVIOUS])

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[SessionRecord, Encrypted]:
        new, enc = self.current.encrypt(plaintext, aad)
        return SessionRecord((new, *self.sessions[1:])), enc

    def decrypt(self, message: Encrypted, aad: bytes) -> tuple[SessionRecord, bytes]:
        failures: list[MessagingError] = []
        for session in self.sessions:
            try:
                new, plaintext = session.decrypt(message, aad)
            except MessagingError as exc:
                if exc.code == "session-state-invalid":
                    raise
                failures.append(exc)
                continue
            return self.promote(new), plaintext
        replay = next((f for f in failures if f.code == "msg-replay"), None)
        raise replay or failures[0]

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.sessions]

    @classmethod
    def from_json(cls, obj: Any) -> SessionRecord:
        if not isinstance(obj, list) or not obj:
            raise _fail("session-state-invalid", "stored session record is empty", remote=False)
        return cls(tuple(Session.from_json(s) for s in obj))


# --- starting and accepting sessions -----------------------------------------------------


def initiate(
    local: KeyPair,
    peer: Peer,
    remote: RemotePrekeys,
    plaintext: bytes,
    aad: bytes,
    *,
    now: int,
) -> tuple[Session, Encrypted]:
    """X3DH (active) against a verified bundle, then the first Double Ratchet message."""
    if remote.device != peer.device or remote.identity_key != peer.signing_key:
        raise _fail("prekey-invalid", "bundle identity key is not the peer device's DID key")
    if not verify_signed_prekey(
        remote.identity_key, remote.signed_prekey, remote.signed_prekey_signature
    ):
        raise _fail("prekey-invalid", "signed prekey signature does not verify")
    state = _X3DH.create(
        x3dh.IdentityKeyFormat.ED_25519,
        x3dh.HashFunction.SHA_256,
        _X3DH_INFO,
        IdentityKeyPairSeed(local.seed()),
    )
    one_time = frozenset([remote.one_time_prekey]) if remote.one_time_prekey else frozenset()
    bundle = x3dh.Bundle(
        remote.identity_key, remote.signed_prekey, remote.signed_prekey_signature, one_time
    )
    with _library_errors():
        shared, ad, header = _complete(
            state.get_shared_secret_active(
                bundle, _appendix(peer.local_device, peer.device), require_pre_key=False
            )
        )
        ratchet, msg = _complete(
            _DoubleRatchet.encrypt_initial_message(
                *_DR_CONFIG,
                shared,
                remote.signed_prekey,
                plaintext,
                _message_ad(ad, aad),
            )
        )
    initial = InitialHeader(
        header.identity_key,
        header.ephemeral_key,
        remote.signed_prekey_id,
        remote.one_time_prekey_id if header.pre_key is not None else None,
    )
    session = Session(
        local_device=peer.local_device,
        peer_device=peer.device,
        peer_identity=peer.identity,
        role="initiator",
        bootstrap=header.ephemeral_key,
        associated_data=ad,
        created_at=now,
        pending=initial,
        state=json.dumps(ratchet.json),
    )
    enc = Encrypted(
        RatchetHeader(
            msg.header.ratchet_pub,
            msg.header.previous_sending_chain_length,
            msg.header.sending_chain_length,
        ),
        msg.ciphertext,
        initial,
    )
    return session, enc


def _respond(
    local: KeyPair,
    peer: Peer,
    initial: InitialHeader,
    signed: SignedPrekey,
    one_time: OneTimePrekey | None,
    message: Encrypted,
    aad: bytes,
    now: int,
) -> tuple[Session, bytes]:
    model = x3dh.BaseStateModel(
        identity_key=x3dh.IdentityKeyPairModel(
            secret=local.seed(), secret_type=x3dh.types.SecretType.SEED
        ),
        signed_pre_key=x3dh.SignedPreKeyPairModel(
            priv=signed.private, sig=signed.signature, timestamp=signed.created_at
        ),
        old_signed_pre_key=None,
        pre_keys=frozenset([one_time.private]) if one_time else frozenset(),
    )
    state = _X3DH.from_model(
        model, x3dh.IdentityKeyFormat.ED_25519, x3dh.HashFunction.SHA_256, _X3DH_INFO
    )
    header = x3dh.Header(
        initial.identity_key,
        initial.ephemeral_key,
        signed.public,
        one_time.public if one_time else None,
    )
    lib_msg = doubleratchet.EncryptedMessage(message.header._library(), message.ciphertext)
    with _library_errors():
        shared, ad, _spk = _complete(
            state.get_shared_secret_passive(
                header, _appendix(peer.device, peer.local_device), require_pre_key=False
            )
        )
        ratchet, plaintext = _complete(
            _DoubleRatchet.decrypt_initial_message(
                *_DR_CONFIG, shared, signed.private, lib_msg, _message_ad(ad, aad)
            )
        )
    session = Session(
        local_device=peer.local_device,
        peer_device=peer.device,
        peer_identity=peer.identity,
        role="responder",
        bootstrap=initial.ephemeral_key,
        associated_data=ad,
        created_at=now,
        pending=None,
        state=json.dumps(ratchet.json),
    )
    return session, plaintext


@dataclass(frozen=True)
class Accepted:
    """The outcome of :func:`accept`: the record to store, the plaintext, what was used."""

    record: SessionRecord
    plaintext: bytes
    consumed_one_time_prekey: int | None = None
    new_session: bool = False


def accept(
    record: SessionRecord | None,
    message: Encrypted,
    aad: bytes,
    *,
    local: KeyPair,
    peer: Peer,
    prekeys: PrekeySource,
    now: int,
) -> Accepted:
    """Decrypt one inbound message, bootstrapping a session from its X3DH fields if needed.

    Pure: ``record`` is not modified; the caller stores ``Accepted.record`` (and marks the
    one-time prekey consumed) in the same transaction, or nothing on error.
    """
    if record is not None and record.current.peer_identity != peer.identity:
        raise _fail(
            "msg-sender-mismatch",
            f"{peer.device} has a session for {record.current.peer_identity}, not {peer.identity}",
        )
    initial = message.initial
    if initial is None or (record is not None and record.find(initial.ephemeral_key)):
        if record is None:
            raise _fail("msg-unknown-session", f"no session with {peer.device}")
        new_record, plaintext = record.decrypt(message, aad)
        return Accepted(new_record, plaintext)
    if initial.identity_key != peer.signing_key:
        raise _fail("msg-sender-mismatch", "X3DH identity key is not the signer's DID key")
    signed = prekeys.signed_prekey(initial.signed_prekey_id)
    if signed is None:
        raise _fail("prekey-invalid", f"signed prekey {initial.signed_prekey_id} is not ours")
    one_time = (
        None
        if initial.one_time_prekey_id is None
        else prekeys.one_time_prekey(initial.one_time_prekey_id)
    )
    session, plaintext = _respond(local, peer, initial, signed, one_time, message, aad, now)
    new_record = SessionRecord((session,)) if record is None else record.promote(session)
    return Accepted(new_record, plaintext, initial.one_time_prekey_id, new_session=True)
