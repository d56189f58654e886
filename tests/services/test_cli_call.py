"""Two ``dsip`` processes and a relay process: a signed call over wss, set up and torn down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services.procs import RelayProcess

pytestmark = pytest.mark.timeout(120)


def _dsip(home: Path, *args: str, passfile: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dsip",
        *args,
        "--home",
        str(home),
        "--passphrase-file",
        str(passfile),
    ]


def _new_identity(tmp: Path, name: str, passfile: Path) -> str:
    home = tmp / name
    env = dict(os.environ)
    out = subprocess.run(
        _dsip(home, "id", "new", name, passfile=passfile),
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    show = subprocess.run(
        _dsip(home, "id", "show", name, "--json", passfile=passfile),
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    del out
    return str(json.loads(show.stdout)["did"])


def _run_call(tmp: Path, relay_uri: str, ca: Path) -> tuple[str, str]:
    passfile = tmp / "pass"
    passfile.write_text("test passphrase\n")
    _new_identity(tmp, "alice", passfile)
    bob_did = _new_identity(tmp, "bob", passfile)
    listener = subprocess.Popen(
        [
            *_dsip(tmp / "bob", "listen", passfile=passfile),
            "--id",
            "bob",
            "--relay",
            relay_uri,
            "--ca",
            str(ca),
            "--calls",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        line = listener.stdout.readline()
        assert line.startswith("ready "), line + (listener.stderr.read() if listener.stderr else "")
        caller = subprocess.run(
            [
                *_dsip(tmp / "alice", "call", bob_did, passfile=passfile),
                "--id",
                "alice",
                "--relay",
                relay_uri,
                "--ca",
                str(ca),
                "--hangup-after",
                "0.5",
                "--timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        callee_out, callee_err = listener.communicate(timeout=30)
    finally:
        if listener.poll() is None:
            listener.kill()
    assert caller.returncode == 0, caller.stdout + caller.stderr
    assert listener.returncode == 0, callee_out + callee_err
    return caller.stdout, line + callee_out


def test_call_between_two_processes_over_wss(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay")
    relay.start()
    try:
        caller, callee = _run_call(tmp_path, relay.uri, relay.workdir / "tls" / "ca.pem")
    finally:
        relay.stop()
    assert "progress ringing" in caller
    assert "answered user" in caller
    assert "incoming" in callee
    assert "ended user.hangup" in callee  # the callee saw the caller's signed bye


def test_call_between_two_processes_over_quic(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay")
    relay.start("--quic-port", "0")
    try:
        uri = f"quic://localhost:{relay.info['quic_port']}"
        caller, callee = _run_call(tmp_path, uri, relay.workdir / "tls" / "ca.pem")
    finally:
        relay.stop()
    assert "answered user" in caller
    assert "ended user.hangup" in callee
