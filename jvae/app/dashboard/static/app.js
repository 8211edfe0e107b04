// The jvae live page: one EventSource feeds the curves and the run card; the
// latent explorer asks the server to decode. No libraries, no build step.
// An audio run (the card has a sample_rate) gets, for every decoded view, a
// player, the waveform and a server-drawn log-mel spectrogram of one decode.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf"];
const NOT_METRICS = new Set(["epoch", "step", "split", "images_per_sec", "wall_s", "epoch_s",
                             "compile_s", "data_placement", "count"]);
const FIRST = ["loss", "neg_elbo", "recon", "kl"];
const NUM_SLIDERS = 16;

// Everything the page knows; tests read window.jvae.
const S = window.jvae = { train: [], test: [], info: {}, latents: null, map: null, z: null,
                          label: 0, decodes: 0, updates: 0, imageEpochs: [], audio: false,
                          sampler: "prior", samples: 0 };

// ---------------------------------------------------------------- streaming
function connect() {
  const es = new EventSource("/events");
  es.onmessage = (ev) => apply(JSON.parse(ev.data));
  es.onerror = () => setStatus("offline");
}

function apply(msg) {
  if (msg.train_from > S.train.length || msg.test_from > S.test.length) {
    fetch("/api/state").then((r) => r.json()).then((full) => {
      S.train = []; S.test = []; apply(full);
    });
    return;
  }
  S.train = S.train.slice(0, msg.train_from).concat(msg.train);
  S.test = S.test.slice(0, msg.test_from).concat(msg.test);
  S.info = msg.info || {};
  S.audio = !!S.info.sample_rate;
  document.body.classList.toggle("audio", S.audio);
  S.progress = msg.progress || {};
  S.updates += 1;
  setStatus(msg.status);
  drawCharts();
  drawRunCard();
  updateImages(msg.image_epochs || []);
  if (msg.latents) {
    drawKL(msg.latents);
    if (!S.map || S.map.epoch !== msg.latents.epoch) loadMap();
  }
  setupClasses();
}

function setStatus(status) {
  const el = $("status");
  el.textContent = status;
  el.className = "pill " + status;
}

// ---------------------------------------------------------------- charts
function metricNames() {
  const names = new Set();
  for (const p of S.train) for (const k in p) if (!NOT_METRICS.has(k) && p[k] !== null) names.add(k);
  for (const r of S.test) for (const k in r) {
    if (!NOT_METRICS.has(k) && !k.startsWith("train_") && typeof r[k] === "number") names.add(k);
  }
  const rest = [...names].filter((k) => !FIRST.includes(k)).sort();
  return FIRST.filter((k) => names.has(k)).concat(rest);
}

function chartCanvas(name) {
  let c = $("chart-" + name);
  if (!c) {
    const box = document.createElement("div");
    c = document.createElement("canvas");
    c.id = "chart-" + name; c.width = 600; c.height = 300;
    box.appendChild(c);
    $("charts").appendChild(box);
  }
  return c;
}

function drawCharts() {
  for (const name of metricNames()) {
    const train = S.train.filter((p) => typeof p[name] === "number").map((p) => [p.step, p[name]]);
    const test = S.test.filter((r) => typeof r[name] === "number").map((r) => [r.step, r[name]]);
    lineChart(chartCanvas(name), name, train, test);
  }
}

function niceRange(values) {
  // The first points of a run dwarf the rest: the range covers the later 95 %.
  const v = values.slice().sort((a, b) => a - b);
  if (!v.length) return [0, 1];
  let lo = v[0], hi = v[Math.min(v.length - 1, Math.floor(v.length * 0.95))];
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const pad = (hi - lo) * 0.08;
  return [lo - pad, hi + pad];
}

