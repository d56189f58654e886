"""``dsip msg`` between two wallet identities in separate processes, through a relay process
offering prekeys/1.0: publish, send (X3DH first message), inbox, and the offline history."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.services.procs import RelayProcess
from tests.services.test_cli_call import _dsip, _new_identity

pytestmark = pytest.mark.timeout(120)


def _msg(tmp: Path, who: str, passfile: Path, *args: str, relay: RelayProcess | None = None) -> str:
    cmd = [*_dsip(tmp / who, "msg", *args, passfile=passfile), "--id", who]
    if relay is not None:
        cmd += ["--relay", relay.uri, "--ca", str(relay.workdir / "tls" / "ca.pem")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_msg_send_inbox_history_between_processes(tmp_path: Path) -> None:
    passfile = tmp_path / "pass"
    passfile.write_text("test passphrase\n")
    alice_did = _new_identity(tmp_path, "alice", passfile)
    bob_did = _new_identity(tmp_path, "bob", passfile)
    relay = RelayProcess(tmp_path / "relay")
    relay.start("--prekeys", str(tmp_path / "relay" / "prekeys.db"))
    try:
        assert _msg(
            tmp_path, "bob", passfile, "publish", "--one-time", "3", relay=relay
        ).startswith(f"published {bob_did}")
        sent = _msg(tmp_path, "alice", passfile, "send", bob_did, "hi from a shell", relay=relay)
        assert sent.startswith("sent ")
        assert "devices=1" in sent
        inbox = _msg(
            tmp_path, "bob", passfile, "inbox", "--count", "1", "--wait", "20", relay=relay
        )
    finally:
        relay.stop()
    assert inbox.split()[:3] == ["received", alice_did, "text"]
    assert '"hi from a shell"' in inbox
    # the relay is gone: history reads bob's encrypted store only
    history = _msg(tmp_path, "bob", passfile, "history", "--json")
    rows = [json.loads(line) for line in history.splitlines()]
    assert [(r["author"], r["body"]) for r in rows] == [(alice_did, "hi from a shell")]
    # the store on disk holds no plaintext
    db = tmp_path / "bob" / "messages" / "bob.db"
    assert db.exists()
    assert b"hi from a shell" not in db.read_bytes()
