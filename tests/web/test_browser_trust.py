"""What the browser shows about callers and about envelopes it cannot verify.

Caller display is cross-checked against the Python implementation (``render_caller``): the
browser's JavaScript and ``dsip.core.trust.rcid`` must reach the same verdict and the same
basis lines for the same invite.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from dsip.agent.signaling import SignalingClient
from dsip.core.b64 import b64url_encode
from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame
from dsip.core.trust.rcid import IssuerTrust, identity_with_rcid, make_rcid, render_caller
from dsip.core.trust.vc import DATA_INTEGRITY, VC_JWT, issue_credential
from dsip.media.tone import ToneTrack
from dsip.media.webrtc import WebRtcMedia, loopback_only
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from tests.web.conftest import compare_png, open_client

pytestmark = pytest.mark.timeout(60)

REGISTRY = "Example Registry"


@pytest.fixture(autouse=True)
def _loopback() -> Any:
    loopback_only(True)
    yield None
    loopback_only(False)


async def signaling(relay: Relay, ca: LocalCA, key: KeyPair | None = None) -> SignalingClient:
    client = SignalingClient(key or KeyPair.generate(), verifier=Verifier())
    uri = f"wss://localhost:{relay.ws_port}/dsip"
    await client.connect(uri, ssl_context=ca.client_context(), timeout=5)
    return client


def name_credential(issuer: KeyPair, subject: str, name: str, **kw: Any) -> Any:
    now = int(time.time())
    kw.setdefault("now", now)
    kw.setdefault("valid_until", now + 3600)
    return issue_credential(
        issuer, "DisplayNameCredential", {"id": subject, "displayName": name}, **kw
    )


async def ring_browser(
    page: Any, client: SignalingClient, to: str, identity: dict[str, Any]
) -> dict[str, Any]:
    media = WebRtcMedia(audio=ToneTrack())
    try:
        m, transports = await media.offer()
    finally:
        await media.close()
    payload = client.build("invite", to=to, media=m, transports=transports, identity=identity)
    await client.send(payload)
    await page.wait_for_selector("#incoming", state="visible", timeout=10_000)
    progress = await client.recv(timeout=5)  # the browser rings: a signed progress
    assert progress.type == "progress"
    assert progress.payload["session"] == payload["id"]
    assert progress.identity == to
    return payload


async def texts(page: Any, selector: str) -> list[str]:
    return [t.strip() for t in await page.locator(selector).all_text_contents()]


def python_view(payload: dict[str, Any], caller: str, issuer: KeyPair) -> Any:
    trust = IssuerTrust.of(
        {"DisplayNameCredential": [issuer.did]}, {issuer.did: REGISTRY}, max_status_age=None
    )
    return render_caller(payload, caller, now=int(time.time()), documents=None, trust=trust)


async def test_caller_with_a_valid_credential_shows_its_basis_and_can_be_declined(
    browser: Any, web_relay: Relay, web_ca: LocalCA
) -> None:
    issuer = KeyPair.generate()
    page = await open_client(browser, web_relay, f"trust={issuer.did}|{REGISTRY}")
    me = await page.evaluate("document.body.dataset.did")
    caller = await signaling(web_relay, web_ca)
    try:
        vc = name_credential(issuer, caller.identity, "Carol Example", proof=DATA_INTEGRITY)
        identity = identity_with_rcid(make_rcid([vc], display_name="Carol Example"))
        invite = await ring_browser(page, caller, me, identity)
        expected = python_view(invite, caller.identity, issuer)
        assert expected.name_verified
        assert await page.text_content("#caller-name") == "Carol Example"
        assert await page.text_content("#caller-name-basis") == f"Verified by {REGISTRY}"
        assert await page.text_content("#caller-identity-basis") == "Self-issued identity"
        assert await texts(page, "#caller-verified li") == list(expected.basis_lines)
        assert await texts(page, "#caller-unverified li") == []
        shot = await page.screenshot(mask=[page.locator(".dyn")])
        compare_png(shot, "incoming-call")
        await page.click("#decline-button")
        reject = await caller.recv(timeout=5)
        assert reject.type == "reject"
        assert reject.payload["reason"] == "user.declined"
        assert reject.payload["session"] == invite["id"]
    finally:
        await caller.close()


async def test_forged_untrusted_and_expired_credentials_show_the_caller_as_unverified(
    browser: Any, web_relay: Relay, web_ca: LocalCA
) -> None:
    issuer, stranger = KeyPair.generate(), KeyPair.generate()
    page = await open_client(browser, web_relay, f"trust={issuer.did}|{REGISTRY}")
    me = await page.evaluate("document.body.dataset.did")
    caller = await signaling(web_relay, web_ca)
    try:
        forged = copy.deepcopy(name_credential(issuer, caller.identity, "Carol Example"))
        forged["credentialSubject"]["displayName"] = "Your Bank"  # altered after signing
        untrusted = name_credential(stranger, caller.identity, "Your Bank", proof=VC_JWT)
        now = int(time.time())
        expired = name_credential(
            issuer, caller.identity, "Your Bank", now=now - 7200, valid_until=now - 3600
        )
        identity = identity_with_rcid(
            make_rcid([forged, untrusted, expired], display_name="Your Bank")
        )
        invite = await ring_browser(page, caller, me, identity)
        expected = python_view(invite, caller.identity, issuer)
        assert not expected.name_verified
        assert await page.text_content("#caller-name") == "Your Bank"
        assert (
            await page.text_content("#caller-name-basis")
            == "Name claimed by the caller; not verified"
        )
        shown = await texts(page, "#caller-unverified li")
        assert shown == [f"Unverified — {line}" for line in expected.unverified]
        assert shown == [
            f"Unverified — DisplayNameCredential from {REGISTRY}: "
            "signature does not verify (altered or forged)",
            f"Unverified — DisplayNameCredential from {stranger.did}: "
            "issuer not trusted for this claim",
            f"Unverified — DisplayNameCredential from {REGISTRY}: expired",
        ]
        assert await texts(page, "#caller-verified li") == []
        assert await page.get_attribute("#incoming", "data-verified") == "none"
    finally:
        await caller.close()


async def test_forged_envelopes_are_refused_and_never_ring(
    browser: Any, web_relay: Relay, web_ca: LocalCA
) -> None:
    page = await open_client(browser, web_relay)
    me = await page.evaluate("document.body.dataset.did")
    alice, mallory = KeyPair.generate(), KeyPair.generate()
    now = int(time.time())
    media = [{"type": "audio", "direction": "sendrecv", "codecs": [{"id": "codec:audio/opus"}]}]
    invite = make_payload("invite", sender=alice.did, now=now, to=me, media=media, transports=[])
    good = sign_envelope(invite, alice)
    altered = dict(good, payload=sign_envelope(dict(invite, to=me, media=[]), alice)["payload"])
    impostor = sign_envelope(invite, mallory)  # valid signature, but not alice's key
    stale = sign_envelope(dict(invite, issued_at=now - 3600, expires_at=now - 3570), alice)
    for env in (altered, impostor, stale):
        await page.evaluate("f => window.dsipApp.receive(f)", encode_frame(env))
    await page.evaluate("f => window.dsipApp.receive(f)", '{"protected":"x"}')
    unsigned = dict(
        good, protected=b64url_encode(b'{"alg":"none","kid":"' + alice.kid.encode() + b'"}')
    )
    await page.evaluate("f => window.dsipApp.receive(f)", encode_frame(unsigned))
    await page.evaluate("f => window.dsipApp.receive(f)", '{"protected":"' + "A" * 70_000 + '"}')
    assert await texts(page, "#refused li") == [
        "invite refused: signature-invalid",
        "invite refused: signer-mismatch",
        "invite refused: replay-window",
        "envelope refused: envelope-shape",
        "invite refused: alg-unsupported",
        "envelope refused: frame-too-large",
    ]
    assert await page.is_hidden("#incoming")
    # the genuine envelope is accepted once; its replay is refused
    await page.evaluate("f => window.dsipApp.receive(f)", encode_frame(good))
    await page.wait_for_selector("#incoming", state="visible", timeout=5000)
    await page.evaluate("f => window.dsipApp.receive(f)", encode_frame(good))
    assert (await texts(page, "#refused li"))[-1] == "invite refused: duplicate-id"