function lineChart(canvas, title, train, test) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 60, R = 12, T = 26, B = 30;
  ctx.clearRect(0, 0, W, H);
  const xs = train.map((p) => p[0]).concat(test.map((p) => p[0]));
  const ys = train.map((p) => p[1]).concat(test.map((p) => p[1]));
  const x0 = Math.min(0, ...xs), x1 = Math.max(1, ...xs);
  const [y0, y1] = niceRange(ys);
  const px = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const py = (y) => T + (1 - (Math.min(Math.max(y, y0), y1) - y0) / (y1 - y0)) * (H - T - B);
  ctx.font = "20px system-ui"; ctx.fillStyle = "#1d2330"; ctx.fillText(title, L, 19);
  ctx.font = "15px system-ui"; ctx.fillStyle = "#6b7385"; ctx.strokeStyle = "#e3e6eb";
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    ctx.beginPath(); ctx.moveTo(L, py(y)); ctx.lineTo(W - R, py(y)); ctx.stroke();
    ctx.fillText(fmt(y), 4, py(y) + 5);
  }
  ctx.fillText("step " + Math.round(x1), W - R - 90, H - 8);
  const last = test.length ? test[test.length - 1][1] : (train.length ? train[train.length - 1][1] : null);
  if (last !== null) ctx.fillText("latest " + fmt(last), L + 150, 19);
  ctx.strokeStyle = "#2f6fdb"; ctx.lineWidth = 2; ctx.beginPath();
  train.forEach((p, i) => (i ? ctx.lineTo(px(p[0]), py(p[1])) : ctx.moveTo(px(p[0]), py(p[1]))));
  ctx.stroke(); ctx.lineWidth = 1;
  ctx.fillStyle = "#e4572e";
  for (const p of test) { ctx.beginPath(); ctx.arc(px(p[0]), py(p[1]), 4.5, 0, 7); ctx.fill(); }
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 0.01 ? v.toFixed(3) : v.toExponential(1);
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  const m = Math.floor(s / 60), h = Math.floor(m / 60);
  return h ? `${h} h ${m % 60} min` : m ? `${m} min ${Math.round(s % 60)} s` : `${s.toFixed(1)} s`;
}

// ---------------------------------------------------------------- run card
function drawRunCard() {
  const info = S.info, p = S.progress || {};
  const epochs = info.epochs || 0;
  const epochNow = typeof p.epoch === "number" ? p.epoch : 0;
  const rows = [
    ["step", p.step], ["epoch", `${fmt(epochNow)} / ${epochs}`],
    ["images/s", p.images_per_sec ? Math.round(p.images_per_sec).toLocaleString() : "–"],
    ["elapsed", duration(p.elapsed_s)],
    ["last checkpoint", p.last_checkpoint ? `epoch ${p.last_checkpoint}` : "–"],
    ["devices", `${info.num_devices ?? "–"} × ${info.device_kind ?? ""}`],
    ["data", (info.data_shape || []).join("×") +
             (info.sample_rate ? ` at ${info.sample_rate.toLocaleString()} Hz` : "")],
    ["latent size", info.latent_size],
    ["posterior", info.posterior], ["workdir", info.workdir]];
  $("run-card").innerHTML = rows.map(([k, v]) =>
    `<tr><td>${k}</td><td>${escapeHtml(String(v ?? "–"))}</td></tr>`).join("");
  $("config").textContent = JSON.stringify(info.config || {}, null, 1);
  $("progress-text").textContent = `epoch ${fmt(epochNow)}/${epochs} · step ${p.step ?? 0} · ` +
    `${p.images_per_sec ? Math.round(p.images_per_sec).toLocaleString() : "–"} img/s · ${duration(p.elapsed_s)}`;
  $("progress-bar").style.width = epochs ? `${Math.min(100, 100 * epochNow / epochs)}%` : "0";
}

