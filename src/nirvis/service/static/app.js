// The investigator's page: upload a probe, show the aligned (and hallucinated) face, the top matches and the
// decision. Plain DOM; every text from the server is set with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function showError(msg) {
  const box = $("error");
  box.textContent = msg;
  box.hidden = !msg;
}

async function refreshStatus() {
  try {
    const r = await fetch("/health");
    const h = await r.json();
    const size = h.people == null ? "" : `${h.people} people, ${h.images} images`;
    $("status").textContent = `gallery: ${size}` + (h.read_only ? " · read-only service" : "");
  } catch (e) {
    $("status").textContent = "the service does not answer";
  }
}

function decisionText(d) {
  const thr = d.threshold == null ? "no threshold set" : `threshold ${Number(d.threshold).toFixed(3)}` +
    (d.far == null ? "" : `, set at FAR ${Number((100 * d.far).toPrecision(2))}%`);
  return d.person == null ? `No match (${thr})` : `Match: ${d.person} (${thr})`;
}

function render(res, file) {
  $("upload").src = URL.createObjectURL(file);
  const faces = res.faces || {};
  $("aligned").src = faces.aligned ? "data:image/png;base64," + faces.aligned : "";
  const hasHal = !!faces.hallucinated;
  $("hallucinated-fig").hidden = !hasHal;
  $("no-hallucination").hidden = hasHal || $("modality").value !== "nir";
  if (hasHal) $("hallucinated").src = "data:image/png;base64," + faces.hallucinated;

  const dec = $("decision");
  dec.textContent = decisionText(res.decision);
  dec.className = "decision " + (res.decision.person == null ? "decision-no" : "decision-yes");

  const list = $("matches");
  list.replaceChildren();
  for (const m of res.matches) {
    const li = document.createElement("li");
    li.className = "match" + (m.person === res.decision.person ? " decided" : "");
    li.dataset.person = m.person;
    const img = document.createElement("img");
    img.alt = "enrolled face of " + m.person;
    img.src = "/people/" + encodeURIComponent(m.person) + "/face";
    img.loading = "lazy";
    const name = document.createElement("span");
    name.className = "person";
    name.textContent = m.person;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = "score " + Number(m.score).toFixed(3);
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = Math.max(0, Math.min(1, m.score)) * 100 + "%";
    bar.appendChild(fill);
    li.append(img, name, score, bar);
    list.appendChild(li);
  }
  $("result").hidden = false;
  document.body.dataset.state = "done";
}

async function identify(ev) {
  ev.preventDefault();
  const file = $("probe").files[0];
  if (!file) { showError("choose an image first"); return; }
  const q = new URLSearchParams({ faces: "true", top: $("top").value || "5", modality: $("modality").value });
  if ($("channel").value) q.set("channel", $("channel").value);
  const body = new FormData();
  body.append("image", file);
  showError("");
  $("busy").hidden = false;
  $("go").disabled = true;
  document.body.dataset.state = "busy";
  try {
    const r = await fetch("/identify?" + q.toString(), { method: "POST", body });
    let data;
    try { data = await r.json(); } catch (e) { data = { detail: `HTTP ${r.status}` }; }
    if (!r.ok) {
      $("result").hidden = true;
      showError(typeof data.detail === "string" ? data.detail : `HTTP ${r.status}`);
      document.body.dataset.state = "error";
      return;
    }
    render(data, file);
  } catch (e) {
    showError("the service does not answer: " + e);
    document.body.dataset.state = "error";
  } finally {
    $("busy").hidden = true;
    $("go").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("submit", identify);
  refreshStatus();
});
