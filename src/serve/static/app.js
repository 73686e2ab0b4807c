// sam-cobot's page: prompts in, masks out, through the JSON API of `sam-cobot serve`
// (docs/serve.md). Plain JavaScript, no build step and nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = [[30, 144, 255], [255, 165, 0], [186, 85, 211], [0, 206, 209], [255, 215, 0],
  [255, 105, 180], [154, 205, 50], [139, 69, 19], [70, 130, 180], [220, 20, 60]];

const state = {
  bytes: null,        // the image file's bytes (uploads), or null for a served image
  name: null,         // the served image's name
  bitmap: null,       // the decoded image, for drawing
  imageId: null,      // its SHA-256, as the server names it
  points: [],         // [x, y, label]
  box: null,          // [x1, y1, x2, y2]
  history: [],        // prompt states before each action, for undo
  views: [],          // one per model shown: {model, el, result, picked, everything}
};

function setStatus(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = kind;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// COCO's compressed RLE string → run lengths (pycocotools' rleFrString).
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1, c = 0;
    while (more) {
      c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// A segmentation {size: [h, w], counts} → row-major Uint8Array of 0/1.
function decodeMask(segmentation) {
  const [h, w] = segmentation.size;
  const mask = new Uint8Array(h * w);
  let at = 0, on = 0;
  for (const n of rleCounts(segmentation.counts)) {
    if (on) for (let k = at; k < at + n; k++) mask[(k % h) * w + Math.floor(k / h)] = 1;
    at += n;
    on ^= 1;
  }
  return mask;
}

function paint(ctx, mask, w, h, colour, alpha) {
  const image = ctx.getImageData(0, 0, w, h);
  for (let i = 0; i < mask.length; i++) {
    if (!mask[i]) continue;
    for (let c = 0; c < 3; c++) image.data[4 * i + c] = colour[c];
    image.data[4 * i + 3] = Math.max(image.data[4 * i + 3], alpha);
  }
  ctx.putImageData(image, 0, 0);
}

function makeViews() {
  const ids = [$("model").value, $("compare").value].filter((id, i, all) => id && all.indexOf(id) === i);
  const views = $("views");
  views.innerHTML = "";
  state.views = ids.map((model) => {
    const el = $("view-template").content.firstElementChild.cloneNode(true);
    el.querySelector(".name").textContent = model;
    views.appendChild(el);
    const overlay = el.querySelector(".overlay");
    overlay.addEventListener("contextmenu", (e) => e.preventDefault());
    overlay.addEventListener("mousedown", onDown);
    overlay.addEventListener("mouseup", onUp);
    return { model, el, result: null, picked: 0, everything: null };
  });
  drawAll();
}

function imageCoords(event) {
  const rect = event.target.getBoundingClientRect();
  const sx = state.bitmap.width / rect.width, sy = state.bitmap.height / rect.height;
  return [(event.clientX - rect.left) * sx, (event.clientY - rect.top) * sy];
}

let pressed = null;
function onDown(event) {
  if (!state.imageId) return;
  pressed = { at: imageCoords(event), button: event.button };
}

function onUp(event) {
  if (!pressed) return;
  const [x0, y0] = pressed.at, [x1, y1] = imageCoords(event);
  const button = pressed.button;
  pressed = null;
  state.history.push({ points: state.points.slice(), box: state.box });
  if (Math.hypot(x1 - x0, y1 - y0) > 4) {
    state.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
  } else {
    const negative = button === 2 || $("negative").checked;
    state.points.push([x0, y0, negative ? 0 : 1]);
  }
  predictAll();
}

async function openImage() {
  setStatus("Computing the image embedding…", "busy");
  // No prompts until every view has the embedding (clicks before that would be lost).
  state.imageId = null;
  state.points = []; state.box = null; state.history = [];
  for (const view of state.views) { view.result = null; view.everything = null; }
  try {
    const source = state.bytes ? new Blob([state.bytes]) : await (await fetch(`/images/${encodeURIComponent(state.name)}`)).blob();
    state.bitmap = await createImageBitmap(source);
    drawAll();
    let imageId = null;
    const done = [];
    for (const view of state.views) {
      const query = `model=${encodeURIComponent(view.model)}` + (state.name ? `&name=${encodeURIComponent(state.name)}` : "");
      const answer = await api(`/embed?${query}`, { method: "POST", body: state.bytes || undefined });
      imageId = answer.image;
      done.push(`${view.model} in ${answer.seconds.toFixed(2)} s${answer.cached ? " (cached)" : ""}`);
    }
    state.imageId = imageId;
    setStatus(`Embedded by ${done.join(", ")}. Click or drag on the image.`);
  } catch (e) {
    setStatus(e.message, "error");
  }
}

async function predictAll() {
  if (!state.points.length && !state.box) {
    for (const view of state.views) view.result = null;
    drawAll();
    return;
  }
  for (const view of state.views) {
    try {
      view.result = await api("/predict", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          model: view.model, image: state.imageId, points: state.points,
          boxes: state.box ? [state.box] : [], multimask: $("multimask").checked,
        }),
      });
      const ious = view.result.masks.map((m) => m.predicted_iou);
      view.picked = ious.indexOf(Math.max(...ious));
      view.everything = null;
      setStatus(`${view.model}: ${(1000 * view.result.seconds).toFixed(0)} ms`);
    } catch (e) {
      setStatus(e.message, "error");
    }
  }
  drawAll();
}