function escapeHtml(s) {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

// ---------------------------------------------------------------- images
function updateImages(epochs) {
  const slider = $("epoch-slider");
  const atEnd = !S.imageEpochs.length || +slider.value === S.imageEpochs.length - 1;
  if (epochs.length === S.imageEpochs.length) return;
  S.imageEpochs = epochs;
  slider.max = Math.max(0, epochs.length - 1);
  slider.disabled = epochs.length < 2;
  if (atEnd) slider.value = slider.max;  // follow the newest unless the user looks back
  showEpochImages();
}

function showEpochImages() {
  const epoch = S.imageEpochs[+$("epoch-slider").value];
  if (epoch === undefined) return;
  $("image-epoch").textContent = `epoch ${epoch}`;
  if (S.audio) {
    $("samples-audio").src = `/api/audio?kind=samples&epoch=${epoch}`;
    $("recons-audio").src = `/api/audio?kind=reconstructions&epoch=${epoch}`;
    $("waveforms-img").src = `/api/image?kind=waveforms&epoch=${epoch}`;
    $("spectrograms-img").src = `/api/image?kind=spectrograms&epoch=${epoch}`;
  } else {
    $("samples-img").src = `/api/image?kind=samples&epoch=${epoch}`;
    $("recons-img").src = `/api/image?kind=reconstructions&epoch=${epoch}`;
  }
}

// ---------------------------------------------------------------- KL bars
function drawKL(lat) {
  const values = lat.kl || lat.variance;
  const canvas = $("kl-bars"), ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, B = 18, T = 14;
  ctx.clearRect(0, 0, W, H);
  const max = Math.max(1e-6, ...values);
  const w = W / values.length;
  ctx.font = "11px system-ui";
  values.forEach((v, i) => {
    const h = (H - B - T) * v / max;
    ctx.fillStyle = lat.variance[i] > 0.01 ? "#2f6fdb" : "#c3c8d2";
    ctx.fillRect(i * w + 1, H - B - h, Math.max(1, w - 2), h);
    if (values.length <= 32) { ctx.fillStyle = "#6b7385"; ctx.fillText(i, i * w + w / 2 - 4, H - 4); }
  });
  ctx.fillStyle = "#6b7385";
  ctx.fillText(`max ${fmt(max)} nats`, 4, 11);
  $("active-units").textContent =
    `${lat.active_units} of ${values.length} active (Var of mean > 0.01) · epoch ${lat.epoch}` +
    (lat.kl ? "" : " · bars: variance of posterior means (KL does not split per dimension)");
}

// ---------------------------------------------------------------- latent map
function loadMap() {
  fetch("/api/latents").then((r) => (r.ok ? r.json() : null)).then((m) => {
    if (!m) return;
    const first = !S.map;
    S.map = m;
    const xs = m.xy.map((p) => p[0]), ys = m.xy.map((p) => p[1]);
    const pad = (a, b) => [a - 0.08 * (b - a + 1e-6), b + 0.08 * (b - a + 1e-6)];
    m.xr = pad(Math.min(...xs), Math.max(...xs));
    m.yr = pad(Math.min(...ys), Math.max(...ys));
    $("map-caption").textContent = (m.axes === "pca" ? "first two principal components" :
      "the latent dimensions") + ` of ${m.xy.length} test posterior means, epoch ${m.epoch}`;
    drawMap();
    if (first) { buildSliders(); freshSamples(); }
    if (first && !S.z) setZ(m.center.slice());
  });
}

function mapToScreen(x, y) {
  const c = $("map"), m = S.map;
  return [(x - m.xr[0]) / (m.xr[1] - m.xr[0]) * c.width,
          (1 - (y - m.yr[0]) / (m.yr[1] - m.yr[0])) * c.height];
}

function drawMap() {
  const c = $("map"), ctx = c.getContext("2d"), m = S.map;
  if (!m) return;
  ctx.clearRect(0, 0, c.width, c.height);
  m.xy.forEach((p, i) => {
    const [sx, sy] = mapToScreen(p[0], p[1]);
    ctx.fillStyle = COLORS[(m.labels[i] ?? 0) % COLORS.length];
    ctx.globalAlpha = 0.75;
    ctx.beginPath(); ctx.arc(sx, sy, 2.6, 0, 7); ctx.fill();
  });
  ctx.globalAlpha = 1;
  if (S.z) {  // where the current latent projects
    const d = S.z.map((v, i) => v - m.center[i]);
    const x = dot(d, m.components[0]), y = dot(d, m.components[1]);
    const [sx, sy] = mapToScreen(x, y);
    ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(sx, sy, 7, 0, 7); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(sx - 11, sy); ctx.lineTo(sx + 11, sy);
    ctx.moveTo(sx, sy - 11); ctx.lineTo(sx, sy + 11); ctx.stroke(); ctx.lineWidth = 1;
  }
  const labels = [...new Set(m.labels)].sort((a, b) => a - b);
  $("legend").innerHTML = labels.map((l) =>
    `<span style="--c:${COLORS[l % COLORS.length]}">${l}</span>`).join("");
}

function dot(a, b) { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; }

function onMapClick(ev) {
  const m = S.map;
  if (!m) return;
  const c = $("map"), r = c.getBoundingClientRect();
  const fx = (ev.clientX - r.left) / r.width, fy = (ev.clientY - r.top) / r.height;
  const x = m.xr[0] + fx * (m.xr[1] - m.xr[0]);
  const y = m.yr[0] + (1 - fy) * (m.yr[1] - m.yr[0]);
  // Back to the latent space: z = center + x * pc1 + y * pc2.
  setZ(m.center.map((v, i) => v + x * m.components[0][i] + y * m.components[1][i]));
}

// ---------------------------------------------------------------- sliders and decoding
function buildSliders() {
  const box = $("sliders"), m = S.map;
  box.innerHTML = "";
  const n = Math.min(NUM_SLIDERS, m.center.length);
  for (let i = 0; i < n; i++) {
    const lo = Math.min(m.lo[i], -1), hi = Math.max(m.hi[i], 1);
    const span = hi - lo;
    box.insertAdjacentHTML("beforeend",
      `<label for="z${i}">z${i}</label>` +
      `<input id="z${i}" class="zslider" type="range" min="${lo - 0.25 * span}" ` +
      `max="${hi + 0.25 * span}" step="${span / 200}" value="0">` +
      `<span id="zv${i}" class="dim">0</span>`);
    $("z" + i).addEventListener("input", (ev) => {
      const z = S.z.slice(); z[i] = +ev.target.value; setZ(z, true);
    });
  }
}

function setZ(z, fromSlider) {
  S.z = z;
  for (let i = 0; i < Math.min(NUM_SLIDERS, z.length); i++) {
    const s = $("z" + i);
    if (s && !fromSlider) s.value = z[i];
    if ($("zv" + i)) $("zv" + i).textContent = z[i].toFixed(2);
  }
  drawMap();
  requestDecode();
}

let inFlight = false, pending = false;
function requestDecode() {
  // At most one decode from this page at a time; the newest latent wins.
  if (inFlight) { pending = true; return; }
  inFlight = true; pending = false;
  const body = { z: S.z };
  if (S.info.num_classes) body.label = S.label;
  const request = (view) => ["/api/decode", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(view ? { ...body, view } : body) }];
  const shown = S.audio ? showAudio("decoded", request)
    : fetchBlob(...request()).then((blob) => blob && setBlob($("decoded"), blob));
  shown.then((ok) => { if (ok) S.decodes += 1; })
    .finally(() => { inFlight = false; if (pending) requestDecode(); });
}

