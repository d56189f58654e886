// The dsip browser client: one device identity, one ws/1.0 connection to the relay that
// served this page, calls with the browser's WebRTC, caller display, signed notes and the
// emergency sharing dialog. Plain ES modules, no framework.
//
// URL parameters (all optional): relay=wss://…/dsip (default: this origin), ice=loopback
// (signal 127.0.0.1 candidates only), trust=<issuer DID>|<label> (repeatable: issuers trusted
// for caller credentials), psap=<DID> (emergency service), fresh=1 (new identity).

import { b64urlDecode, newUlid } from "./codec.js";
import { emergencyShares } from "./emergency.js";
import {
  Identity,
  ReplayStore,
  VerifyError,
  encodeFrame,
  makePayload,
  nowSeconds,
  signEnvelope,
  verifyFrame,
} from "./envelope.js";
import { CallMedia } from "./media.js";
import { clip, identityBasis, renderCaller } from "./rcid.js";
import { forgetKeyPair, loadKeyPair, saveKeyPair } from "./store.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const state = {
  identity: null,
  ws: null,
  helloId: null,
  relayDid: null,
  connected: false,
  replay: new ReplayStore(),
  call: null, // {session, peer, role, media, status}
  refused: [],
  messages: [],
  trust: { issuers: new Map() },
  loopback: params.get("ice") === "loopback",
};

for (const entry of params.getAll("trust")) {
  const [did, label] = entry.split("|");
  if (did) state.trust.issuers.set(did, label || did);
}

function text(el, value) {
  el.textContent = value;
}

// `value` is a string or a list of parts; a part {did} is shown as a DID (monospace; tests
// mask these because every run has fresh keys).
function listItem(list, value, testid) {
  const li = document.createElement("li");
  for (const part of Array.isArray(value) ? value : [value]) {
    if (typeof part === "string") {
      li.append(part);
    } else {
      const span = document.createElement("span");
      span.className = "did dyn";
      span.textContent = part.did;
      li.append(span);
    }
  }
  if (testid) li.dataset.testid = testid;
  list.appendChild(li);
  return li;
}

// --- identity -------------------------------------------------------------------------

async function loadIdentity() {
  if (params.get("fresh") === "1") await forgetKeyPair();
  let pair = await loadKeyPair();
  if (!pair) {
    const fresh = await Identity.generate();
    await saveKeyPair(fresh.keyPair);
    return fresh;
  }
  return Identity.fromKeyPair(pair);
}

// --- relay ----------------------------------------------------------------------------

function relayUrl() {
  return params.get("relay") || `wss://${location.host}/dsip`;
}

async function send(type, fields) {
  const payload = makePayload(type, { from: state.identity.did, ...fields });
  const frame = encodeFrame(await signEnvelope(payload, state.identity));
  state.ws.send(frame);
  return payload;
}

function connect() {
  const ws = new WebSocket(relayUrl());
  state.ws = ws;
  ws.onopen = async () => {
    const hello = await send("hello", { profiles: [], bindings: ["ws/1.0"] });
    state.helloId = hello.id;
    text($("relay-state"), "hello sent");
  };
  ws.onmessage = (ev) => receive(typeof ev.data === "string" ? ev.data : "");
  ws.onclose = () => {
    state.connected = false;
    text($("relay-state"), "disconnected");
    document.body.dataset.relay = "closed";
  };
}

function refuse(what, code) {
  const line = `${what} refused: ${code}`;
  state.refused.push({ what, code });
  listItem($("refused"), line, "refused-item");
}

