"""Janus process manager without running Janus: the generated configuration and the
Admin API usage parser on real and hostile ``handle_info`` shapes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsip.errors import ConfigError
from dsip.services.janus import IsolatedNetwork, Janus, _jcfg, _usage_of


def test_janus_refuses_to_pick_ice_interfaces_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Janus(tmp_path)


def test_jcfg_writes_libconfig_and_refuses_what_it_cannot_quote() -> None:
    text = _jcfg({"general": {"a": True, "b": 3, "c": 'x"y', "d": ["p", "q"]}})
    assert text == 'general: {\n\ta = true\n\tb = 3\n\tc = "x\\"y"\n\td = ["p", "q"]\n}\n'
    with pytest.raises(ConfigError):
        _jcfg({"general": {"x": "line\nbreak"}})
    with pytest.raises(ConfigError):
        _jcfg({"general": {"x": "é"}})


@pytest.mark.skipif(shutil.which("janus") is None, reason="Janus is not installed")
def test_generated_config_is_minimal_and_locked_down(tmp_path: Path) -> None:
    janus = Janus(tmp_path, network=IsolatedNetwork("dsip-sfu-unit"))
    janus.write_config()
    assert sorted(p.name for p in (tmp_path / "plugins").iterdir()) == ["libjanus_videoroom.so"]
    assert sorted(p.name for p in (tmp_path / "transports").iterdir()) == ["libjanus_http.so"]
    main = (tmp_path / "janus.jcfg").read_text()
    assert "token_auth = true" in main
    assert f'admin_secret = "{janus.admin_secret}"' in main
    assert 'ice_enforce_list = "10.77.0.1"' in main
    assert "ipv6 = false" in main
    assert re.search(r'rtp_port_range = "\d+-\d+"', main)
    http = (tmp_path / "janus.transport.http.jcfg").read_text()
    assert http.count('"127.0.0.1"') == 3  # Janus API, Admin API, Admin ACL
    room = (tmp_path / "janus.plugin.videoroom.jcfg").read_text()
    assert f'admin_key = "{janus.room_admin_key}"' in room
    assert "lock_rtp_forward = true" in room
    assert all(p.stat().st_mode & 0o077 == 0 for p in tmp_path.glob("*.jcfg"))


HANDLE_INFO: dict[str, Any] = {
    "session_id": 1,
    "handle_id": 2,
    "opaque_id": "did:key:z6Mk",
    "token": "tok",
    "plugin_specific": {"type": "subscriber", "room": "standup", "id": "feed-1"},
    "webrtc": {
        "media": {
            "0": {
                "stats": {"in": {"bytes": 10, "packets": 1}, "out": {"bytes": 300, "packets": 3}}
            },
            "1": {"stats": {"in": {"bytes": 5, "packets": 1}, "out": {"bytes": 700, "packets": 7}}},
        }
    },
}


def test_usage_sums_every_medium_of_a_handle() -> None:
    usage = _usage_of(1, 2, HANDLE_INFO)
    assert (usage.token, usage.opaque_id, usage.room, usage.role, usage.participant) == (
        "tok",
        "did:key:z6Mk",
        "standup",
        "subscriber",
        "feed-1",
    )
    assert (usage.bytes_in, usage.bytes_out, usage.packets_in, usage.packets_out) == (
        15,
        1000,
        2,
        10,
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(["webrtc", "plugin_specific", "token", "opaque_id", "media"]), json_values
    )
)
def test_usage_parser_never_raises_on_odd_shapes(info: dict[str, Any]) -> None:
    usage = _usage_of(1, 2, info)
    assert usage.bytes_in >= 0
    assert usage.bytes_out >= 0
