"""The DID wallet: encryption round trips, file safety, rotation, and no key leaks."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from dsip.agent.wallet import Wallet, WalletEntry
from dsip.core.identity import ed25519_from_did_key, parse_did_document
from dsip.errors import DsipError, WalletError

NOW = 1_760_000_000
PASS = "correct horse battery staple"
WEB_DID = "did:web:example.com:users:bob"


@pytest.fixture
def wallet(tmp_path: Path) -> Wallet:
    return Wallet(tmp_path / "home", kdf_n=2**12)


def _code(exc: pytest.ExceptionInfo[DsipError]) -> str:
    return exc.value.code


def _file(wallet: Wallet, name: str) -> Path:
    return wallet.identities_dir / f"{name}.json"


def _edit(path: Path, change: Any) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    path.chmod(0o600)


# --- round trips -------------------------------------------------------------------------------


def test_create_list_unlock_round_trip(wallet: Wallet) -> None:
    entry = wallet.create("alice", PASS, now=NOW)

    assert wallet.names() == ["alice"]
    assert wallet.entry("alice") == entry
    assert entry.did.startswith("did:key:z6Mk")
    assert entry.method == "key"
    assert entry.created_at == NOW
    key = wallet.unlock("alice", PASS)
    assert key.kid == entry.kid
    assert key.did == entry.did
    # The did:key alone (no wallet, no document fetch) verifies what the unlocked key signs.
    ed25519_from_did_key(entry.did).verify(key.sign(b"invite"), b"invite")


def test_names_are_sorted_and_ignore_stray_files(wallet: Wallet) -> None:
    assert wallet.names() == []  # no directory yet
    for name in ("zed", "alice", "bob-2"):
        wallet.create(name, PASS, now=NOW)
    (wallet.identities_dir / ".alice.123.tmp").write_text("{}")
    (wallet.identities_dir / "README").write_text("hi")
    assert wallet.names() == ["alice", "bob-2", "zed"]


def test_wrong_passphrase_is_wallet_locked(wallet: Wallet) -> None:
    wallet.create("alice", PASS, now=NOW)
    with pytest.raises(WalletError) as info:
        wallet.unlock("alice", PASS + "!")
    assert _code(info) == "wallet-locked"
    assert info.value.remote is False


def test_passphrase_is_unicode_normalised(wallet: Wallet) -> None:
    wallet.create("alice", "caf\u00e9", now=NOW)  # precomposed é
    wallet.unlock("alice", "cafe\u0301")  # e + combining acute


def test_empty_passphrase_refused(wallet: Wallet) -> None:
    with pytest.raises(WalletError) as info:
        wallet.create("alice", "", now=NOW)
    assert _code(info) == "wallet-passphrase-invalid"


def test_default_kdf_cost_is_recorded_in_the_file(tmp_path: Path) -> None:
    wallet = Wallet(tmp_path)
    wallet.create("alice", PASS, now=NOW)
    kdf = json.loads(_file(wallet, "alice").read_text())["key"]["kdf"]
    assert kdf["name"] == "scrypt"
    assert (kdf["n"], kdf["r"], kdf["p"]) == (2**15, 8, 1)


def test_home_defaults_to_dsip_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSIP_HOME", str(tmp_path / "h"))
    assert Wallet().home == tmp_path / "h"
    monkeypatch.delenv("DSIP_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Wallet().home == tmp_path / ".dsip"


# --- file safety -------------------------------------------------------------------------------


def test_file_is_0600_and_directories_0700(wallet: Wallet) -> None:
    old = os.umask(0o022)
    try:
        wallet.create("alice", PASS, now=NOW)
    finally:
        os.umask(old)
    assert stat.S_IMODE(_file(wallet, "alice").stat().st_mode) == 0o600
    assert stat.S_IMODE(wallet.home.stat().st_mode) == 0o700
    assert stat.S_IMODE(wallet.identities_dir.stat().st_mode) == 0o700
    assert [p.name for p in wallet.identities_dir.iterdir()] == ["alice.json"]  # no temp left


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_group_or_world_readable_file_is_refused(wallet: Wallet, mode: int) -> None:
    wallet.create("alice", PASS, now=NOW)
    path = _file(wallet, "alice")
    path.chmod(mode)
    for call in (lambda: wallet.entry("alice"), lambda: wallet.unlock("alice", PASS)):
        with pytest.raises(WalletError) as info:
            call()
        assert _code(info) == "wallet-unsafe-permissions"
        assert f"chmod 600 {path}" in info.value.message


def test_file_on_disk_holds_no_plaintext_key(wallet: Wallet) -> None:
    wallet.create("alice", PASS, now=NOW)
    key = wallet.unlock("alice", PASS)
    raw = _file(wallet, "alice").read_bytes()
    from dsip.core.b64 import b64url_encode

    assert key.seed() not in raw
    assert b64url_encode(key.seed()).encode() not in raw
    assert key.seed().hex().encode() not in raw
    assert PASS.encode() not in raw


def test_tampered_ciphertext_is_corrupt(wallet: Wallet) -> None:
    wallet.create("alice", PASS, now=NOW)

    def flip(record: dict[str, Any]) -> None:
        ct = record["key"]["ciphertext"]
        record["key"]["ciphertext"] = ("B" if ct[0] == "A" else "A") + ct[1:]

    _edit(_file(wallet, "alice"), flip)
    with pytest.raises(WalletError) as info:
        wallet.unlock("alice", PASS)
    assert _code(info) == "wallet-corrupt"


def test_key_block_swapped_into_another_identity_is_corrupt(wallet: Wallet) -> None:
    wallet.create("alice", PASS, now=NOW)
    wallet.create("bob", PASS, now=NOW)
    alice_block = json.loads(_file(wallet, "alice").read_text())["key"]

    def swap(record: dict[str, Any]) -> None:
        record["key"] = alice_block

    _edit(_file(wallet, "bob"), swap)
    with pytest.raises(WalletError) as info:
        wallet.unlock("bob", PASS)
    assert _code(info) == "wallet-corrupt"


def test_identity_fields_edited_under_the_key_is_corrupt(wallet: Wallet) -> None:
    """An attacker re-labels alice's key as a did:web identity they control."""
    wallet.create("alice", PASS, now=NOW)

    def relabel(record: dict[str, Any]) -> None:
        record["method"] = "web"
        record["did"] = "did:web:attacker.example"
        record["kid"] = "did:web:attacker.example#key-1"

    _edit(_file(wallet, "alice"), relabel)
    with pytest.raises(WalletError) as info:
        wallet.unlock("alice", PASS)
    assert _code(info) == "wallet-corrupt"