// Every frame from the relay goes through the verifier first; nothing unverified is acted on.
async function receive(frame) {
  let v;
  try {
    v = await verifyFrame(frame, { replay: state.replay, now: nowSeconds() });
  } catch (e) {
    let what = "envelope";
    let claimed = null;
    try {
      claimed = JSON.parse(new TextDecoder().decode(b64urlDecode(JSON.parse(frame).payload)));
      if (typeof claimed.type === "string") what = clip(claimed.type).slice(0, 40);
    } catch {
      // the frame is too broken to name its type
    }
    const code = e instanceof VerifyError ? e.code : "envelope-shape";
    // A relay with a did:web identity: the browser cannot fetch its DID document (this page
    // may only connect to its own origin), so the binding is made and shown as unverified.
    if (
      code === "kid-unresolvable" &&
      !state.connected &&
      what === "hello" &&
      typeof claimed.from === "string" &&
      claimed.from.startsWith("did:web:")
    ) {
      return onRelayHello(claimed, false);
    }
    refuse(what, code);
    return;
  }
  const p = v.payload;
  if (p.type === "hello") return onRelayHello(p);
  if (!state.connected) return refuse(p.type, "hello-required");
  if (typeof p.to === "string" && p.to !== state.identity.did) return refuse(p.type, "not-addressed-to-us");
  switch (p.type) {
    case "invite":
      return onInvite(p, v.signer);
    case "progress":
      if (state.call?.session === p.session) setCallStatus(`Ringing (${clip(p.status ?? "")})`);
      return;
    case "answer":
      return onAnswer(p);
    case "info":
      if (state.call?.session === p.session && state.call.media) await state.call.media.addCandidates(p.data);
      return;
    case "bye":
    case "cancel":
    case "reject":
      if (state.call?.session === p.session) endCall(`Call ended (${clip(p.reason ?? p.type)})`);
      return;
    case "error":
      setCallStatus(`Relay refused: ${clip(p.reason ?? "error")}`);
      return;
    case "introduction":
      return onNote(p, v.signer);
    default:
      return;
  }
}

function onRelayHello(p, verified = true) {
  if (p.in_reply_to !== state.helloId) return refuse("hello", "hello-not-ours");
  state.connected = true;
  state.relayDid = p.from;
  text($("relay-state"), verified ? "connected" : "connected (relay identity not verified)");
  text($("relay-did"), p.from);
  document.body.dataset.relay = "connected";
}

// --- calls ----------------------------------------------------------------------------

function setCallStatus(value) {
  text($("call-status"), value);
  document.body.dataset.call = value;
}

function newMedia() {
  return new CallMedia({
    loopback: state.loopback,
    onRemote: (stream) => {
      $("remote-audio").srcObject = stream;
    },
  });
}

async function placeCall(to) {
  if (state.call || !state.connected) return;
  const session = newUlid();
  const media = newMedia();
  state.call = { session, peer: to, role: "initiator", media };
  setCallStatus("Calling…");
  try {
    const offer = await media.offer();
    await send("invite", { id: session, to, ...offer });
    $("hangup-button").hidden = false;
  } catch (e) {
    endCall(`Call failed: ${clip(e.message)}`);
  }
}

async function onAnswer(p) {
  const call = state.call;
  if (!call || call.session !== p.session || call.role !== "initiator") return;
  try {
    await call.media.accept(p);
    setCallStatus("In call");
    document.body.dataset.media = "answered";
  } catch {
    await send("bye", { to: call.peer, session: call.session, reason: "media.failed" });
    endCall("Call failed: media.failed");
  }
}

async function onInvite(p, signer) {
  if (state.call) {
    await send("reject", { to: p.from, session: p.id, reason: "endpoint.busy" });
    return;
  }
  state.call = { session: p.id, peer: p.from, role: "responder", invite: p, media: null };
  const shown = await renderCaller(p, signer, state.trust, nowSeconds());
  text($("caller-name"), shown.name ?? "Unknown caller");
  text($("caller-name-basis"), shown.nameBasis);
  text($("caller-identity-basis"), shown.identityBasis);
  text($("caller-did"), signer);
  const ok = $("caller-verified");
  const bad = $("caller-unverified");
  ok.replaceChildren();
  bad.replaceChildren();
  for (const line of shown.basisLines) listItem(ok, line, "caller-basis");
  if (shown.organization) listItem(ok, `Organization: ${shown.organization}`, "caller-org");
  for (const line of shown.unverified) listItem(bad, `Unverified — ${line}`, "caller-unverified-item");
  $("incoming").dataset.verified = shown.nameVerified ? "name" : "none";
  $("incoming").hidden = false;
  await send("progress", { to: p.from, session: p.id, status: "ringing" });
}