// ---------------------------------------------------------------- audio views
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function fetchBlob(url, opts, tries = 8) {
  // 503: both of the server's decode slots are busy (an audio view asks twice,
  // views load together) or the model is not there yet: wait and ask again.
  return fetch(url, opts).then((r) => {
    if (r.status === 503 && tries > 1) return sleep(250).then(() => fetchBlob(url, opts, tries - 1));
    return r.ok ? r.blob() : null;
  });
}

function setBlob(el, blob) {
  const old = el.src;
  el.src = URL.createObjectURL(blob);
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  return true;
}

function getRequest(url) {
  return (view) => [`${url}&view=${view}`, undefined];
}

// One audio view (elements PREFIX-player, -wave, -spec): the player and the
// waveform from the WAV, then the spectrogram of the same decode (the server
// decodes a latent, seed or pair the same way every time) as a PNG.
function showAudio(prefix, request) {
  return fetchBlob(...request("audio")).then((wav) => {
    if (!wav) return false;
    setBlob($(prefix + "-player"), wav);
    wav.arrayBuffer().then((buf) => drawWaveform(buf, $(prefix + "-wave")));
    return fetchBlob(...request("spectrogram"))
      .then((png) => png !== null && setBlob($(prefix + "-spec"), png));
  });
}

function drawWaveform(buf, canvas) {
  // 16-bit PCM after the 44-byte WAV header, first channel. Each pixel column
  // spans the min..max of its samples, so no peak falls between columns, and
  // the previous column's last sample, so the trace stays connected.
  const view = new DataView(buf), channels = view.getUint16(22, true);
  const n = Math.floor((buf.byteLength - 44) / 2 / channels);
  const sample = (i) => view.getInt16(44 + 2 * i * channels, true) / 32768;
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#e3e6eb"; ctx.fillRect(0, H / 2, W, 1);
  ctx.fillStyle = "#2f6fdb";
  let prev = n > 0 ? sample(0) : 0;
  for (let x = 0; x < W && n > 0; x++) {
    const i0 = Math.floor(x / W * n), i1 = Math.max(i0 + 1, Math.floor((x + 1) / W * n));
    let lo = prev, hi = prev;
    for (let i = i0; i < i1; i++) {
      const v = sample(i);
      lo = Math.min(lo, v); hi = Math.max(hi, v);
    }
    prev = sample(i1 - 1);
    const top = (1 - hi) * H / 2, bottom = (1 - lo) * H / 2;
    ctx.fillRect(x, top, 1, Math.max(1, bottom - top));
  }
}

