// The browser half of falkit's live source, an anywidget ESM module.
//
// It captures frames (the camera through getUserMedia and a canvas, the microphone through
// an AudioWorklet, or a sketch pad) and sends each to the kernel as a custom comm message
// with the encoded frame as a binary buffer (no base64). The kernel sends back an "output"
// per answer, with an image as a binary buffer, and an "ack" when a frame was dropped (or,
// on routes whose outputs are not matched to frames, when it left the kernel's mailbox).
// A new frame is captured only when fewer than `window` frames are unanswered (or the last
// one was acked) and `interval_ms` has passed (fal-js's throttle), so frames are fresh
// when they leave and the comm never queues.

const STALE_MS = 5000; // an unanswered frame older than this no longer holds a slot
const RETRY_MS = 250;
const AUDIO_MIN_MS = 100;
const PCM_WORKLET = `registerProcessor("falkit-pcm", class extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
});`;

function make(tag, props, style) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  if (style) node.style.cssText = style;
  return node;
}

function wav(samples, rate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((v, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, v)) * 32767, true));
  return buffer;
}

function render({ model, el }) {
  const frame = "max-width:320px;max-height:320px";
  const root = make("div", { className: "falkit-live" }, "display:flex;gap:10px;flex-wrap:wrap");
  const input = make("div", { className: "falkit-live-input" });
  const video = make("video", { className: "falkit-live-video", muted: true, playsInline: true });
  video.style.cssText = `${frame};background:#000;display:none`;
  const pad = make("canvas", { className: "falkit-live-sketch" });
  pad.style.cssText = "width:320px;height:320px;border:1px solid #ccc;touch-action:none;" +
    "cursor:crosshair;display:none";
  const clear = make("button", { className: "falkit-live-clear", textContent: "clear" });
  clear.style.display = "none";
  const note = make("div", { className: "falkit-live-note" }, "color:#777;font-size:90%");
  const output = make("div", { className: "falkit-live-output-pane" });
  const shown = make("img", { className: "falkit-live-output", alt: "" });
  shown.style.cssText = `${frame};min-width:64px;min-height:64px;background:#f6f8fa`;
  const counter = make("div", { className: "falkit-live-counter" }, "font:12px monospace");
  const error = make("div", { className: "falkit-live-error" }, "color:#cf222e");
  input.append(video, pad, clear, note);
  output.append(shown, counter);
  root.append(input, output);
  el.append(root, error);

  const grab = document.createElement("canvas");
  const pen = pad.getContext("2d");
  const s = {
    active: false, token: 0, media: null, audio: null, timer: 0, flusher: 0, busy: false,
    seq: 0, last: -Infinity, unacked: new Map(), unanswered: new Map(), rtts: [],
    sent: 0, outputs: 0, dirty: false, url: null, pcm: [], pcmLength: 0, rate: 16000,
  };

  function paint() {
    counter.textContent = `sent ${s.sent} · outputs ${s.outputs}`;
    counter.dataset.sent = String(s.sent);
    counter.dataset.outputs = String(s.outputs);
  }

  function blankPad() {
    pad.width = model.get("width");
    pad.height = model.get("height");
    pen.fillStyle = "#fff";
    pen.fillRect(0, 0, pad.width, pad.height);
  }

  function showSource(source) {
    video.style.display = source === "camera" ? "" : "none";
    pad.style.display = clear.style.display = source === "sketch" ? "" : "none";
    note.textContent = {
      microphone: "listening (16 kHz mono)",
      loop: "frames come from the kernel",
      sketch: "draw with the mouse or a pen",
    }[source] || "";
  }

  async function startAudio(media) {
    const ctx = new AudioContext({ sampleRate: s.rate });
    s.audio = ctx; // closed by release() from here on, whatever happens next
    const url = URL.createObjectURL(new Blob([PCM_WORKLET], { type: "text/javascript" }));
    try {
      await ctx.audioWorklet.addModule(url);
    } finally {
      URL.revokeObjectURL(url);
    }
    const node = new AudioWorkletNode(ctx, "falkit-pcm");
    node.port.onmessage = (event) => {
      s.pcm.push(event.data);
      s.pcmLength += event.data.length;
    };
    // The worklet must reach the destination to be pulled; a zero gain keeps it silent.
    const mute = ctx.createGain();
    mute.gain.value = 0;
    ctx.createMediaStreamSource(media).connect(node).connect(mute).connect(ctx.destination);
  }

  async function open(source, token) {
    // Each await may outlive a stop: what it obtained is released at once then.
    const stale = () => token !== s.token;
    if (source === "sketch") return blankPad();
    if (source !== "camera" && source !== "microphone") return; // "loop": nothing to open
    const constraints =
      source === "camera"
        ? { video: { width: { ideal: model.get("width") }, height: { ideal: model.get("height") } } }
        : { audio: true };
    const media = await navigator.mediaDevices.getUserMedia(constraints);
    if (stale()) return media.getTracks().forEach((track) => track.stop());
    s.media = media;
    if (source === "camera") {
      video.srcObject = media;
      await video.play();
    } else {
      await startAudio(media);
    }
    if (stale()) release();
  }

  async function start() {
    if (s.active) return;
    s.active = true;
    const token = ++s.token;
    const source = model.get("source");
    error.textContent = "";
    showSource(source);
    try {
      await open(source, token);
    } catch (err) {
      if (token === s.token) fail(`${source}: ${err.name || "error"}: ${err.message || err}`);
      return;
    }
    if (token !== s.token) return; // stopped while the browser asked for permission
    s.flusher = setInterval(flushRtts, 1000);
    schedule(0);
  }

  function release() {
    if (s.media) s.media.getTracks().forEach((track) => track.stop()); // the camera light off
    s.media = null;
    video.srcObject = null;
    if (s.audio) s.audio.close();
    s.audio = null;
  }

  function stop() {
    s.active = false;
    s.token++;
    clearTimeout(s.timer);
    clearInterval(s.flusher);
    release();
    flushRtts();
    s.unacked.clear();
    s.unanswered.clear();
    s.pcm = [];
    s.pcmLength = 0;
  }

  function fail(text) {
    stop();
    model.set("error", text);
    model.set("running", false);
    model.save_changes();
  }

  function schedule(ms) {
    clearTimeout(s.timer);
    if (s.active) s.timer = setTimeout(tick, Math.max(0, ms));
  }

  function ready() {
    const now = performance.now();
    for (const held of [s.unacked, s.unanswered]) {
      for (const [seq, at] of held) if (now - at > STALE_MS) held.delete(seq);
    }
    // Outputs matched to frames (window > 0): a slot frees when its output (or a drop)
    // comes back. Otherwise the kernel acks each frame as it leaves its mailbox.
    const window = model.get("window");
    return window > 0 ? s.unanswered.size < window : s.unacked.size === 0;
  }

  function encode(canvas) {
    return new Promise((resolve) => {
      canvas.toBlob(async (blob) => {
        resolve(blob ? { buffer: await blob.arrayBuffer(), mime: blob.type } : null);
      }, model.get("mime"), model.get("quality"));
    });
  }

  function cover(width, height) {
    // Center-crop the camera picture to the frame size asked for (no stretching).
    const w = model.get("width"), h = model.get("height");
    if (grab.width !== w) grab.width = w;
    if (grab.height !== h) grab.height = h;
    const scale = Math.max(w / width, h / height);
    const cw = w / scale, ch = h / scale;
    grab.getContext("2d").drawImage(video, (width - cw) / 2, (height - ch) / 2, cw, ch, 0, 0, w, h);
  }

  function takeAudio() {
    const need = (s.rate * Math.max(model.get("interval_ms"), AUDIO_MIN_MS)) / 1000;
    if (s.pcmLength < need) return null;
    const samples = new Float32Array(s.pcmLength);
    let at = 0;
    for (const chunk of s.pcm) {
      samples.set(chunk, at);
      at += chunk.length;
    }
    s.pcm = [];
    s.pcmLength = 0;
    return { buffer: wav(samples, s.rate), mime: "audio/wav" };
  }

  async function capture(source) {
    if (source === "camera") {
      if (video.readyState < 2 || !video.videoWidth) return null;
      cover(video.videoWidth, video.videoHeight);
      return encode(grab);
    }
    if (source === "sketch") {
      s.dirty = false;
      return encode(pad);
    }
    if (source === "microphone") return takeAudio();
    return null; // "loop": the kernel makes the frames
  }

  async function tick() {
    const source = model.get("source");
    if (!s.active || s.busy || source === "loop") return;
    const wait = s.last + model.get("interval_ms") - performance.now();
    if (wait > 0) return schedule(wait);
    if (!ready()) return schedule(RETRY_MS); // an ack or an output comes sooner
    if (source === "sketch" && !s.dirty) return; // the next stroke calls again
    s.busy = true;
    let captured = null;
    try {
      captured = await capture(source);
    } catch (err) {
      fail(`${source}: ${err.name || "error"}: ${err.message || err}`);
    } finally {
      s.busy = false;
    }
    if (!s.active) return;
    if (!captured) return schedule(source === "microphone" ? 20 : 30);
    const seq = ++s.seq;
    const now = performance.now();
    s.last = now;
    if (model.get("window") > 0) s.unanswered.set(seq, now);
    else s.unacked.set(seq, now);
    model.send({ kind: "frame", seq, mime: captured.mime, rtt: takeRtts() }, undefined, [
      captured.buffer,
    ]);
    s.sent++;
    paint();
    schedule(model.get("interval_ms"));
  }

  function takeRtts() {
    const rtts = s.rtts;
    s.rtts = [];
    return rtts;
  }

  function flushRtts() {
    if (s.rtts.length) model.send({ kind: "rtt", rtt: takeRtts() });
  }

  function showImage(buffer, mime) {
    const url = URL.createObjectURL(new Blob([buffer], { type: mime || "image/jpeg" }));
    const old = s.url;
    s.url = url;
    shown.src = url;
    if (old) URL.revokeObjectURL(old);
  }

  function onMessage(msg, buffers) {
    if (msg.kind === "reset") {
      s.unacked.clear();
      s.unanswered.clear();
    } else if (msg.kind === "ack") {
      s.unacked.delete(msg.seq);
      if (msg.dropped) s.unanswered.delete(msg.seq);
    } else if (msg.kind === "output") {
      const sentAt = s.unanswered.get(msg.seq);
      if (sentAt !== undefined) {
        s.unanswered.delete(msg.seq);
        s.rtts.push(Math.round((performance.now() - sentAt) * 100) / 100);
      }
      if (buffers && buffers.length) showImage(buffers[0], msg.mime);
      s.outputs++;
      paint();
    }
    if (s.active) schedule(0);
  }

  let stroke = null;
  const at = (event) => {
    const box = pad.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * pad.width) / box.width,
      ((event.clientY - box.top) * pad.height) / box.height,
    ];
  };
  pad.addEventListener("pointerdown", (event) => {
    stroke = at(event);
    pad.setPointerCapture(event.pointerId);
  });
  pad.addEventListener("pointermove", (event) => {
    if (!stroke) return;
    const next = at(event);
    pen.strokeStyle = "#111";
    pen.lineWidth = Math.max(2, pad.width / 64);
    pen.lineCap = "round";
    pen.beginPath();
    pen.moveTo(...stroke);
    pen.lineTo(...next);
    pen.stroke();
    stroke = next;
    s.dirty = true;
    if (s.active) schedule(0);
  });
  const lift = () => {
    stroke = null;
  };
  pad.addEventListener("pointerup", lift);
  pad.addEventListener("pointercancel", lift);
  clear.addEventListener("click", () => {
    blankPad();
    s.dirty = true;
    if (s.active) schedule(0);
  });

  const onRunning = () => (model.get("running") ? start() : stop());
  const onSource = () => {
    showSource(model.get("source"));
    if (model.get("running")) {
      stop();
      start();
    }
  };
  const onError = () => {
    error.textContent = model.get("error");
  };
  model.on("change:running", onRunning);
  model.on("change:source", onSource);
  model.on("change:error", onError);
  model.on("msg:custom", onMessage);
  blankPad();
  showSource(model.get("source"));
  onError();
  paint();
  onRunning();
  return () => {
    stop();
    if (s.url) URL.revokeObjectURL(s.url);
    model.off("change:running", onRunning);
    model.off("change:source", onSource);
    model.off("change:error", onError);
    model.off("msg:custom", onMessage);
  };
}

export default { render };