def test_renamed_file_is_corrupt(wallet: Wallet) -> None:
    wallet.create("alice", PASS, now=NOW)
    _file(wallet, "alice").rename(_file(wallet, "mallory"))
    with pytest.raises(WalletError) as info:
        wallet.entry("mallory")
    assert _code(info) == "wallet-corrupt"


def test_recovery_block_swapped_into_signing_slot_is_corrupt(wallet: Wallet) -> None:
    wallet.create("bob", PASS, method="web", web_did=WEB_DID, with_recovery_key=True, now=NOW)

    def swap(record: dict[str, Any]) -> None:
        record["key"] = {k: v for k, v in record["recovery"].items() if k != "kid"}

    _edit(_file(wallet, "bob"), swap)
    with pytest.raises(WalletError) as info:
        wallet.unlock("bob", PASS)
    assert _code(info) == "wallet-corrupt"


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.__setitem__("key", "nope"),
        lambda r: r["key"]["kdf"].__setitem__("n", 2**30),  # would need 1 TiB
        lambda r: r["key"]["kdf"].__setitem__("n", 1000),  # not a power of two
        lambda r: r["key"]["cipher"].__setitem__("nonce", "!!"),
        lambda r: r.pop("did"),
        lambda r: r.__setitem__("previous_keys", "x"),
    ],
    ids=["key-not-object", "huge-n", "odd-n", "bad-nonce", "no-did", "bad-previous"],
)
def test_malformed_file_is_corrupt(wallet: Wallet, change: Any) -> None:
    wallet.create("alice", PASS, now=NOW)
    _edit(_file(wallet, "alice"), change)
    with pytest.raises(WalletError) as info:
        wallet.unlock("alice", PASS)
    assert _code(info) == "wallet-corrupt"


def test_not_json_is_corrupt(wallet: Wallet) -> None:
    wallet.create("alice", PASS, now=NOW)
    _file(wallet, "alice").write_text("{half a fi")
    with pytest.raises(WalletError) as info:
        wallet.entry("alice")
    assert _code(info) == "wallet-corrupt"


