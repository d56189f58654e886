// The browser's own WebRTC for a DSIP call (WebRTC Media Binding 1.0): SDP rides in the
// signed invite/answer (`transports[0].sdp`), described by `media[]` descriptors that must
// agree with it (B§2.1). Candidates are gathered before signing, so the SDP carries them;
// `ice: "trickle"` is still declared as the binding requires.

const CODECS = {
  "opus/48000": "codec:audio/opus",
  "g722/8000": "codec:audio/g722",
  "pcmu/8000": "codec:audio/pcmu",
  "pcma/8000": "codec:audio/pcma",
};
const DIRECTIONS = ["sendrecv", "sendonly", "recvonly", "inactive"];

// One descriptor per live audio m= section: its direction and the codecs DSIP can name.
export function describeSdp(sdp) {
  const media = [];
  for (const section of sdp.split(/\r\n(?=m=)/).slice(1)) {
    const lines = section.split("\r\n");
    const [kind, port] = lines[0].slice(2).split(" ");
    if (kind !== "audio" || port === "0") continue;
    const direction = DIRECTIONS.find((d) => lines.includes("a=" + d)) ?? "sendrecv";
    const codecs = [];
    for (const line of lines) {
      const m = /^a=rtpmap:\d+ ([^/]+\/\d+)/.exec(line);
      const id = m && CODECS[m[1].toLowerCase()];
      if (id && !codecs.some((c) => c.id === id)) codecs.push({ id });
    }
    media.push({ type: "audio", direction, codecs });
  }
  return media;
}

// Loopback mode (tests, one-machine demos): only 127.0.0.1 UDP candidates are signaled.
export function onlyLoopback(sdp) {
  return sdp
    .split("\r\n")
    .filter((l) => !l.startsWith("a=candidate:") || / udp \d+ 127\.0\.0\.1 \d+ typ host/i.test(l))
    .join("\r\n");
}

export class CallMedia {
  constructor({ loopback = false, onRemote = () => {} } = {}) {
    this.loopback = loopback;
    this.pc = new RTCPeerConnection({ iceServers: [] });
    this.pc.ontrack = (ev) => onRemote(ev.streams[0] ?? new MediaStream([ev.track]));
    this.stream = null;
  }

  async addMicrophone() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    for (const track of this.stream.getAudioTracks()) this.pc.addTrack(track, this.stream);
  }

  async gathered(timeoutMs = 5000) {
    if (this.pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const done = () => {
        if (this.pc.iceGatheringState === "complete") resolve();
      };
      this.pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs);
    });
  }

  localSdp() {
    const sdp = this.pc.localDescription.sdp;
    return this.loopback ? onlyLoopback(sdp) : sdp;
  }

  // {media, transports} for an invite.
  async offer() {
    await this.addMicrophone();
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await this.gathered();
    const sdp = this.localSdp();
    return { media: describeSdp(sdp), transports: [{ id: "transport:webrtc", ice: "trickle", sdp }] };
  }

  // {media, transports} for the answer to a received invite.
  async answer(invite) {
    const offered = (invite.transports || []).find((t) => t && t.id === "transport:webrtc");
    if (!offered || typeof offered.sdp !== "string") throw new Error("media.offer-required");
    await this.pc.setRemoteDescription({ type: "offer", sdp: offered.sdp });
    await this.addMicrophone();
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    await this.gathered();
    const sdp = this.localSdp();
    return { media: describeSdp(sdp), transports: [{ id: "transport:webrtc", sdp }] };
  }

  async accept(answer) {
    const t = (answer.transports || []).find((x) => x && x.id === "transport:webrtc");
    if (!t || typeof t.sdp !== "string") throw new Error("media.failed");
    await this.pc.setRemoteDescription({ type: "answer", sdp: t.sdp });
  }

  async addCandidates(data) {
    for (const c of (data && data.candidates) || []) {
      if (!c || typeof c.candidate !== "string") continue;
      try {
        await this.pc.addIceCandidate({
          candidate: c.candidate,
          sdpMid: c.sdp_mid ?? null,
          sdpMLineIndex: c.sdp_m_line_index ?? null,
        });
      } catch {
        // a candidate the browser cannot use is ignored, like a bad line in SDP
      }
    }
  }

  close() {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.pc.close();
  }
}
