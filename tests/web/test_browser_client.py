"""The browser client in real headless Chromium against a real relay on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from dsip.agent.calls import CallAgent
from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from dsip.media.tone import ToneDetector, ToneTrack
from dsip.media.webrtc import WebRtcMedia, loopback_only
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from tests.web.conftest import TONE_HZ, compare_png, open_client

pytestmark = pytest.mark.timeout(60)


async def test_browser_generates_a_did_key_and_binds_at_the_relay(
    browser: Any, web_relay: Relay
) -> None:
    page = await open_client(browser, web_relay)
    did = await page.evaluate("document.body.dataset.did")
    assert did.startswith("did:key:z6Mk")
    # the relay verified the browser's signed hello and bound its did:key
    assert did in web_relay.identities
    assert await page.text_content("#relay-did") == web_relay.did
    assert await page.text_content("#my-basis") == "Self-issued identity"
    compare_png(await page.screenshot(mask=[page.locator(".dyn")]), "home")
    # the key lives in IndexedDB: a reload keeps the same identity
    await page.reload()
    await page.wait_for_selector("body[data-relay=connected]", state="attached", timeout=10_000)
    assert await page.evaluate("document.body.dataset.did") == did


@pytest.fixture
def _loopback() -> Any:
    loopback_only(True)
    yield None
    loopback_only(False)


async def agent_for(relay: Relay, ca: LocalCA) -> CallAgent:
    client = SignalingClient(KeyPair.generate(), verifier=Verifier())
    await client.connect(
        f"wss://localhost:{relay.ws_port}/dsip", ssl_context=ca.client_context(), timeout=5
    )
    agent = CallAgent(client)
    await agent.start()
    return agent


@pytest.mark.usefixtures("_loopback")
async def test_browser_calls_a_python_agent_and_the_agent_hears_the_tone(
    browser: Any, web_relay: Relay, web_ca: LocalCA
) -> None:
    page = await open_client(browser, web_relay)
    browser_did = await page.evaluate("document.body.dataset.did")
    agent = await agent_for(web_relay, web_ca)
    media = WebRtcMedia(audio=ToneTrack(500.0))
    try:
        await page.fill("#call-to", agent.client.identity)
        await page.click("#call-button")
        incoming = await agent.incoming(timeout=10)
        assert incoming.peer == browser_did  # the browser's signed invite verified at the agent
        assert incoming.offer["media"][0]["codecs"][0] == {"id": "codec:audio/opus"}
        sel, transports = await media.answer(incoming.offer)  # binding checks on Chrome's SDP
        await incoming.answer(media=sel, transports=transports)
        await page.wait_for_selector("body[data-media=answered]", state="attached", timeout=10_000)
        await media.wait_connected(15)
        heard = ToneDetector(await media.next_track("audio"))
        got = await heard.wait_for_tone(TONE_HZ, timeout=15)
        assert abs(got - TONE_HZ) <= 30
        heard.stop()
        await page.click("#hangup-button")
        ended = await incoming.wait_for("ended", 5)
        assert ended.fields["reason"] == "user.hangup"
    finally:
        await media.close()
        await agent.close()


async def test_signed_notes_both_ways_in_the_message_view(
    browser: Any, web_relay: Relay, web_ca: LocalCA
) -> None:
    page = await open_client(browser, web_relay)
    me = await page.evaluate("document.body.dataset.did")
    agent = SignalingClient(KeyPair.generate(), verifier=Verifier())
    uri = f"wss://localhost:{web_relay.ws_port}/dsip"
    await agent.connect(uri, ssl_context=web_ca.client_context(), timeout=5)
    try:
        await page.click("#tab-messages")
        assert "not end-to-end encrypted" in (await page.text_content("#e2ee-note") or "")
        await page.fill("#msg-to", agent.identity)
        await page.fill("#msg-text", "hello from the browser")
        await page.click("#msg-send")
        got = await agent.recv(timeout=5)  # verified by the agent's own pipeline
        assert got.type == "introduction"
        assert got.identity == me
        assert got.payload["purpose"] == "hello from the browser"
        note = agent.build("introduction", to=me, ttl=3600, identity={}, purpose="hi, browser")
        await agent.send(note)
        item = page.locator("[data-testid=message-item]")
        await item.wait_for(timeout=5000)
        assert await item.text_content() == f"Self-issued identity · {agent.identity}: hi, browser"
        shot = await page.screenshot(mask=[page.locator(".dyn"), page.locator("#msg-to")])
        compare_png(shot, "messages")
    finally:
        await agent.close()


async def test_emergency_dialog_names_what_is_shared_and_with_whom(
    browser: Any, web_relay: Relay
) -> None:
    page = await open_client(browser, web_relay)
    await page.click("#emergency-button")
    await page.wait_for_selector("#emergency", state="visible")
    shares = await page.locator("#emergency-shares li").all_text_contents()
    assert any(
        s.startswith("Precise location 40.71280, -74.00600 (±12 m) — only to did:web:911.us")
        for s in shares
    )
    verdict = page.locator("#emergency-verdict")
    assert await verdict.text_content() == (
        "did:web:911.us is an emergency service DID: precise location allowed."
    )
    shot = await page.screenshot(mask=[page.locator(".dyn")])
    compare_png(shot, "emergency")
    # any other recipient: the dialog says precise location is refused
    await page.fill("#psap-did", "did:web:example.com")
    await page.dispatch_event("#psap-did", "change")
    await page.wait_for_selector("#emergency-verdict.refused")
    shares = await page.locator("#emergency-shares li").all_text_contents()
    assert "Precise location: not shared" in shares[1]
    assert not any("40.71280" in s for s in shares)


@pytest.mark.usefixtures("_loopback")
async def test_python_agent_calls_the_browser_which_answers_with_its_microphone(
    browser: Any, web_relay: Relay, web_ca: LocalCA
) -> None:
    page = await open_client(browser, web_relay)
    browser_did = await page.evaluate("document.body.dataset.did")
    agent = await agent_for(web_relay, web_ca)
    media = WebRtcMedia(audio=ToneTrack(500.0))
    try:
        offer_media, transports = await media.offer()
        call = await agent.call(browser_did, media=offer_media, transports=transports)
        assert (await call.wait_for("progress", 10)).fields["status"] == "ringing"
        assert await page.text_content("#caller-name-basis") == "No name presented"
        await page.click("#answer-button")
        answered = await call.wait_for("answered", 10)
        assert answered.message is not None
        await media.accept(answered.message.payload)  # check_answer on Chromium's answer SDP
        await media.wait_connected(15)
        heard = ToneDetector(await media.next_track("audio"))
        assert abs(await heard.wait_for_tone(TONE_HZ, timeout=15) - TONE_HZ) <= 30
        heard.stop()
        await call.hangup()
        await page.wait_for_selector("#call-status:has-text('user.hangup')", timeout=5000)
    finally:
        await media.close()
        await agent.close()
