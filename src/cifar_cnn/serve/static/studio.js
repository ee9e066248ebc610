// The studio page: projects, classes with examples (upload, drop, paste, webcam bursts), one Train button
// with live progress (server-sent events), the evaluation, a try-it view and the exports. A file of its
// own so the Content-Security-Policy can forbid inline scripts. Everything shown comes from /studio/api.
"use strict";

const $ = id => document.getElementById(id);
const THUMBS_SHOWN = 48;   // per class; the count says how many there are
const BATCH = 16;          // files per upload request (the server's limit)
const BURST_FPS = 8;       // webcam frames per second while the record button is held
const FRAME_SIDE = 224;    // webcam frames: a centred square, as Teachable Machine takes them
const LIVE_MS = 400;       // live webcam predictions: one request at a time, at most this often

const state = { project: null, info: null, pasteTarget: null, stream: null, streamAbort: null, lastEvent: 0,
                liveTimer: null, cameras: 0 };

// ---- API: the key (asked for on a 401, kept for this tab), JSON errors as exceptions -----------------
const keyForm = $("keyform"), keyInput = $("key");
function headers() {
  const key = sessionStorage.getItem("cifar-cnn-api-key");
  return key ? { Authorization: `Bearer ${key}` } : {};
}
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) keyForm.classList.add("shown");
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const err = new Error(message); err.status = response.status; throw err;
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response;
}
function json(method, body) {
  return { method, body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
}
const enc = encodeURIComponent;
const projectUrl = (p = state.project) => `/studio/api/projects/${enc(p)}`;
keyForm.addEventListener("submit", e => {
  e.preventDefault();
  sessionStorage.setItem("cifar-cnn-api-key", keyInput.value.trim());
  keyForm.classList.remove("shown");
  route();
});

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function notify(message, kind = "error") {
  const n = $("notice");
  n.textContent = message; n.className = kind; n.hidden = !message;
  if (message) clearTimeout(notify.timer), notify.timer = setTimeout(() => { n.hidden = true; }, 8000);
}
const pct = x => `${(100 * x).toFixed(x === 1 ? 0 : 1)}%`;

// ---- projects -------------------------------------------------------------------------------------
async function showProjects() {
  stopLive(); stopStream();
  state.project = null;
  $("project-view").hidden = true; $("projects-view").hidden = false;
  document.title = "Studio: teach an image classifier";
  try {
    const [list, info] = await Promise.all([api("/studio/api/projects"), api("/studio/api")]);
    const ul = $("projects"); ul.replaceChildren();
    if (!list.length) ul.append(el("li", "hint", "No projects yet: name one above."));
    for (const p of list) {
      const li = el("li", "project"), a = el("a", "", p.name);
      a.href = `#project=${enc(p.name)}`;
      const what = `${p.classes} classes, ${p.images} images` +
        (p.trained ? `, accuracy ${pct(p.accuracy)}` : "") + (p.status ? ` (last training: ${p.status})` : "");
      li.append(a, el("span", "hint", what)); ul.append(li);
    }
    $("workdir").textContent = `Projects are kept in ${info.workdir} (each one a folder: images/<class>/ ` +
      `and model/; train one from the command line with cifar-cnn train --data <project>/images).`;
  } catch (err) { notify(`Could not list the projects: ${err.message}`); }
}
$("new-project-form").addEventListener("submit", async e => {
  e.preventDefault();
  const name = $("new-project-name").value.trim();
  try {
    const info = await api("/studio/api/projects", json("POST", { name }));
    $("new-project-name").value = "";
    for (const c of ["Class 1", "Class 2"]) await api(`${projectUrl(info.name)}/classes`, json("POST", { name: c }));
    location.hash = `project=${enc(info.name)}`;
  } catch (err) { notify(err.message); }
});

async function openProject(name) {
  stopLive(); stopStream();
  state.project = name; state.lastEvent = 0;
  $("projects-view").hidden = true; $("project-view").hidden = false;
  $("project-name").textContent = name; document.title = `${name}: Studio`;
  $("cell-images").replaceChildren(); $("try-results").replaceChildren();
  await refresh();
  const job = state.info && state.info.job;
  if (job && (job.status === "queued" || job.status === "running")) followJob();
}
$("back").addEventListener("click", () => { location.hash = ""; });
$("delete-project").addEventListener("click", async () => {
  if (!confirm(`Delete the project "${state.project}" with all its images and its model?`)) return;
  try { await api(projectUrl(), { method: "DELETE" }); location.hash = ""; } catch (err) { notify(err.message); }
});

// Everything of the open project: classes, the model and its evaluation, the job. `thumbs`: the class
// whose thumbnails to reload ("all", or none); new class cards always load theirs.
async function refresh(thumbs = "all") {
  let info;
  try { info = await api(projectUrl()); } catch (err) {
    notify(err.status === 404 ? `No project named "${state.project}".` : err.message);
    if (err.status === 404) location.hash = "";
    return;
  }
  state.info = info;
  $("project-folder").textContent = `Folder: ${info.folder} (${info.images} of at most ` +
    `${info.limits.images_per_project} images)`;
  await renderClasses(info, thumbs);
  showModel(info);
  showJob(info.job || info.last_job);
}

// ---- classes --------------------------------------------------------------------------------------
async function renderClasses(info, thumbs) {
  const box = $("classes");
  const cards = new Map([...box.querySelectorAll(".class-card")].map(c => [c.dataset.class, c]));
  const wanted = info.classes.map(c => c.name);
  for (const [name, card] of cards) if (!wanted.includes(name)) { stopCamera(card); card.remove(); }
  const load = [];
  for (const c of info.classes) {
    let card = cards.get(c.name);
    if (!card) { card = classCard(c.name); load.push(card); }
    else if (thumbs === "all" || thumbs === c.name) load.push(card);
    box.append(card);  // keeps the classes in order (sorted, as the model's class indices are)
    card.querySelector(".count").textContent = `${c.images} image${c.images === 1 ? "" : "s"}`;
  }
  if (!state.pasteTarget || (state.pasteTarget !== "try" && !wanted.includes(state.pasteTarget))) {
    setPasteTarget(wanted[0] || null);
  } else setPasteTarget(state.pasteTarget);
  await Promise.all(load.map(loadThumbs));
}

function classCard(name) {
  const card = el("div", "class-card"); card.dataset.class = name; card.tabIndex = -1;
  const head = el("div", "class-head");
  const input = el("input", "class-name"); input.value = name; input.maxLength = 64;
  input.setAttribute("aria-label", "class name");
  const del = el("button", "delete-class", "Delete"); del.type = "button"; del.title = "Delete this class and its images";
  head.append(input, el("span", "count"), del);
  const row = el("div", "add-row");
  const upload = el("label", "upload button", "Upload");
  const file = el("input", "file-input"); file.type = "file"; file.accept = "image/*"; file.multiple = true; file.hidden = true;
  upload.append(file);
  const cam = el("button", "webcam-toggle", "Webcam"); cam.type = "button";
  row.append(upload, cam, el("span", "hint", "or drop / paste images here"));
  const webcam = el("div", "webcam"); webcam.hidden = true;
  const video = el("video"); video.playsInline = true; video.muted = true;
  const hold = el("button", "hold-record", "Hold to record"); hold.type = "button";
  webcam.append(video, hold, el("span", "burst hint"));
  card.append(head, row, webcam, el("div", "thumbs"), el("div", "more hint"));

  input.addEventListener("change", () => renameClass(card, input));
  input.addEventListener("keydown", e => { if (e.key === "Enter") input.blur(); });
  del.addEventListener("click", async () => {
    if (!confirm(`Delete the class "${card.dataset.class}" and its images?`)) return;
    try { await api(`${projectUrl()}/classes/${enc(card.dataset.class)}`, { method: "DELETE" }); await refresh(null); }
    catch (err) { notify(err.message); }
  });
  file.addEventListener("change", () => { addFiles(card, [...file.files]); file.value = ""; });
  cam.addEventListener("click", () => (webcam.hidden ? startCamera(card) : stopCamera(card)));
  ["dragenter", "dragover"].forEach(t => card.addEventListener(t, e => { e.preventDefault(); card.classList.add("over"); }));
  ["dragleave", "drop"].forEach(t => card.addEventListener(t, e => { e.preventDefault(); card.classList.remove("over"); }));
  card.addEventListener("drop", e => addFiles(card, [...e.dataTransfer.files]));
  card.addEventListener("pointerdown", () => setPasteTarget(card.dataset.class));
  card.addEventListener("focusin", () => setPasteTarget(card.dataset.class));
  holdToRecord(card, hold, video);
  return card;
}

async function renameClass(card, input) {
  const old = card.dataset.class, name = input.value.trim();
  if (!name || name === old) { input.value = old; return; }
  try {
    await api(`${projectUrl()}/classes/${enc(old)}`, json("PATCH", { name }));
    card.dataset.class = name;
    if (state.pasteTarget === old) state.pasteTarget = name;
    await refresh(null);
  } catch (err) { input.value = old; notify(err.message); }
}
$("add-class").addEventListener("click", async () => {
  const names = new Set((state.info ? state.info.classes : []).map(c => c.name));
  let i = names.size + 1;
  while (names.has(`Class ${i}`)) i++;
  try { await api(`${projectUrl()}/classes`, json("POST", { name: `Class ${i}` })); await refresh(null); }
  catch (err) { notify(err.message); }
});

async function loadThumbs(card) {
  if (!card) return;
  const name = card.dataset.class;
  let thumbs;
  try { thumbs = await api(`${projectUrl()}/classes/${enc(name)}/images?limit=${THUMBS_SHOWN}`); }
  catch (err) { return notify(err.message); }
  const box = card.querySelector(".thumbs"); box.replaceChildren();
  for (const t of thumbs) {
    const fig = el("figure", "thumb"); fig.dataset.id = t.id;
    const img = el("img"); img.alt = `example of ${name}`; if (t.thumbnail) img.src = t.thumbnail;
    const remove = el("button", "remove", "\u00d7"); remove.type = "button"; remove.title = "Remove this image";
    remove.setAttribute("aria-label", "remove this image");
    remove.addEventListener("click", async () => {
      try {
        await api(`${projectUrl()}/classes/${enc(card.dataset.class)}/images/${enc(t.id)}`, { method: "DELETE" });
        fig.remove(); await refresh(card.dataset.class);
      } catch (err) { notify(err.message); }
    });
    fig.append(img, remove); box.append(fig);
  }
  const count = (state.info.classes.find(c => c.name === name) || { images: 0 }).images;
  card.querySelector(".more").textContent = count > thumbs.length ? `and ${count - thumbs.length} more` : "";
}

// Uploads go out in batches of BATCH files, one request at a time per class; refused files are named.
async function addFiles(card, files) {
  files = files.filter(f => f && f.size !== undefined);
  if (!files.length) return;
  const status = card.querySelector(".burst");
  const problems = [];
  for (let i = 0; i < files.length; i += BATCH) {
    const form = new FormData();
    for (const f of files.slice(i, i + BATCH)) form.append("files", f, f.name || "pasted.png");
    try {
      const r = await api(`${projectUrl()}/classes/${enc(card.dataset.class)}/images`, { method: "POST", body: form });
      for (const x of r.refused) problems.push(x.error);
    } catch (err) { problems.push(err.message); if (err.status === 507 || err.status === 409) break; }
    if (status) status.textContent = `uploading ${Math.min(i + BATCH, files.length)} of ${files.length}`;
  }
  if (status) status.textContent = "";
  if (problems.length) notify(problems.slice(0, 3).join("; ") + (problems.length > 3 ? ` (and ${problems.length - 3} more)` : ""));
  await refresh(card.dataset.class);
}

function setPasteTarget(target) {
  state.pasteTarget = target;
  for (const c of document.querySelectorAll(".class-card")) c.classList.toggle("paste-target", c.dataset.class === target);
  $("try-section").classList.toggle("paste-target", target === "try");
}
window.addEventListener("paste", e => {
  if (!state.project || (e.target && e.target.tagName === "INPUT" && e.target.type !== "file")) return;
  const files = [...e.clipboardData.items].filter(i => i.kind === "file").map(i => i.getAsFile());
  if (!files.length) return;
  e.preventDefault();
  if (state.pasteTarget === "try") return tryFiles(files);
  const card = document.querySelector(`.class-card[data-class="${CSS.escape(state.pasteTarget || "")}"]`);
  if (card) addFiles(card, files);
});

// ---- webcam: one camera stream shared by every view that shows it ---------------------------------
async function camera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("the webcam needs this page on https:// or on localhost");
  }
  if (!state.stream) state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  state.cameras++;
  return state.stream;
}
function releaseCamera() {
  state.cameras = Math.max(0, state.cameras - 1);
  if (!state.cameras && state.stream) { state.stream.getTracks().forEach(t => t.stop()); state.stream = null; }
}
async function startCamera(card) {
  const box = card.querySelector(".webcam"), video = box.querySelector("video");
  try { video.srcObject = await camera(); await video.play(); } catch (err) { return notify(`Webcam: ${err.message}`); }
  box.hidden = false; card.querySelector(".webcam-toggle").textContent = "Close webcam";
}
function stopCamera(card) {
  const box = card.querySelector(".webcam");
  if (box.hidden) return;
  box.hidden = true; box.querySelector("video").srcObject = null;
  card.querySelector(".webcam-toggle").textContent = "Webcam";
  releaseCamera();
}
function grab(video) {
  // A centred square of the frame, FRAME_SIDE pixels a side, as a JPEG blob (the server re-encodes it).
  const side = Math.min(video.videoWidth, video.videoHeight);
  if (!side) return Promise.resolve(null);
  const canvas = el("canvas"); canvas.width = canvas.height = FRAME_SIDE;
  canvas.getContext("2d").drawImage(video, (video.videoWidth - side) / 2, (video.videoHeight - side) / 2, side, side,
                                    0, 0, FRAME_SIDE, FRAME_SIDE);
  return new Promise(resolve => canvas.toBlob(resolve, "image/jpeg", 0.92));
}
// Hold the button (mouse, touch or Space/Enter) to take BURST_FPS frames a second; they upload in batches.
function holdToRecord(card, button, video) {
  let timer = null, frames = [], taken = 0, sending = null;
  const status = card.querySelector(".burst");
  const flush = async () => {
    while (frames.length) {
      const batch = frames.splice(0, BATCH).map((b, i) => new File([b], `webcam-${Date.now()}-${i}.jpg`, { type: "image/jpeg" }));
      const form = new FormData(); batch.forEach(f => form.append("files", f, f.name));
      try { await api(`${projectUrl()}/classes/${enc(card.dataset.class)}/images`, { method: "POST", body: form }); }
      catch (err) { notify(err.message); frames = []; }
    }
    sending = null;
    if (!timer) { await refresh(card.dataset.class); if (!timer) status.textContent = ""; }
  };
  const start = e => {
    if (e) e.preventDefault();
    if (timer) return;
    button.classList.add("recording"); taken = 0;
    timer = setInterval(async () => {
      const blob = await grab(video);
      if (!blob) return;
      frames.push(blob); taken++;
      status.textContent = `recording: ${taken} frame${taken === 1 ? "" : "s"}`;
      if (frames.length >= BATCH && !sending) sending = flush();
    }, 1000 / BURST_FPS);
  };
  const stop = () => {
    if (!timer) return;
    clearInterval(timer); timer = null; button.classList.remove("recording");
    setTimeout(() => { if (!sending) sending = flush(); }, 1000 / BURST_FPS + 50);  // the last frame's blob
  };
  button.addEventListener("pointerdown", start);
  ["pointerup", "pointerleave", "pointercancel"].forEach(t => button.addEventListener(t, stop));
  button.addEventListener("keydown", e => { if ((e.key === " " || e.key === "Enter") && !e.repeat) start(e); });
  button.addEventListener("keyup", e => { if (e.key === " " || e.key === "Enter") stop(); });
  button.addEventListener("contextmenu", e => e.preventDefault());  // a long touch is not a right click
}

