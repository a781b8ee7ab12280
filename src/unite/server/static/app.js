// unite search page: posts the query to /search and shows a grid of results with thumbnails.
"use strict";
const form = document.getElementById("search-form");
const results = document.getElementById("results");
const message = document.getElementById("message");
const keyInput = document.getElementById("api-key");

function headers() {
  const key = keyInput.value || localStorage.getItem("unite-api-key") || "";
  return key ? { Authorization: "Bearer " + key } : {};
}

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return minutes + ":" + (seconds - minutes * 60).toFixed(1).padStart(4, "0");
}

async function thumbnail(img, url) {
  const response = await fetch(url, { headers: headers() });
  if (response.ok) img.src = URL.createObjectURL(await response.blob());
}

function card(hit) {
  const element = document.createElement("article");
  element.className = "card";
  element.dataset.modality = hit.modality;
  element.dataset.id = hit.id;
  if (hit.thumbnail) {
    const img = document.createElement("img");
    img.alt = hit.id;
    img.className = "thumb";
    thumbnail(img, hit.thumbnail);
    element.appendChild(img);
  } else {
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = hit.text || hit.id;
    element.appendChild(text);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = hit.modality;
  meta.appendChild(badge);
  if (hit.start !== null && hit.start !== undefined) {
    const time = document.createElement("span");
    time.className = "badge time";
    time.textContent = clock(hit.start) + "–" + clock(hit.end);
    meta.appendChild(time);
  }
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(3);
  meta.appendChild(score);
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = hit.id;
  meta.appendChild(id);
  element.appendChild(meta);
  return element;
}

async function search(event) {
  if (event) event.preventDefault();
  const data = new FormData();
  const text = document.getElementById("query").value.trim();
  const file = document.getElementById("file").files[0];
  if (!text && !file) { message.textContent = "Type something or choose an image or video."; return; }
  if (text) data.append("text", text);
  if (file) data.append(file.type.startsWith("video/") ? "video" : "image", file);
  data.append("modality", document.getElementById("modality").value);
  data.append("k", document.getElementById("k").value);
  message.textContent = "Searching…";
  const response = await fetch("/search", { method: "POST", body: data, headers: headers() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    message.textContent = (body.error && body.error.message) || ("Error " + response.status);
    if (response.status === 401) keyInput.hidden = false;
    return;
  }
  if (keyInput.value) localStorage.setItem("unite-api-key", keyInput.value);
  message.textContent = body.results.length ? "" : "No results.";
  results.replaceChildren(...body.results.map(card));
  document.body.dataset.searches = String(Number(document.body.dataset.searches || 0) + 1);
}

form.addEventListener("submit", search);
document.getElementById("modality").addEventListener("change", () => {
  if (document.getElementById("query").value.trim() || document.getElementById("file").files.length) search();
});

fetch("/healthz").then((r) => r.json()).then((health) => {
  document.getElementById("status").textContent = health.items + " items · " + health.model;
  if (health.auth) keyInput.hidden = false;
}).catch(() => { document.getElementById("status").textContent = "server unreachable"; });
