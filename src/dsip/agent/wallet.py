"""The DID wallet: passphrase-encrypted identity keys on disk (seed §4, v0.7 §7.3–§7.6).

Layout: ``<home>/identities/<name>.json``, one file per identity; ``home`` defaults to
``$DSIP_HOME`` or ``~/.dsip``. Directories are created ``0700`` and files ``0600``; a file
that is group- or world-accessible is refused (``wallet-unsafe-permissions``) rather than
used, since the encryption is only as strong as the passphrase.

Key encryption: **scrypt** (n=2**15, r=8, p=1, random 16-byte salt) derives 64 bytes —
an **AES-256-GCM** key and a passphrase check value — and AES-GCM encrypts the 32-byte
Ed25519 seed. Why this rather than PKCS#8 ``BestAvailableEncryption``:

* scrypt is memory-hard, so guessing passphrases on GPUs is expensive, and its cost
  parameters are explicit in the file (and bounded when read, so a doctored file cannot
  make us allocate gigabytes).
* GCM's associated data binds the ciphertext to the identity fields (format, name, DID,
  kid, role). A key block copied into another identity's file — or the recovery key
  moved into the signing slot — fails authentication instead of silently signing as the
  wrong identity.
* The check value lets us tell a wrong passphrase (``wallet-locked``) from a file whose
  ciphertext or identity fields were altered (``wallet-corrupt``). It gives an attacker
  nothing a GCM trial decryption would not already give.

Writes are atomic: a temp file in the same directory is written, fsynced, then
``os.replace``-d over the target (``os.link`` for creation, so two concurrent creates of
one name cannot both win) and the directory is fsynced, so a crash leaves either the old
file or the new one, never half of one.

Rotation (§7.5) is did:web only — a did:key *is* its key. The new key takes the next
fragment ``key-N``; the retired public key is kept in ``previous_keys`` so the agent can
still show and verify history, while :meth:`Wallet.did_document` lists only the current
key (the document is authoritative, §8.1). An optional recovery key (``dsipRecovery`` in
the document, same passphrase, own salt) can sign the rotation when the signing key is
lost. Publishing the new document and the signed ``key-rotation`` record is the caller's
job; the wallet only manages key material.

Nothing here logs or ``repr``-s key material or passphrases; passphrases are NFC-normalised
so the same words typed on different systems derive the same key.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.identity import (
    KeyPair,
    did_key_document,
    did_key_from_public,
    did_web_document,
    did_web_to_url,
)
from dsip.errors import DsipError, WalletError

__all__ = [
    "DEFAULT_KDF_N",
    "SERVICE_KINDS",
    "PreviousKey",
    "Wallet",
    "WalletEntry",
    "default_home",
]

FORMAT = "dsip-wallet/1"
DEFAULT_KDF_N = 2**15
SERVICE_KINDS = ("ws", "libp2p", "turn", "sfu")  # seed §4.2 DSIPService endpoint map
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_FRAGMENT = re.compile(r"key-([1-9][0-9]{0,8})")
_RECOVERY_FRAGMENT = "recovery-1"
_SALT_BYTES = 16
_NONCE_BYTES = 12
# Bounds on KDF parameters read from a file: a doctored file must not exhaust memory.
_MAX_N = 2**20
_MAX_R = 16
_MAX_P = 4
_MAX_FILE_BYTES = 1 << 20

logger = logging.getLogger("dsip.wallet")


def default_home() -> Path:
    """``$DSIP_HOME`` or ``~/.dsip``."""
    env = os.environ.get("DSIP_HOME")
    return Path(env).expanduser() if env else Path.home() / ".dsip"


@dataclass(frozen=True, slots=True)
class PreviousKey:
    """A retired signing key, kept for history after rotation (§7.5)."""

    kid: str
    public_key_multibase: str
    retired_at: int


@dataclass(frozen=True, slots=True)
class WalletEntry:
    """The public half of a wallet identity; reading it needs no passphrase."""

    name: str
    did: str
    kid: str
    method: Literal["key", "web"]
    created_at: int
    public_key_multibase: str
    services: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    recovery_kid: str | None = None
    recovery_public_key_multibase: str | None = None
    previous_keys: tuple[PreviousKey, ...] = ()
    rotated_at: int | None = None

    @property
    def fragment(self) -> str:
        """The key fragment of ``kid`` (``key-N`` for did:web, the multibase for did:key)."""
        return self.kid.split("#", 1)[1]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready public view (what ``dsip id show --json`` prints)."""
        out: dict[str, Any] = {
            "name": self.name,
            "did": self.did,
            "kid": self.kid,
            "method": self.method,
            "created_at": self.created_at,
            "public_key_multibase": self.public_key_multibase,
        }
        if self.services:
            out["services"] = {k: list(v) for k, v in self.services.items()}
        if self.recovery_kid is not None:
            out["recovery"] = {
                "kid": self.recovery_kid,
                "public_key_multibase": self.recovery_public_key_multibase,
            }
        if self.previous_keys:
            out["previous_keys"] = [
                {
                    "kid": p.kid,
                    "public_key_multibase": p.public_key_multibase,
                    "retired_at": p.retired_at,
                }
                for p in self.previous_keys
            ]
        if self.rotated_at is not None:
            out["rotated_at"] = self.rotated_at
        return out