// ---------------------------------------------------------------- classes, samples, interpolation
function setupClasses() {
  const n = S.info.num_classes;
  if (!n || !$("class-picker").hidden) return;
  $("class-picker").hidden = false;
  $("class-select").innerHTML = Array.from({ length: n }, (_, i) =>
    `<option value="${i}">${i}</option>`).join("");
}

function labelQuery() { return S.info.num_classes ? `&label=${S.label}` : ""; }

let sampleSeed = 0;
function freshSamples() {
  // sampler=prior draws z ~ p(z); gmm, two-stage and maf draw from a density fitted to the
  // codes (the first request for a checkpoint fits it), which the answer's header describes.
  const url = `/api/samples?seed=${sampleSeed++}&sampler=${S.sampler}${labelQuery()}`;
  if (S.audio) { showAudio("samples", getRequest(url)); return; }
  $("sampler-note").textContent = S.sampler === "prior" ? "" : `drawing from ${S.sampler}...`;
  fetchSamples(url);
}

function fetchSamples(url, tries = 40) {
  // 503: the decode slots are busy (a fit takes seconds): wait and ask again.
  return fetch(url).then((r) => {
    if (r.status === 503 && tries > 1) return sleep(500).then(() => fetchSamples(url, tries - 1));
    if (!r.ok) {
      return r.json().then((e) => { $("sampler-note").textContent = e.error || r.statusText; });
    }
    const note = r.headers.get("X-Jvae-Sampler") || "";
    return r.blob().then((blob) => {
      setBlob($("fresh-samples"), blob);
      $("sampler-note").textContent = note;
      S.samples += 1;
    });
  });
}

function interpolateStrip() {
  const a = +$("interp-a").value, b = +$("interp-b").value, mode = $("interp-mode").value;
  const url = `/api/interpolate?a=${a}&b=${b}&mode=${mode}${labelQuery()}`;
  if (S.audio) showAudio("interp", getRequest(url));
  else $("interp-strip").src = `${url}&v=${Date.now()}`;
}

function randomPair() {
  const n = S.map ? S.map.xy.length : 100;
  $("interp-a").value = Math.floor(Math.random() * n);
  $("interp-b").value = Math.floor(Math.random() * n);
  interpolateStrip();
}

window.addEventListener("DOMContentLoaded", () => {
  $("map").addEventListener("click", onMapClick);
  $("epoch-slider").addEventListener("input", showEpochImages);
  $("samples-btn").addEventListener("click", freshSamples);
  $("sampler-select").addEventListener("change", (ev) => { S.sampler = ev.target.value; freshSamples(); });
  $("interp-btn").addEventListener("click", interpolateStrip);
  $("interp-random").addEventListener("click", randomPair);
  $("class-select").addEventListener("change", (ev) => {
    S.label = +ev.target.value; if (S.z) requestDecode(); freshSamples();
  });
  connect();
});
