"""The web page served at ``/``: pick or drop an image, ask, read the answer with its evidence marked.

One self-contained HTML document (inline CSS and JavaScript, no external assets, so it works
offline). It talks to the same ``/v1/chat/completions`` endpoint as any OpenAI client and keeps
the conversation in the page: the image goes in the first user turn, follow-ups are text only.
Large photos are scaled down in the browser (longest side 1024 px) before upload, since the
model resizes far below that anyway. Model text is inserted as text nodes, never as HTML.
When the server wants an API key (401), the page asks for it once and keeps it for the browser
tab only (gone when the tab closes).
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>selfsynth</title>
<style>
:root { --ink: #1d2330; --muted: #667085; --line: #d0d5dd; --accent: #2f5aa8; --mark: #ffe08a; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: var(--ink); background: #f6f7f9; }
header { padding: 12px 24px; background: #fff; border-bottom: 1px solid var(--line); display: flex;
  gap: 16px; align-items: baseline; }
header h1 { font-size: 20px; margin: 0; }
header span { color: var(--muted); font-size: 14px; }
main { display: grid; grid-template-columns: minmax(260px, 360px) 1fr; gap: 24px; padding: 24px;
  max-width: 1200px; margin: 0 auto; }
@media (max-width: 760px) { main { grid-template-columns: 1fr; } }
#drop { display: flex; flex-direction: column; align-items: center; justify-content: center; min-height: 220px;
  border: 2px dashed var(--line); border-radius: 12px; background: #fff; cursor: pointer; padding: 12px;
  text-align: center; color: var(--muted); }
#drop.over { border-color: var(--accent); background: #eef3fc; }
#preview { width: 100%; max-height: 320px; object-fit: contain; border-radius: 8px; margin-top: 8px; }
#reset { margin-top: 12px; }
#log { display: flex; flex-direction: column; gap: 12px; margin-bottom: 16px; }
.turn { padding: 12px 16px; border-radius: 12px; background: #fff; border: 1px solid var(--line); }
.turn.user { align-self: flex-end; background: #eef3fc; border-color: #c7d7f2; max-width: 80%; }
.who { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.answer { white-space: pre-wrap; overflow-wrap: anywhere; }
mark.ev { background: var(--mark); padding: 0 2px; border-radius: 3px; }
mark.ev.label { background: #b9e6c9; }
.evidence { margin-top: 8px; font-size: 14px; color: var(--muted); }
.evidence ul { display: inline; padding: 0; margin: 0; }
.evidence li { display: inline-block; margin: 2px 4px; padding: 1px 8px; border-radius: 999px;
  background: var(--mark); color: var(--ink); }
.evidence li.label { background: #b9e6c9; }
form { display: flex; gap: 8px; }
#question { flex: 1; padding: 10px 12px; font: inherit; border: 1px solid var(--line); border-radius: 8px; }
button { padding: 10px 16px; font: inherit; border: 0; border-radius: 8px; background: var(--accent);
  color: #fff; cursor: pointer; }
button:disabled { opacity: .5; cursor: default; }
#reset { background: #fff; color: var(--accent); border: 1px solid var(--accent); }
#status { color: var(--muted); min-height: 24px; }
#error { color: #b42318; min-height: 24px; }
</style>
</head>
<body>
<header><h1>selfsynth</h1><span id="model">connecting&hellip;</span></header>
<main>
  <section>
    <label id="drop" for="file" tabindex="0">
      <span id="drop-text">Drop an image here or click to choose one</span>
      <img id="preview" alt="the image you asked about" hidden>
    </label>
    <input type="file" id="file" accept="image/*" hidden>
    <button id="reset" type="button">New conversation</button>
  </section>
  <section>
    <div id="log" aria-live="polite"></div>
    <form id="ask">
      <input id="question" name="question" value="What is this and why?" autocomplete="off"
        aria-label="your question">
      <button id="send" type="submit">Ask</button>
    </form>
    <div id="status"></div>
    <div id="error" role="alert"></div>
  </section>
</main>
<script>
"use strict";
const MAX_SIDE = 1024;
const state = { model: null, image: null, messages: [] };
const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const KEY = "selfsynth-api-key";

async function api(path, options) {
  let r = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = Object.assign({}, (options || {}).headers);
    const key = sessionStorage.getItem(KEY);
    if (key) headers["Authorization"] = "Bearer " + key;
    r = await fetch(path, Object.assign({}, options, { headers }));
    if (r.status !== 401) return r;
    const typed = window.prompt("This server needs its API key:");
    if (!typed) return r;
    sessionStorage.setItem(KEY, typed.trim());
  }
  return r;
}

async function loadModel() {
  try {
    const r = await api("/v1/models");
    const j = await r.json();
    state.model = j.data[0].id;
    $("model").textContent = "model: " + state.model;
  } catch (e) {
    $("model").textContent = "server not reachable";
  }
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onerror = () => reject(new Error("could not read " + file.name));
    reader.onload = () => {
      const img = new Image();
      img.onerror = () => reject(new Error(file.name + " is not an image this browser can read"));
      img.onload = () => {
        const scale = Math.min(1, MAX_SIDE / Math.max(img.width, img.height));
        if (scale === 1) return resolve(reader.result);
        const c = document.createElement("canvas");
        c.width = Math.round(img.width * scale);
        c.height = Math.round(img.height * scale);
        c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
        resolve(c.toDataURL("image/jpeg", 0.92));
      };
      img.src = reader.result;
    };
    reader.readAsDataURL(file);
  });
}

function resetConversation() {
  state.messages = [];
  $("log").replaceChildren();
  $("error").textContent = "";
  $("question").value = "What is this and why?";
}

async function setImage(file) {
  if (!file) return;
  $("error").textContent = "";
  try {
    state.image = await readImage(file);
  } catch (e) {
    $("error").textContent = e.message;
    return;
  }
  $("preview").src = state.image;
  $("preview").hidden = false;
  $("drop-text").textContent = file.name + " (click or drop to change)";
  resetConversation();
}

function renderAnswer(reply) {
  const turn = el("div", "turn assistant");
  turn.append(el("div", "who", "answer"));
  const answer = el("div", "answer");
  const detail = {};
  (reply.evidence_detail || []).forEach((d) => { detail[d.concept] = d; });
  const segments = reply.evidence_segments || [{ text: reply.content, concept: null }];
  segments.forEach((s) => {
    if (!s.concept) { answer.append(document.createTextNode(s.text)); return; }
    const d = detail[s.concept] || { kind: "concept", labels: [] };
    const m = el("mark", "ev " + d.kind, s.text);
    m.title = d.kind === "label" ? "class name" : s.concept + (d.labels.length ? " (" + d.labels.join(", ") + ")" : "");
    m.dataset.concept = s.concept;
    answer.append(m);
  });
  turn.append(answer);
  if (reply.evidence !== undefined) {
    const ev = el("div", "evidence");
    if (reply.evidence.length === 0) {
      ev.textContent = "No known concepts cited.";
    } else {
      ev.append("Evidence: ");
      const ul = el("ul");
      reply.evidence.forEach((c) => {
        const d = detail[c] || { kind: "concept", labels: [] };
        const li = el("li", d.kind, c);
        if (d.labels.length && d.kind !== "label") li.title = d.labels.join(", ");
        ul.append(li);
      });
      ev.append(ul);
    }
    turn.append(ev);
  }
  $("log").append(turn);
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  $("error").textContent = "";
  if (!state.image) { $("error").textContent = "Choose or drop an image first."; return; }
  if (!question) { $("error").textContent = "Type a question."; return; }
  const content = state.messages.length === 0
    ? [{ type: "image_url", image_url: { url: state.image } }, { type: "text", text: question }]
    : question;
  const messages = state.messages.concat([{ role: "user", content }]);
  const turn = el("div", "turn user");
  turn.append(el("div", "who", "you"), el("div", "answer", question));
  $("log").append(turn);
  $("send").disabled = true;
  $("status").textContent = "Thinking\\u2026";
  try {
    const r = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: state.model || undefined, messages }),
    });
    const j = await r.json().catch(() => ({ error: { message: "HTTP " + r.status } }));
    if (!r.ok) throw new Error(j.error ? j.error.message : "HTTP " + r.status);
    const content = j.choices[0].message.content;
    state.messages = messages.concat([{ role: "assistant", content }]);
    renderAnswer({ content, evidence: j.evidence, evidence_detail: j.evidence_detail,
      evidence_segments: j.evidence_segments });
    $("question").value = "";
    $("question").placeholder = "Ask a follow-up question";
  } catch (e) {
    turn.remove();
    $("error").textContent = e.message;
  } finally {
    $("send").disabled = false;
    $("status").textContent = "";
  }
}

const drop = $("drop");
$("file").addEventListener("change", (e) => setImage(e.target.files[0]));
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => setImage(e.dataTransfer.files[0]));
$("ask").addEventListener("submit", ask);
$("reset").addEventListener("click", resetConversation);
loadModel();
</script>
</body>
</html>
"""