async function answerCall() {
  const call = state.call;
  if (!call || call.role !== "responder" || call.media) return;
  $("incoming").hidden = true;
  call.media = newMedia();
  try {
    const answer = await call.media.answer(call.invite);
    await send("answer", { to: call.peer, session: call.session, answered_by: "user", ...answer });
    setCallStatus("In call");
    $("hangup-button").hidden = false;
  } catch (e) {
    await send("reject", { to: call.peer, session: call.session, reason: "media.unsupported" });
    endCall(`Call failed: ${clip(e.message)}`);
  }
}

async function declineCall() {
  const call = state.call;
  if (!call || call.role !== "responder") return;
  await send("reject", { to: call.peer, session: call.session, reason: "user.declined" });
  endCall("Declined");
}

async function hangUp() {
  const call = state.call;
  if (!call) return;
  await send("bye", { to: call.peer, session: call.session, reason: "user.hangup" });
  endCall("Call ended (user.hangup)");
}

function endCall(status) {
  state.call?.media?.close();
  state.call = null;
  $("incoming").hidden = true;
  $("hangup-button").hidden = true;
  setCallStatus(status);
}

// --- notes (signed, not end-to-end encrypted) ------------------------------------------

function onNote(p, signer) {
  const from = clip(p.identity?.display_name ?? "");
  const claimed = from ? `${from} (claimed) · ` : "";
  const line = [`${identityBasis(signer)} · ${claimed}`, { did: signer }, `: ${clip(p.purpose ?? "")}`];
  state.messages.push({ from: signer, text: p.purpose ?? "" });
  listItem($("messages"), line, "message-item");
}

async function sendNote(to, body) {
  await send("introduction", { to, ttl: 3600, identity: {}, purpose: body.slice(0, 280) });
  listItem($("messages"), ["You → ", { did: to }, `: ${body.slice(0, 280)}`], "message-sent");
}

// --- emergency --------------------------------------------------------------------------

function currentPosition() {
  if (!navigator.geolocation) return Promise.resolve(null);
  return new Promise((resolve) => {
    navigator.geolocation.getCurrentPosition(
      (pos) => resolve(pos.coords),
      () => resolve(null),
      { timeout: 3000, maximumAge: 60000 },
    );
  });
}

async function showEmergency() {
  const psap = $("psap-did").value.trim();
  const position = await currentPosition();
  const { allowed, shares, verdict } = emergencyShares(psap, position, state.identity.did);
  const list = $("emergency-shares");
  list.replaceChildren();
  for (const line of shares) listItem(list, line, "share-item");
  const v = $("emergency-verdict");
  text(v, verdict);
  v.className = "verdict " + (allowed ? "allowed" : "refused");
  $("emergency").hidden = false;
}

// --- wiring -----------------------------------------------------------------------------

function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === name);
  $("view-home").hidden = name !== "home";
  $("view-messages").hidden = name !== "messages";
}

async function main() {
  state.identity = await loadIdentity();
  text($("my-did"), state.identity.did);
  document.body.dataset.did = state.identity.did;
  $("psap-did").value = params.get("psap") || "did:web:911.us";
  for (const tab of document.querySelectorAll(".tab")) tab.onclick = () => showView(tab.dataset.view);
  $("call-form").onsubmit = (ev) => {
    ev.preventDefault();
    placeCall($("call-to").value.trim());
  };
  $("hangup-button").onclick = hangUp;
  $("answer-button").onclick = answerCall;
  $("decline-button").onclick = declineCall;
  $("msg-form").onsubmit = (ev) => {
    ev.preventDefault();
    sendNote($("msg-to").value.trim(), $("msg-text").value);
    $("msg-text").value = "";
  };
  $("emergency-button").onclick = showEmergency;
  $("psap-did").onchange = showEmergency;
  $("emergency-close").onclick = () => {
    $("emergency").hidden = true;
  };
  connect();
}

// Tests and the demo drive the page through the same entry points the UI uses.
window.dsipApp = { state, receive, placeCall, sendNote };
main();
