"""A real PostgreSQL server for tests: `initdb` into a temp dir, started and stopped by a fixture.

``initdb`` into a fresh temp dir, ``pg_ctl start`` on a free 127.0.0.1 port (its unix
socket in the same dir), one database, stopped with ``pg_ctl -m immediate stop`` and
deleted at the end. PostgreSQL refuses to run as root, so under root the server runs as
the ``postgres`` system user (the Debian package creates it; ``nobody`` otherwise).
Skipped only when PostgreSQL cannot run here: no binaries, no driver, or root without a
user to drop to. A server that is installed but fails to start fails the tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsip.services.ports import free_port

PG_START_TIMEOUT_S = 20
PG_DB = "dsip_test"
PG_USER = "dsip"


def _pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` (Debian), else ``initdb`` on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to an unprivileged user (or nothing)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    raise PostgresUnavailable(
        "PostgreSQL refuses to run as root and there is no 'postgres' or 'nobody' user"
    )


class PostgresUnavailable(Exception):
    """PostgreSQL cannot run on this machine (the tests that need it skip, saying why)."""


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://dsip@127.0.0.1:<port>/dsip_test`` on a server this fixture started."""
    server = local_postgres()
    try:
        url = server.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    except RuntimeError as exc:  # installed but broken: a failure, not a skip
        pytest.fail(str(exc))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@contextlib.contextmanager
def local_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server (also used by ``bench/cluster.py``)."""
    bindir = _pg_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL binaries not found: install the Debian package 'postgresql' (make test does)"
        )
    try:
        import psycopg
        import psycopg_pool  # noqa: F401 - the store needs it
    except ImportError as exc:
        raise PostgresUnavailable(
            f"{exc.name} not installed: pip install 'psycopg[binary,pool]'"
        ) from None
    drop = _run_as()
    # Not under pytest's tmp_path: its parents are 0700 root, which the server user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="dsip-pg-"))
    data, log = base / "data", base / "server.log"
    if drop:
        os.chown(base, drop["user"], drop["group"])

    def run(*args: str, timeout: float = PG_START_TIMEOUT_S) -> None:
        subprocess.run(
            args,
            check=True,
            capture_output=True,
            timeout=timeout,
            cwd=base,
            env={**os.environ, "LC_ALL": "C"},
            **drop,
        )

    started = False
    try:
        try:
            run(
                str(bindir / "initdb"),
                f"--pgdata={data}",
                f"--username={PG_USER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                timeout=60,
            )
            port = free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base}"
            run(
                str(bindir / "pg_ctl"),
                "start",
                "--wait",
                f"--timeout={PG_START_TIMEOUT_S}",
                f"--pgdata={data}",
                f"--log={log}",
                f"--options={options}",
                timeout=PG_START_TIMEOUT_S + 5,
            )
            started = True
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            output = getattr(exc, "stderr", b"") or b""
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"PostgreSQL is installed but did not start: {exc}\n"
                f"{output.decode(errors='replace')[-2000:]}\n{server_log}"
            ) from None
        with psycopg.connect(
            f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres", autocommit=True, connect_timeout=10
        ) as conn:
            conn.execute(f"CREATE DATABASE {PG_DB}")
        yield f"postgresql://{PG_USER}@127.0.0.1:{port}/{PG_DB}"
    finally:
        if started:
            with contextlib.suppress(subprocess.SubprocessError):
                run(
                    str(bindir / "pg_ctl"), "stop", "--mode=immediate", "--wait", f"--pgdata={data}"
                )
        shutil.rmtree(base, ignore_errors=True)