async function everythingAll() {
  if (!state.imageId) return;
  setStatus("Segmenting everything…", "busy");
  for (const view of state.views) {
    try {
      const settings = { points_per_side: +$("pps").value, pred_iou_thresh: +$("iou").value, stability_score_thresh: +$("stability").value };
      view.everything = await api("/everything", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: view.model, image: state.imageId, settings }),
      });
      view.result = null;
      setStatus(`${view.model}: ${view.everything.length} masks`);
    } catch (e) {
      setStatus(e.message, "error");
    }
  }
  drawAll();
}

function drawAll() {
  for (const view of state.views) draw(view);
}

function draw(view) {
  const image = view.el.querySelector(".image"), overlay = view.el.querySelector(".overlay");
  const candidates = view.el.querySelector(".candidates");
  candidates.innerHTML = "";
  view.el.querySelector(".iou").textContent = "";
  if (!state.bitmap) return;
  const { width: w, height: h } = state.bitmap;
  for (const c of [image, overlay]) { c.width = w; c.height = h; }
  image.getContext("2d").drawImage(state.bitmap, 0, 0);
  const ctx = overlay.getContext("2d");
  if (view.everything) {
    const order = view.everything.map((m, i) => i).sort((a, b) => view.everything[b].area - view.everything[a].area);
    order.forEach((i, n) => paint(ctx, decodeMask(view.everything[i].segmentation), w, h, COLOURS[n % COLOURS.length], 130));
  }
  if (view.result && view.result.masks.length) {
    const masks = view.result.masks;
    const mask = masks[view.picked];
    paint(ctx, decodeMask(mask.segmentation), w, h, COLOURS[0], 115);
    view.el.querySelector(".iou").textContent = `predicted IoU ${mask.predicted_iou.toFixed(3)}`;
    if (masks.length > 1) masks.forEach((m, i) => candidates.appendChild(thumbnail(view, m, i, w, h)));
  }
  drawPrompts(ctx, w, h);
}

function thumbnail(view, mask, index, w, h) {
  const figure = document.createElement("figure");
  if (index === view.picked) figure.className = "picked";
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(state.bitmap, 0, 0);
  paint(ctx, decodeMask(mask.segmentation), w, h, COLOURS[0], 160);
  const caption = document.createElement("figcaption");
  caption.textContent = mask.predicted_iou.toFixed(3);
  figure.append(canvas, caption);
  figure.addEventListener("click", () => { view.picked = index; draw(view); });
  return figure;
}

function drawPrompts(ctx, w, h) {
  const r = Math.max(4, Math.min(w, h) / 120);
  if (state.box) {
    const [x1, y1, x2, y2] = state.box;
    ctx.lineWidth = Math.max(2, r / 2);
    ctx.strokeStyle = "rgb(30,144,255)";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }
  for (const [x, y, label] of state.points) {
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = label ? "rgb(0,200,0)" : "rgb(230,0,0)";
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "white";
    ctx.stroke();
  }
}

function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function downloadMask() {
  const view = state.views[0];
  if (!view || !view.result || !view.result.masks.length) return setStatus("No mask yet.", "error");
  const mask = decodeMask(view.result.masks[view.picked].segmentation);
  const { width: w, height: h } = state.bitmap;
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  mask.forEach((on, i) => { image.data.fill(on ? 255 : 0, 4 * i, 4 * i + 3); image.data[4 * i + 3] = 255; });
  ctx.putImageData(image, 0, 0);
  canvas.toBlob((blob) => download("mask.png", blob), "image/png");
}

function downloadCoco() {
  const view = state.views[0];
  const records = view && (view.everything || (view.result && view.result.masks.map((m) => ({
    segmentation: m.segmentation, area: m.area, bbox: m.bbox, predicted_iou: m.predicted_iou,
  }))));
  if (!records) return setStatus("No masks yet.", "error");
  download("masks.json", new Blob([JSON.stringify(records)], { type: "application/json" }));
}

function downloadPrompts() {
  const prompts = { image: state.imageId, points: state.points, boxes: state.box ? [state.box] : [] };
  download("prompts.json", new Blob([JSON.stringify(prompts)], { type: "application/json" }));
}

async function start() {
  const models = await api("/models");
  for (const m of models) {
    const label = m.adapter ? `${m.id} (${m.method})` : m.id;
    $("model").add(new Option(label, m.id));
    $("compare").add(new Option(label, m.id));
  }
  for (const name of await api("/images")) $("listed").add(new Option(name, name));
  makeViews();
  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    state.bytes = await file.arrayBuffer();
    state.name = null;
    openImage();
  });
  $("listed").addEventListener("change", (e) => {
    if (!e.target.value) return;
    state.bytes = null;
    state.name = e.target.value;
    openImage();
  });
  for (const id of ["model", "compare"]) $(id).addEventListener("change", () => { makeViews(); if (state.bitmap) openImage(); });
  $("multimask").addEventListener("change", predictAll);
  $("undo").addEventListener("click", () => {
    const last = state.history.pop();
    if (!last) return;
    state.points = last.points; state.box = last.box;
    predictAll();
  });
  $("clear").addEventListener("click", () => {
    state.history.push({ points: state.points.slice(), box: state.box });
    state.points = []; state.box = null;
    for (const view of state.views) view.everything = null;
    predictAll();
  });
  $("everything").addEventListener("click", everythingAll);
  $("download-mask").addEventListener("click", downloadMask);
  $("download-coco").addEventListener("click", downloadCoco);
  $("download-prompts").addEventListener("click", downloadPrompts);
}

start().catch((e) => setStatus(e.message, "error"));