def test_failed_write_keeps_the_old_file(wallet: Wallet, monkeypatch: pytest.MonkeyPatch) -> None:
    wallet.create("bob", PASS, method="web", web_did=WEB_DID, now=NOW)
    before = _file(wallet, "bob").read_bytes()

    def crash(*args: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        wallet.rotate("bob", PASS, now=NOW + 1)
    monkeypatch.undo()

    assert _file(wallet, "bob").read_bytes() == before
    assert [p.name for p in wallet.identities_dir.iterdir()] == ["bob.json"]
    assert wallet.unlock("bob", PASS).kid == f"{WEB_DID}#key-1"


# --- names and lookups -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", "Alice", "-x", "_x", "a/b", "../x", "a.json", "a" * 65, "é", "a b"]
)
def test_invalid_names_are_refused(wallet: Wallet, name: str) -> None:
    with pytest.raises(WalletError) as info:
        wallet.create(name, PASS, now=NOW)
    assert _code(info) == "wallet-name-invalid"


@pytest.mark.parametrize("name", ["a", "0", "alice_2", "bob-laptop", "a" * 64])
def test_valid_names(wallet: Wallet, name: str) -> None:
    assert wallet.create(name, PASS, now=NOW).name == name


def test_existing_name_is_refused(wallet: Wallet) -> None:
    first = wallet.create("alice", PASS, now=NOW)
    with pytest.raises(WalletError) as info:
        wallet.create("alice", PASS, now=NOW)
    assert _code(info) == "wallet-exists"
    assert wallet.entry("alice") == first


def test_unknown_name(wallet: Wallet) -> None:
    for call in (
        lambda: wallet.entry("nobody"),
        lambda: wallet.unlock("nobody", PASS),
        lambda: wallet.remove("nobody"),
    ):
        with pytest.raises(WalletError) as info:
            call()
        assert _code(info) == "wallet-unknown"


def test_remove(wallet: Wallet) -> None:
    wallet.create("alice", PASS, now=NOW)
    wallet.remove("alice")
    assert wallet.names() == []


# --- documents -------------------------------------------------------------------------------


def test_did_key_document_with_services(wallet: Wallet) -> None:
    entry = wallet.create("alice", PASS, services={"ws": ["wss://relay.example/dsip"]}, now=NOW)
    doc = wallet.did_document("alice")
    parsed = parse_did_document(doc, entry.did)
    assert entry.kid in parsed.methods
    assert parsed.dsip_endpoints() == {"ws": ["wss://relay.example/dsip"]}
    json.dumps(doc)  # plain JSON, no MappingProxy


