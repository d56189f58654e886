"""``dsip id`` subcommands, driven through argparse exactly as the top-level CLI will."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from dsip.agent import wallet as wallet_mod
from dsip.cli import id as id_cli
from dsip.core.b64 import b64url_decode
from dsip.core.envelope import Verifier, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.identity import KeyPair, StaticDocuments, parse_did_document

PASS = "s3cret passphrase"
WEB_DID = "did:web:example.com:users:bob"
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI builds ``Wallet(home)``; keep scrypt cheap for the test suite."""
    monkeypatch.setattr(id_cli, "Wallet", functools.partial(wallet_mod.Wallet, kdf_n=2**12))
    monkeypatch.delenv("DSIP_PASSPHRASE", raising=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsip")
    sub = parser.add_subparsers(dest="command")
    id_cli.register(sub)
    return parser


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "wallet"


@pytest.fixture
def passfile(tmp_path: Path) -> Path:
    path = tmp_path / "pass.txt"
    path.write_text(PASS + "\n")
    return path


@pytest.fixture
def run(home: Path, passfile: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    def runner(*argv: str, auth: bool = True) -> tuple[int, str, str]:
        common = ["--home", str(home)]
        if auth:
            common += ["--passphrase-file", str(passfile)]
        args = build_parser().parse_args(["id", *common, *argv])
        status = args.func(args)
        out, err = capsys.readouterr()
        return status, out, err

    return runner


def test_new_list_show(run: Run, home: Path) -> None:
    status, out, _ = run("new", "alice")
    assert status == 0
    assert "did:key:z6Mk" in out

    status, out, _ = run("list")
    assert status == 0
    assert out.split()[0] == "alice"

    status, out, _ = run("show", "alice", "--json")
    assert status == 0
    shown = json.loads(out)
    assert shown["name"] == "alice"
    assert shown["did"].startswith("did:key:")
    wallet = wallet_mod.Wallet(home)
    assert wallet.unlock("alice", PASS).did == shown["did"]

    status, out, _ = run("show", "alice")
    assert status == 0
    assert shown["did"] in out


def test_export_doc_writes_a_did_document(run: Run, tmp_path: Path) -> None:
    run(
        "new", "bob", "--web", WEB_DID, "--service", "ws=wss://relay.example.com/dsip", "--recovery"
    )
    out_file = tmp_path / "did.json"

    status, _, err = run("export-doc", "bob", "-o", str(out_file))

    assert status == 0
    assert str(out_file) in err
    doc = json.loads(out_file.read_text())
    assert doc["id"] == WEB_DID
    parsed = parse_did_document(doc, WEB_DID)
    assert f"{WEB_DID}#key-1" in parsed.methods
    assert parsed.dsip_endpoints()["ws"][0] == "wss://relay.example.com/dsip"
    assert parsed.recovery == (f"{WEB_DID}#recovery-1",)


def test_export_doc_to_stdout(run: Run) -> None:
    run("new", "alice")
    status, out, _ = run("export-doc", "alice")
    assert status == 0
    doc = json.loads(out)
    assert doc["id"].startswith("did:key:")


def test_rotate(run: Run, tmp_path: Path) -> None:
    run("new", "bob", "--web", WEB_DID)
    old_doc = json.loads(run("export-doc", "bob")[1])
    status, out, err = run(
        "rotate", "bob", "--device", "did:key:z6Mks11tjMeRnE1JceWhyT7zEToX4z3L6BuKaM13PbTEdApn"
    )
    assert status == 0
    assert f"{WEB_DID}#key-2" in err
    # The printed record is the signed key-rotation, verifiable under the pre-rotation document.
    record = json.loads(out)
    now = json.loads(b64url_decode(record["payload"]))["issued_at"]
    v = Verifier(StaticDocuments({WEB_DID: old_doc})).verify(record, now=now)
    assert v.type == "key-rotation"
    assert (v.payload["previous"], v.payload["next"]) == (f"{WEB_DID}#key-1", f"{WEB_DID}#key-2")
    assert v.payload["reason"] == "scheduled"

    out_file = tmp_path / "did.json"
    run("export-doc", "bob", "-o", str(out_file))
    doc = parse_did_document(json.loads(out_file.read_text()), WEB_DID)
    assert set(doc.methods) == {f"{WEB_DID}#key-2"}


def test_rotate_with_recovery(run: Run) -> None:
    run("new", "bob", "--web", WEB_DID, "--recovery")
    old_doc = json.loads(run("export-doc", "bob")[1])
    status, out, err = run("rotate", "bob", "--recovery")
    assert status == 0
    assert f"signed by {WEB_DID}#recovery-1" in err
    record = json.loads(out)
    now = json.loads(b64url_decode(record["payload"]))["issued_at"]
    v = Verifier(StaticDocuments({WEB_DID: old_doc})).verify(record, now=now)
    assert v.payload["recovery"] is True
    assert v.payload["reason"] == "lost"
    assert v.kid == f"{WEB_DID}#recovery-1"


def test_delegate_lets_a_device_sign_for_the_identity(run: Run) -> None:
    run("new", "alice")
    alice_did = json.loads(run("show", "alice", "--json")[1])["did"]
    phone = KeyPair.generate()
    status, out, _ = run("delegate", "alice", phone.did, "--days", "1")
    assert status == 0
    delegation = json.loads(out)
    now = json.loads(b64url_decode(delegation["payload"]))["issued_at"]
    invite = example_invite(phone.did, WEB_DID, now=now)
    invite["from"] = alice_did
    v = Verifier().verify(sign_envelope(invite, phone, delegations=[delegation]), now=now)
    assert (v.signer, v.identity) == (phone.did, alice_did)


def test_options_after_the_subcommand(home: Path, passfile: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["id", "new", "alice", "--home", str(home), "--passphrase-file", str(passfile)]
    )
    assert args.func(args) == 0
    args = parser.parse_args(["id", "--home", str(home), "list"])
    assert args.home == home  # the subcommand does not reset it


def test_env_passphrase(run: Run, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSIP_PASSPHRASE", "from-env")
    assert run("new", "alice", auth=False)[0] == 0
    wallet_mod.Wallet(home).unlock("alice", "from-env")


def test_prompt_asks_twice_on_new(run: Run, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["typed", "typed"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert run("new", "alice", auth=False)[0] == 0
    wallet_mod.Wallet(home).unlock("alice", "typed")


def test_prompt_mismatch(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    status, _, err = run("new", "alice", auth=False)
    assert status == 2
    assert err.startswith("error: passphrase-mismatch (x-dsip.wallet-error): ")


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["show", "nobody"], "wallet-unknown"),
        (["new", "Bad Name"], "wallet-name-invalid"),
        (["new", "x", "--service", "smtp=mail.example"], "wallet-service-invalid"),
        (["new", "x", "--service", "ws"], "wallet-service-invalid"),
        (["new", "x", "--web", "did:key:z6Mk"], "did-invalid"),
        (["rotate", "nobody"], "wallet-unknown"),
    ],
)
def test_errors_exit_2_with_code(run: Run, argv: list[str], code: str) -> None:
    status, out, err = run(*argv)
    assert status == 2
    assert out == ""
    assert err.startswith(f"error: {code} (")


def test_existing_name_and_did_key_rotation(run: Run) -> None:
    run("new", "alice")
    status, _, err = run("new", "alice")
    assert (status, err.split()[1]) == (2, "wallet-exists")
    status, _, err = run("rotate", "alice")
    assert (status, err.split()[1]) == (2, "rotation-unsupported")


def test_wrong_passphrase(run: Run, tmp_path: Path, home: Path) -> None:
    run("new", "bob", "--web", WEB_DID)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("nope\n")
    args = build_parser().parse_args(
        ["id", "--home", str(home), "--passphrase-file", str(wrong), "rotate", "bob"]
    )
    assert args.func(args) == 2


def test_missing_passphrase_file(run: Run, home: Path, tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["id", "--home", str(home), "--passphrase-file", str(tmp_path / "none"), "new", "a"]
    )
    assert args.func(args) == 2


def test_list_empty(run: Run) -> None:
    status, out, err = run("list")
    assert (status, out) == (0, "")
    assert "no identities" in err


def test_id_without_subcommand_prints_help(run: Run) -> None:
    status, _, err = run()
    assert status == 2
    assert "new" in err
    assert "rotate" in err


@pytest.mark.parametrize("sub", ["new", "list", "show", "export-doc", "rotate"])
def test_every_subcommand_has_help(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["id", sub, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--home" in out
    assert "--passphrase-file" in out