def _corrupt(path: Path, what: str) -> WalletError:
    return WalletError(f"wallet file {path} is corrupt: {what}", code="wallet-corrupt")


def _normalise_passphrase(passphrase: str) -> bytes:
    if not isinstance(passphrase, str) or not passphrase:
        raise WalletError("the passphrase must not be empty", code="wallet-passphrase-invalid")
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


class Wallet:
    """A directory of passphrase-encrypted DSIP identities (see module docstring)."""

    def __init__(self, home: Path | None = None, *, kdf_n: int = DEFAULT_KDF_N) -> None:
        if kdf_n < 2 or kdf_n & (kdf_n - 1) or kdf_n > _MAX_N:
            raise ValueError(f"kdf_n must be a power of two in [2, {_MAX_N}]")
        self.home = Path(home).expanduser() if home is not None else default_home()
        self._kdf_n = kdf_n

    def __repr__(self) -> str:
        return f"Wallet(home={str(self.home)!r})"

    @property
    def identities_dir(self) -> Path:
        return self.home / "identities"

    # --- public API -----------------------------------------------------------------------

    def create(
        self,
        name: str,
        passphrase: str,
        *,
        method: Literal["key", "web"] = "key",
        web_did: str | None = None,
        services: Mapping[str, list[str]] | None = None,
        with_recovery_key: bool = False,
        now: int,
    ) -> WalletEntry:
        """Generate a new identity ``name``; did:key by default, did:web with ``web_did``."""
        path = self._path(name)
        secret = _normalise_passphrase(passphrase)
        clean_services = self._check_services(services)
        signing = Ed25519PrivateKey.generate()
        if method == "key":
            if web_did is not None:
                raise WalletError(
                    "web_did given for a did:key identity; use method='web'", code="wallet-usage"
                )
            if with_recovery_key:
                raise WalletError(
                    "did:key identities cannot rotate (§7.5), so a recovery key would have "
                    "nothing to sign; create a did:web identity for recovery",
                    code="rotation-unsupported",
                )
            did = did_key_from_public(signing.public_key())
            kid = f"{did}#{did[len('did:key:') :]}"
        elif method == "web":
            if web_did is None:
                raise WalletError("a did:web identity needs its DID", code="wallet-usage")
            try:
                did_web_to_url(web_did)
            except DsipError as exc:
                raise WalletError(exc.message, code="did-invalid") from None
            did = web_did
            kid = f"{did}#key-1"
        else:
            raise WalletError(f"unknown DID method {method!r}", code="wallet-usage")
        if path.exists():
            raise WalletError(f"identity {name!r} already exists", code="wallet-exists")
        record: dict[str, Any] = {
            "format": FORMAT,
            "name": name,
            "did": did,
            "kid": kid,
            "method": method,
            "created_at": int(now),
            "key": self._seal(signing, secret, name, did, kid, "signing"),
            "previous_keys": [],
        }
        if clean_services:
            record["services"] = clean_services
        if with_recovery_key:
            rkid = f"{did}#{_RECOVERY_FRAGMENT}"
            record["recovery"] = self._seal(
                Ed25519PrivateKey.generate(), secret, name, did, rkid, "recovery"
            ) | {"kid": rkid}
        self._ensure_dirs()
        self._write(path, record, exclusive=True)
        logger.info("created identity %s (%s)", name, did)
        return self._entry_of(record)

    def names(self) -> list[str]:
        """Identity names in this wallet, sorted."""
        try:
            files = list(self.identities_dir.iterdir())
        except FileNotFoundError:
            return []
        return sorted(
            p.stem for p in files if p.suffix == ".json" and _NAME.fullmatch(p.stem) is not None
        )

    def entry(self, name: str) -> WalletEntry:
        """Public information about ``name``; no passphrase needed."""
        return self._entry_of(self._load(name))

    def unlock(self, name: str, passphrase: str) -> KeyPair:
        """Decrypt the signing key of ``name``."""
        record = self._load(name)
        secret = _normalise_passphrase(passphrase)
        key = self._open(self._path(name), record["key"], secret, record, record["kid"], "signing")
        pair = KeyPair(key, record["kid"])
        logger.debug("unlocked identity %s (%s)", name, record["kid"])
        return pair

    def unlock_recovery(self, name: str, passphrase: str) -> KeyPair:
        """Decrypt the recovery key of ``name`` (``wallet-no-recovery`` if it has none)."""
        record = self._load(name)
        secret = _normalise_passphrase(passphrase)
        rec = record.get("recovery")
        if rec is None:
            raise WalletError(f"identity {name!r} has no recovery key", code="wallet-no-recovery")
        key = self._open(self._path(name), rec, secret, record, rec["kid"], "recovery")
        logger.debug("unlocked recovery key of %s", name)
        return KeyPair(key, rec["kid"])

    def did_document(self, name: str) -> dict[str, Any]:
        """The DID document to publish for ``name`` (for did:web: at its did.json URL)."""
        entry = self.entry(name)
        services = {k: list(v) for k, v in entry.services.items()}
        if entry.method == "key":
            doc: dict[str, Any] = json.loads(json.dumps(dict(did_key_document(entry.did).raw)))
            if services:
                doc["service"] = [
                    {"id": f"{entry.did}#dsip", "type": "DSIPService", "serviceEndpoint": services}
                ]
            return doc
        ws = services.get("ws") or []
        recovery: list[tuple[str, str]] = []
        if entry.recovery_kid is not None and entry.recovery_public_key_multibase is not None:
            recovery.append(
                (entry.recovery_kid.split("#", 1)[1], entry.recovery_public_key_multibase)
            )
        return did_web_document(
            entry.did,
            [(entry.fragment, entry.public_key_multibase)],
            services=services or None,
            signaling_uri=ws[0] if ws else None,
            recovery=recovery,
        )

    def rotate(
        self, name: str, passphrase: str, *, now: int, use_recovery: bool = False
    ) -> tuple[KeyPair, KeyPair]:
        """Replace the signing key of a did:web identity with a fresh ``key-N`` (§7.5).

        Returns ``(signer, new)``: ``signer`` is the key that must sign the
        ``key-rotation`` record — the retired key, or with ``use_recovery`` the recovery
        key (the retired key is then not decrypted at all: it may be the one that was lost).
        """
        path = self._path(name)
        record = self._load(name)
        if record["method"] != "web":
            raise WalletError(
                "did:key identities cannot rotate: the DID is the key (§7.5); "
                "create a new identity instead",
                code="rotation-unsupported",
            )
        secret = _normalise_passphrase(passphrase)
        if use_recovery:
            signer = self.unlock_recovery(name, passphrase)
        else:
            old = self._open(path, record["key"], secret, record, record["kid"], "signing")
            signer = KeyPair(old, record["kid"])
        used = [record["kid"], *(p["kid"] for p in record["previous_keys"])]
        index = 1 + max(
            (int(m.group(1)) for k in used if (m := _FRAGMENT.fullmatch(k.split("#", 1)[1]))),
            default=0,
        )
        new_kid = f"{record['did']}#key-{index}"
        fresh = Ed25519PrivateKey.generate()
        updated = dict(record)
        updated["previous_keys"] = [
            *record["previous_keys"],
            {
                "kid": record["kid"],
                "public_key_multibase": record["key"]["public_key_multibase"],
                "retired_at": int(now),
            },
        ]
        updated["kid"] = new_kid
        updated["key"] = self._seal(fresh, secret, name, record["did"], new_kid, "signing")
        updated["rotated_at"] = int(now)
        self._write(path, updated, exclusive=False)
        logger.info(
            "rotated identity %s: %s -> %s%s",
            name,
            record["kid"],
            new_kid,
            " (recovery key)" if use_recovery else "",
        )
        return signer, KeyPair(fresh, new_kid)

    def remove(self, name: str) -> None:
        """Delete identity ``name`` (its keys are gone for good)."""
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise WalletError(f"no identity named {name!r}", code="wallet-unknown") from None
        self._fsync_dir(path.parent)
        logger.info("removed identity %s", name)

    # --- crypto ---------------------------------------------------------------------------

    @staticmethod
    def _aad(name: str, did: str, kid: str, role: str) -> bytes:
        # Serialised here, not by a shared helper: these bytes are part of the file
        # format and must never change.
        fields = {"format": FORMAT, "name": name, "did": did, "kid": kid, "role": role}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @staticmethod
    def _derive(secret: bytes, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
        out = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(secret)
        return out[:32], out[32:]

    def _seal(
        self, key: Ed25519PrivateKey, secret: bytes, name: str, did: str, kid: str, role: str
    ) -> dict[str, Any]:
        salt = os.urandom(_SALT_BYTES)
        nonce = os.urandom(_NONCE_BYTES)
        enc_key, check = self._derive(secret, salt, self._kdf_n, 8, 1)
        seed = KeyPair(key, kid).seed()
        ciphertext = AESGCM(enc_key).encrypt(nonce, seed, self._aad(name, did, kid, role))
        public = KeyPair(key, kid).public_key_multibase
        return {
            "public_key_multibase": public,
            "kdf": {
                "name": "scrypt",
                "n": self._kdf_n,
                "r": 8,
                "p": 1,
                "salt": b64url_encode(salt),
            },
            "cipher": {"name": "aes-256-gcm", "nonce": b64url_encode(nonce)},
            "check": b64url_encode(check),
            "ciphertext": b64url_encode(ciphertext),
        }

    def _open(
        self,
        path: Path,
        block: Mapping[str, Any],
        secret: bytes,
        record: Mapping[str, Any],
        kid: str,
        role: str,
    ) -> Ed25519PrivateKey:
        try:
            kdf = block["kdf"]
            n, r, p = kdf["n"], kdf["r"], kdf["p"]
            salt = b64url_decode(kdf["salt"], what="salt")
            nonce = b64url_decode(block["cipher"]["nonce"], what="nonce")
            check = b64url_decode(block["check"], what="check")
            ciphertext = b64url_decode(block["ciphertext"], what="ciphertext")
            public = block["public_key_multibase"]
            names_ok = kdf["name"] == "scrypt" and block["cipher"]["name"] == "aes-256-gcm"
        except (KeyError, TypeError, DsipError):
            raise _corrupt(path, f"{role} key block is malformed") from None
        params_ok = (
            all(type(v) is int for v in (n, r, p))
            and 2 <= n <= _MAX_N
            and not n & (n - 1)
            and 1 <= r <= _MAX_R
            and 1 <= p <= _MAX_P
        )
        if not (names_ok and params_ok and len(salt) >= _SALT_BYTES and len(nonce) == _NONCE_BYTES):
            raise _corrupt(path, f"{role} key block has unsupported or out-of-range parameters")
        enc_key, expected = self._derive(secret, salt, n, r, p)
        if not hmac.compare_digest(expected, check):
            raise WalletError(
                f"wrong passphrase for identity {record['name']!r}", code="wallet-locked"
            )
        aad = self._aad(record["name"], record["did"], kid, role)
        try:
            seed = AESGCM(enc_key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise _corrupt(
                path, f"{role} key does not authenticate (altered, or copied from another file)"
            ) from None
        if len(seed) != 32:
            raise _corrupt(path, f"{role} key has the wrong length")
        key = Ed25519PrivateKey.from_private_bytes(seed)
        if KeyPair(key, kid).public_key_multibase != public:
            raise _corrupt(path, f"{role} key does not match its public key")
        if (
            role == "signing"
            and record["method"] == "key"
            and did_key_from_public(key.public_key()) != record["did"]
        ):
            raise _corrupt(path, "signing key does not match the did:key")
        return key

    # --- files ----------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise WalletError(
                f"identity name {str(name)[:80]!r} is invalid: use 1-64 characters "
                "a-z 0-9 _ -, starting with a letter or digit",
                code="wallet-name-invalid",
            )
        return self.identities_dir / f"{name}.json"

    @staticmethod
    def _check_services(services: Mapping[str, list[str]] | None) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for kind, urls in (services or {}).items():
            if kind not in SERVICE_KINDS:
                raise WalletError(
                    f"unknown service kind {str(kind)[:40]!r}; expected one of "
                    f"{', '.join(SERVICE_KINDS)}",
                    code="wallet-service-invalid",
                )
            if isinstance(urls, str) or not all(isinstance(u, str) and u for u in urls):
                raise WalletError(
                    f"service {kind!r} must be a list of non-empty strings",
                    code="wallet-service-invalid",
                )
            if urls:
                out[kind] = list(urls)
        return out

    def _ensure_dirs(self) -> None:
        for d in (self.home, self.identities_dir):
            if not d.exists():
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask

    def _load(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise WalletError(f"no identity named {name!r}", code="wallet-unknown") from None
        except OSError as exc:
            raise WalletError(
                f"cannot open wallet file {path}: {exc.strerror}", code="wallet-unreadable"
            ) from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise _corrupt(path, "not a regular file")
            if os.name == "posix" and st.st_mode & 0o077:
                raise WalletError(
                    f"wallet file {path} is accessible by other users "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); fix with: chmod 600 {path}",
                    code="wallet-unsafe-permissions",
                )
            raw = fh.read(_MAX_FILE_BYTES + 1)
        if len(raw) > _MAX_FILE_BYTES:
            raise _corrupt(path, "file is too large")
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            raise _corrupt(path, "not JSON") from None
        self._validate(path, name, record)
        return record  # type: ignore[no-any-return]

    @staticmethod
    def _validate(path: Path, name: str, record: Any) -> None:
        def need(cond: bool, what: str) -> None:
            if not cond:
                raise _corrupt(path, what)

        need(isinstance(record, dict), "not a JSON object")
        need(record.get("format") == FORMAT, f"format is not {FORMAT}")
        need(record.get("name") == name, "the name inside does not match the file name")
        for f in ("did", "kid"):
            need(isinstance(record.get(f), str), f"{f} missing")
        need(record.get("method") in ("key", "web"), "method is not key or web")
        need(record["kid"].startswith(record["did"] + "#"), "kid is not a key of the DID")
        need(type(record.get("created_at")) is int, "created_at missing")
        need(isinstance(record.get("key"), dict), "key block missing")
        need(isinstance(record["key"].get("public_key_multibase"), str), "public key missing")
        prev = record.get("previous_keys", [])
        need(
            isinstance(prev, list)
            and all(
                isinstance(p, dict)
                and isinstance(p.get("kid"), str)
                and isinstance(p.get("public_key_multibase"), str)
                and type(p.get("retired_at")) is int
                for p in prev
            ),
            "previous_keys malformed",
        )
        record.setdefault("previous_keys", [])
        services = record.get("services", {})
        need(
            isinstance(services, dict)
            and all(
                isinstance(v, list) and all(isinstance(u, str) for u in v)
                for v in services.values()
            ),
            "services malformed",
        )
        rec = record.get("recovery")
        need(
            rec is None
            or (
                isinstance(rec, dict)
                and isinstance(rec.get("kid"), str)
                and rec["kid"].startswith(record["did"] + "#")
                and isinstance(rec.get("public_key_multibase"), str)
            ),
            "recovery block malformed",
        )

    @staticmethod
    def _entry_of(record: Mapping[str, Any]) -> WalletEntry:
        rec = record.get("recovery")
        return WalletEntry(
            name=record["name"],
            did=record["did"],
            kid=record["kid"],
            method=record["method"],
            created_at=record["created_at"],
            public_key_multibase=record["key"]["public_key_multibase"],
            services=MappingProxyType({k: tuple(v) for k, v in record.get("services", {}).items()}),
            recovery_kid=rec["kid"] if rec else None,
            recovery_public_key_multibase=rec["public_key_multibase"] if rec else None,
            previous_keys=tuple(
                PreviousKey(p["kid"], p["public_key_multibase"], p["retired_at"])
                for p in record.get("previous_keys", [])
            ),
            rotated_at=record.get("rotated_at"),
        )

    def _write(self, path: Path, record: Mapping[str, Any], *, exclusive: bool) -> None:
        data = json.dumps(record, indent=2, sort_keys=False).encode("utf-8") + b"\n"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if exclusive:
                self._link_new(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._fsync_dir(path.parent)

    @staticmethod
    def _link_new(tmp: Path, path: Path) -> None:
        # link() never overwrites: two concurrent creates of one name cannot both succeed.
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise WalletError(
                f"identity {path.stem!r} already exists", code="wallet-exists"
            ) from None
        except OSError:  # filesystem without hard links: best effort
            if path.exists():
                raise WalletError(
                    f"identity {path.stem!r} already exists", code="wallet-exists"
                ) from None
            os.replace(tmp, path)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        if os.name != "posix":
            return
        try:
            dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
