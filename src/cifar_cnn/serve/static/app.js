// The page's script: a file of its own so the Content-Security-Policy can forbid inline scripts.
const drop = document.getElementById("drop"), input = document.getElementById("file");
const results = document.getElementById("results");
const MAX_CHIPS = 40;  // beyond this many classes, the rest sit behind "and N more"
let numClasses = null;

// A server exposed beyond loopback needs an API key: asked for on a 401, kept for this tab only.
const keyForm = document.getElementById("keyform"), keyInput = document.getElementById("key");
function api(url, options = {}) {
  const key = sessionStorage.getItem("cifar-cnn-api-key");
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  return fetch(url, { ...options, headers }).then(response => {
    if (response.status === 401) keyForm.classList.add("shown");
    return response;
  });
}
keyForm.addEventListener("submit", e => {
  e.preventDefault();
  sessionStorage.setItem("cifar-cnn-api-key", keyInput.value.trim());
  keyForm.classList.remove("shown");
  loadModel();
});

// Everything about the model (name, input size, classes) comes from the server: no class list here.
function loadModel() {
  api("/v1/models").then(r => { if (!r.ok) throw new Error(r.status === 401 ? "API key needed" : r.statusText); return r.json(); }).then(([m]) => {
    numClasses = m.classes.length;
    const size = Array.isArray(m.input_size) ? m.input_size[m.input_size.length - 1] : m.input_size;
    const acc = typeof m.accuracy === "number" ? `, ${m.accuracy_label || "test accuracy"} ${(100 * m.accuracy).toFixed(1)}%` : "";
    document.getElementById("model").textContent =
      `Model "${m.name}" (sees images at ${size}\u00d7${size} px${acc}) knows ${numClasses} classes:`;
    document.title = `${m.name}: what is in your picture?`;
    const list = document.getElementById("classes");
    list.replaceChildren();
    for (const c of m.classes.slice(0, MAX_CHIPS)) list.append(el("li", "class", c));
    if (numClasses > MAX_CHIPS) {
      const more = el("li", "more"), details = el("details"), summary = el("summary", "", `and ${numClasses - MAX_CHIPS} more`);
      details.append(summary, document.createTextNode(m.classes.slice(MAX_CHIPS).join(", ")));
      more.append(details); list.append(more);
    }
  }).catch(err => {
    document.getElementById("model").textContent = `Could not load the model description (/v1/models): ${err.message}.`;
  });
}
loadModel();

function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }

async function classify(file) {
  const card = el("div", "card"); card.dataset.filename = file.name || "pasted image";
  const img = el("img"); img.alt = `your image: ${file.name || "pasted image"}`;
  const result = el("div", "result");
  result.append(el("div", "name", file.name || "pasted image"), el("div", "top", "classifying..."));
  card.append(img, result); results.prepend(card);
  const url = URL.createObjectURL(file); img.src = url;
  img.onerror = () => { img.removeAttribute("src"); img.alt = ""; img.classList.add("broken"); };
  const form = new FormData(); form.append("files", file, file.name || "pasted.png");
  try {
    const response = await api("/v1/predict", { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    show(result, body[0]);
    addWhy(card, img, url, file);
  } catch (err) {
    result.querySelector(".top").textContent = "";
    result.append(el("div", "error", "Could not classify: " + err.message));
    card.classList.add("failed");
  }
}

function show(result, prediction) {
  const [best] = prediction.predictions;
  result.querySelector(".top").textContent = `${best.label} ${(100 * best.score).toFixed(1)}%`;
  const these = numClasses ? `the model's ${numClasses} classes` : "the model's classes";
  // reason: "looks like none of the N classes" or "torn between X and Y" (older servers send none)
  if (prediction.uncertain) {
    const why = prediction.reason || `this may be none of ${these}`;
    result.append(el("div", "uncertain", `Uncertain: ${why}`));
  }
  for (const p of prediction.predictions) {
    const row = el("div", "bar"), track = el("div", "track"), fill = el("div", "fill");
    fill.style.width = `${(100 * p.score).toFixed(1)}%`; track.append(fill);
    const label = el("span", "label", p.label); label.title = p.label;
    row.append(label, track, el("span", "score", `${(100 * p.score).toFixed(1)}%`));
    result.append(row);
  }
  result.closest(".card").classList.add("done");
}

// "Why?": the picture with a heatmap of where the model found its answer (POST /v1/explain),
// in place of the thumbnail; pressed again, the plain picture comes back.
function addWhy(card, img, url, file) {
  const button = el("button", "why", "Why?"); button.type = "button";
  button.title = "show where in the picture the model found its answer";
  let overlay = null;
  button.addEventListener("click", async () => {
    if (overlay && img.src === overlay) { img.src = url; button.textContent = "Why?"; card.classList.remove("explained"); return; }
    if (!overlay) {
      button.disabled = true; button.textContent = "looking...";
      const form = new FormData(); form.append("file", file, file.name || "pasted.png");
      try {
        const response = await api("/v1/explain", { method: "POST", body: form });
        const body = await response.json();
        if (!response.ok) throw new Error(body.error || response.statusText);
        overlay = body.explanation;
      } catch (err) {
        button.disabled = false; button.textContent = "Why?";
        card.querySelector(".result").append(el("div", "error", "Could not explain: " + err.message));
        return;
      }
      button.disabled = false;
    }
    img.src = overlay; img.alt = "where the model looked (red: most)"; button.textContent = "Hide why";
    card.classList.add("explained");
  });
  card.querySelector(".result").append(button);
}

function handle(files) { for (const f of files) classify(f); }
input.addEventListener("change", () => { handle(input.files); input.value = ""; });
["dragenter", "dragover"].forEach(t => drop.addEventListener(t, e => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach(t => drop.addEventListener(t, e => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", e => handle(e.dataTransfer.files));
window.addEventListener("paste", e => {
  const files = [...e.clipboardData.items].filter(i => i.kind === "file").map(i => i.getAsFile());
  if (files.length) handle(files);
});