// ---- training: one button, live progress from server-sent events (read with fetch, so the API key goes too)
$("train").addEventListener("click", async () => {
  $("job-error").hidden = true;
  try { const job = await api(`${projectUrl()}/train`, { method: "POST" }); showJob(job); followJob(); }
  catch (err) { showError(err.message); }
});
$("cancel").addEventListener("click", async () => {
  try { showJob(await api(`${projectUrl()}/cancel`, { method: "POST" })); } catch (err) { notify(err.message); }
});

function stopStream() { if (state.streamAbort) state.streamAbort.abort(); state.streamAbort = null; }
async function followJob() {
  stopStream();
  const controller = new AbortController(), project = state.project;
  state.streamAbort = controller;
  try {
    const response = await fetch(`${projectUrl()}/events?after=${state.lastEvent}`, { headers: headers(), signal: controller.signal });
    if (!response.ok) throw new Error(`events: ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter(l => l.startsWith("data:")).map(l => l.slice(5).trim()).join("\n");
        if (data && state.project === project) onEvent(JSON.parse(data));
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") notify(`Lost the training progress (${err.message}); reload to see it.`);
  } finally {
    if (state.streamAbort === controller) state.streamAbort = null;
  }
}
async function onEvent(e) {
  state.lastEvent = Math.max(state.lastEvent, e.id);
  const progress = $("progress");
  if (e.type === "queued") status(e.position ? `Queued: ${e.position} job(s) ahead of this one` : "Starting...");
  else if (e.type === "started" || e.type === "phase") status(phaseText(e.phase));
  else if (e.type === "epoch") {
    progress.max = e.epochs; progress.value = e.epoch;
    const val = typeof e.val_accuracy === "number" ? `, validation accuracy ${pct(e.val_accuracy)}` : "";
    status(`Epoch ${e.epoch} of ${e.epochs}: loss ${e.loss.toFixed(3)}, training accuracy ${pct(e.accuracy)}${val}`);
  } else if (e.type === "cancelling") status("Cancelling after this epoch...");
  else if (["done", "failed", "cancelled"].includes(e.type)) await refresh(null);
  busy(["queued", "running"].includes(e.status));
}
const phaseText = p => ({ starting: "Starting...", "reading images": "Reading the images...",
  training: "Training (fine-tuning the bundled weights)...", evaluating: "Evaluating on the held-out images...",
  cancelling: "Cancelling after this epoch..." })[p] || p;
function status(text) { $("status").textContent = text; }
function showError(text) { const e = $("job-error"); e.textContent = text; e.hidden = !text; }
function busy(on) {
  $("train").disabled = on; $("cancel").hidden = !on;
  $("project-view").classList.toggle("training", on);
}
function showJob(job) {
  if (!job) { status(""); busy(false); showError(""); return; }
  const active = job.status === "queued" || job.status === "running";
  busy(active);
  if (job.status === "failed") { showError(`Training failed: ${job.error}`); status("The project is as it was."); }
  else showError("");
  if (job.status === "cancelled") status("Training was cancelled; the previous model, if any, is kept.");
  if (job.status === "done") {
    const r = job.result || {};
    const secs = typeof job.seconds === "number" ? ` in ${job.seconds.toFixed(1)} s` : "";
    status(`Trained${secs}` + (r.epochs ? ` (${r.epochs} epochs)` : "") + ".");
    $("progress").max = 1; $("progress").value = 1;
  }
  if (active && job.epochs) { $("progress").max = job.epochs; $("progress").value = job.epoch; }
  if (active) status(job.status === "queued" ? "Queued..." : phaseText(job.phase));
}

// ---- the trained model: accuracy, per class, confusion matrix with its images ---------------------
async function showModel(info) {
  const has = Boolean(info.model);
  $("results").hidden = !has;
  $("try-hint").textContent = has ? `The model of ${new Date(1000 * info.model.trained_at).toLocaleString()}, ` +
    `classes: ${info.model.classes.join(", ")}.` : "Train a model first.";
  for (const b of document.querySelectorAll("#export-section button, #try-webcam")) b.disabled = !has;
  $("try-drop").classList.toggle("disabled", !has);
  if (!has) return;
  $("stale").hidden = !info.model.stale;
  let ev;
  try { ev = await api(`${projectUrl()}/evaluation`); } catch (err) { return notify(err.message); }
  $("accuracy").textContent = `Accuracy ${pct(ev.accuracy)} on ${ev.images_evaluated} ${ev.split} images ` +
    `(a fifth of each class, kept out of training); ${ev.uncertain} flagged uncertain.`;
  const per = $("per-class"); per.replaceChildren();
  for (const c of ev.per_class) {
    const row = el("div", "bar"), track = el("div", "track"), fill = el("div", "fill");
    fill.style.width = `${(100 * (c.accuracy || 0)).toFixed(1)}%`; track.append(fill);
    const label = el("span", "label", c.class); label.title = c.class;
    const unc = c.uncertain ? `, ${c.uncertain} uncertain` : "";
    row.append(label, track, el("span", "score", c.accuracy === null ? "-" : `${pct(c.accuracy)} of ${c.images}${unc}`));
    per.append(row);
  }
  const table = $("confusion"); table.replaceChildren();
  const head = el("tr"); head.append(el("th", "corner", "actual \\ said"));
  for (const c of ev.classes) { const th = el("th", "", c); th.scope = "col"; head.append(th); }
  table.append(head);
  ev.confusion.forEach((row, i) => {
    const tr = el("tr"), th = el("th", "", ev.classes[i]); th.scope = "row"; tr.append(th);
    row.forEach((n, j) => {
      const td = el("td", `cell ${i === j ? "diag" : n ? "miss" : ""}`, String(n));
      td.dataset.actual = ev.classes[i]; td.dataset.predicted = ev.classes[j];
      td.tabIndex = 0; td.setAttribute("role", "button");
      td.title = `${n} image(s) of ${ev.classes[i]} the model called ${ev.classes[j]}`;
      td.addEventListener("click", () => showCell(td));
      td.addEventListener("keydown", e => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); showCell(td); } });
      tr.append(td);
    });
    table.append(tr);
  });
}
async function showCell(td) {
  for (const c of document.querySelectorAll("#confusion td.selected")) c.classList.remove("selected");
  td.classList.add("selected");
  const box = $("cell-images"); box.replaceChildren();
  const { actual, predicted } = td.dataset;
  let images;
  try { images = await api(`${projectUrl()}/evaluation/cell?actual=${enc(actual)}&predicted=${enc(predicted)}`); }
  catch (err) { return notify(err.message); }
  box.append(el("h4", "", `Actual ${actual}, the model said ${predicted}: ${images.length} image${images.length === 1 ? "" : "s"}`));
  const grid = el("div", "thumbs");
  for (const im of images) {
    const fig = el("figure", `thumb labelled${im.uncertain ? " uncertain" : ""}`);
    const img = el("img"); img.alt = `${im.class} image`; if (im.thumbnail) img.src = im.thumbnail;
    const cap = el("figcaption", "", `${im.label} ${pct(im.score)}${im.uncertain ? " (uncertain)" : ""}`);
    if (im.reason) cap.title = im.reason;
    if (!im.thumbnail) cap.textContent += " (image removed)";
    fig.append(img, cap); grid.append(fig);
  }
  box.append(grid);
}

// ---- try it: uploads and a live webcam, on the project's model -------------------------------------
$("try-file").addEventListener("change", () => { tryFiles([...$("try-file").files]); $("try-file").value = ""; });
const tryDrop = $("try-drop");
["dragenter", "dragover"].forEach(t => tryDrop.addEventListener(t, e => { e.preventDefault(); tryDrop.classList.add("over"); }));
["dragleave", "drop"].forEach(t => tryDrop.addEventListener(t, e => { e.preventDefault(); tryDrop.classList.remove("over"); }));
tryDrop.addEventListener("drop", e => tryFiles([...e.dataTransfer.files]));
$("try-section").addEventListener("pointerdown", () => setPasteTarget("try"));

async function predict(files) {
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name || "image.png");
  return api(`${projectUrl()}/predict`, { method: "POST", body: form });
}
async function tryFiles(files) {
  for (const file of files.slice(0, BATCH)) {
    const card = el("div", "card"), img = el("img"), result = el("div", "result");
    img.alt = `your image: ${file.name || "pasted image"}`; img.src = URL.createObjectURL(file);
    result.append(el("div", "name", file.name || "pasted image"), el("div", "top", "classifying..."));
    card.append(img, result); $("try-results").prepend(card);
    try { showPrediction(result, (await predict([file]))[0]); card.classList.add("done"); }
    catch (err) { result.querySelector(".top").textContent = ""; result.append(el("div", "error", `Could not classify: ${err.message}`)); card.classList.add("failed"); }
  }
}
function showPrediction(result, p) {
  for (const old of result.querySelectorAll(".bar, .uncertain")) old.remove();
  const [best] = p.predictions;
  result.querySelector(".top").textContent = `${best.label} ${pct(best.score)}`;
  if (p.uncertain) result.append(el("div", "uncertain", `Uncertain: ${p.reason || "this may be none of the classes"}`));
  for (const q of p.predictions) {
    const row = el("div", "bar"), track = el("div", "track"), fill = el("div", "fill");
    fill.style.width = `${(100 * q.score).toFixed(1)}%`; track.append(fill);
    const label = el("span", "label", q.label); label.title = q.label;
    row.append(label, track, el("span", "score", pct(q.score)));
    result.append(row);
  }
}
$("try-webcam").addEventListener("click", () => (state.liveTimer ? stopLive() : startLive()));
async function startLive() {
  const video = $("try-video");
  try { video.srcObject = await camera(); await video.play(); } catch (err) { return notify(`Webcam: ${err.message}`); }
  $("try-live").hidden = false; $("try-webcam").textContent = "Stop webcam";
  const result = $("live-result");
  if (!result.querySelector(".top")) result.append(el("div", "top", "looking..."));
  let inFlight = false;
  state.liveTimer = setInterval(async () => {
    if (inFlight) return;
    inFlight = true;
    try {
      const blob = await grab(video);
      if (blob) showPrediction(result, (await predict([new File([blob], "webcam.jpg", { type: "image/jpeg" })]))[0]);
    } catch (err) { result.querySelector(".top").textContent = err.message; }
    finally { inFlight = false; }
  }, LIVE_MS);
}
function stopLive() {
  if (!state.liveTimer) return;
  clearInterval(state.liveTimer); state.liveTimer = null;
  $("try-live").hidden = true; $("try-video").srcObject = null; $("try-webcam").textContent = "Live webcam";
  releaseCamera();
}

// ---- export: each a download (fetched with the key, saved from a blob: URL) --------------------------
for (const button of document.querySelectorAll("#export-section button")) {
  button.addEventListener("click", async () => {
    const fmt = button.dataset.format, note = $("export-status");
    button.disabled = true;
    if (fmt === "onnx") note.textContent = "Exporting to ONNX (a few seconds the first time)...";
    try {
      const response = await api(`${projectUrl()}/export/${fmt}`);
      const blob = await response.blob();
      const a = el("a"); a.href = URL.createObjectURL(blob); a.download = downloadName(response, fmt);
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
      note.textContent = `Downloaded ${a.download} (${(blob.size / 2 ** 20).toFixed(1)} MiB).`;
    } catch (err) { note.textContent = `Export failed: ${err.message}`; }
    finally { button.disabled = false; }
  });
}
function downloadName(response, fmt) {
  const cd = response.headers.get("content-disposition") || "";
  const star = /filename\*=utf-8''([^;]+)/i.exec(cd), plain = /filename="?([^";]+)"?/i.exec(cd);
  if (star) return decodeURIComponent(star[1]);
  return plain ? plain[1] : `${state.project}.${fmt === "labels" ? "txt" : fmt}`;
}

// ---- the address says which project is open: #project=<name> ----------------------------------------
function route() {
  const m = /^#project=(.+)$/.exec(location.hash);
  if (m) openProject(decodeURIComponent(m[1])); else showProjects();
}
window.addEventListener("hashchange", route);
route();