def test_did_web_document(wallet: Wallet) -> None:
    services = {"ws": ["wss://relay.example.com/dsip"], "turn": ["turns:turn.example.com"]}
    wallet.create(
        "bob",
        PASS,
        method="web",
        web_did=WEB_DID,
        services=services,
        with_recovery_key=True,
        now=NOW,
    )
    doc = wallet.did_document("bob")
    parsed = parse_did_document(doc, WEB_DID)
    key = wallet.unlock("bob", PASS)
    assert key.kid == f"{WEB_DID}#key-1"
    assert parsed.authentication == (key.kid,)
    assert parsed.recovery == (f"{WEB_DID}#recovery-1",)
    assert parsed.dsip_endpoints()["turn"] == ["turns:turn.example.com"]
    signaling = parsed.service("DSIPSignaling")
    assert signaling is not None
    assert signaling.endpoint["uri"] == "wss://relay.example.com/dsip"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"method": "web"}, "wallet-usage"),
        ({"web_did": WEB_DID}, "wallet-usage"),
        ({"method": "web", "web_did": "did:web:bad_host"}, "did-invalid"),
        ({"with_recovery_key": True}, "rotation-unsupported"),
        ({"services": {"smtp": ["x"]}}, "wallet-service-invalid"),
        ({"services": {"ws": "wss://not-a-list"}}, "wallet-service-invalid"),
    ],
)
def test_create_argument_errors(wallet: Wallet, kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(WalletError) as info:
        wallet.create("x", PASS, now=NOW, **kwargs)
    assert _code(info) == code
    assert wallet.names() == []


# --- rotation and recovery ----------------------------------------------------------------------


def test_rotate_did_web(wallet: Wallet) -> None:
    wallet.create("bob", PASS, method="web", web_did=WEB_DID, now=NOW)
    before = wallet.unlock("bob", PASS)

    signer, new = wallet.rotate("bob", PASS, now=NOW + 100)

    assert signer.kid == before.kid == f"{WEB_DID}#key-1"
    assert signer.seed() == before.seed()
    assert new.kid == f"{WEB_DID}#key-2"
    assert new.public_key_multibase != before.public_key_multibase
    entry = wallet.entry("bob")
    assert entry.kid == new.kid
    assert [(p.kid, p.public_key_multibase, p.retired_at) for p in entry.previous_keys] == [
        (before.kid, before.public_key_multibase, NOW + 100)
    ]
    assert wallet.unlock("bob", PASS).seed() == new.seed()
    parsed = parse_did_document(wallet.did_document("bob"), WEB_DID)
    assert set(parsed.methods) == {new.kid}
    assert parsed.authentication == (new.kid,)

    _, third = wallet.rotate("bob", PASS, now=NOW + 200)
    assert third.kid == f"{WEB_DID}#key-3"
    assert [p.kid for p in wallet.entry("bob").previous_keys] == [before.kid, new.kid]


def test_rotate_did_key_is_refused(wallet: Wallet) -> None:
    entry = wallet.create("alice", PASS, now=NOW)
    with pytest.raises(WalletError) as info:
        wallet.rotate("alice", PASS, now=NOW)
    assert _code(info) == "rotation-unsupported"
    assert wallet.entry("alice") == entry


def test_rotate_needs_the_passphrase(wallet: Wallet) -> None:
    wallet.create("bob", PASS, method="web", web_did=WEB_DID, now=NOW)
    with pytest.raises(WalletError) as info:
        wallet.rotate("bob", "guess", now=NOW)
    assert _code(info) == "wallet-locked"
    assert wallet.entry("bob").kid == f"{WEB_DID}#key-1"


def test_recovery_key_unlocks_and_rotates_a_lost_key(wallet: Wallet) -> None:
    wallet.create("bob", PASS, method="web", web_did=WEB_DID, with_recovery_key=True, now=NOW)
    recovery = wallet.unlock_recovery("bob", PASS)
    assert recovery.kid == f"{WEB_DID}#recovery-1"
    assert recovery.seed() != wallet.unlock("bob", PASS).seed()

    # The signing key is lost: its ciphertext is garbage. Recovery still rotates.
    def lose(record: dict[str, Any]) -> None:
        record["key"]["ciphertext"] = "AAAA"

    _edit(_file(wallet, "bob"), lose)
    signer, new = wallet.rotate("bob", PASS, now=NOW + 5, use_recovery=True)

    assert signer.kid == recovery.kid
    assert new.kid == f"{WEB_DID}#key-2"
    assert wallet.unlock("bob", PASS).seed() == new.seed()
    parsed = parse_did_document(wallet.did_document("bob"), WEB_DID)
    assert set(parsed.methods) == {new.kid, recovery.kid}
    assert parsed.recovery == (recovery.kid,)


def test_no_recovery_key(wallet: Wallet) -> None:
    wallet.create("bob", PASS, method="web", web_did=WEB_DID, now=NOW)
    with pytest.raises(WalletError) as info:
        wallet.unlock_recovery("bob", PASS)
    assert _code(info) == "wallet-no-recovery"


# --- no secrets in logs or reprs ---------------------------------------------------------------


def test_no_secret_in_logs_or_reprs(wallet: Wallet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    returned: list[object] = [wallet]
    returned.append(
        wallet.create("bob", PASS, method="web", web_did=WEB_DID, with_recovery_key=True, now=NOW)
    )
    returned.append(wallet.create("alice", PASS, now=NOW))
    keys = [wallet.unlock("bob", PASS), wallet.unlock_recovery("bob", PASS)]
    keys.extend(wallet.rotate("bob", PASS, now=NOW + 1))
    keys.append(wallet.unlock("alice", PASS))
    returned.extend(keys)
    returned.append(wallet.entry("bob"))
    for bad in ("wrong", ""):
        with pytest.raises(WalletError) as info:
            wallet.unlock("bob", bad)
        returned.append(info.value)

    secrets = [PASS]
    for k in keys:
        seed = k.seed()
        secrets += [seed.hex(), repr(seed), str(list(seed))]
    text = caplog.text + "\n".join(repr(o) + str(o) for o in returned)
    assert "bob" in caplog.text  # something was logged
    for secret in secrets:
        assert secret not in text


def test_entry_is_frozen(wallet: Wallet) -> None:
    entry = wallet.create("alice", PASS, now=NOW)
    assert isinstance(entry, WalletEntry)
    with pytest.raises(AttributeError):
        entry.did = "did:key:zz"  # type: ignore[misc]
