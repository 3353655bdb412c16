"""The viewer's page: one HTML document with its script (served by :mod:`bridge.viewer`).

Frames arrive as server-sent events with their due time (wall clock, seconds); each is decoded as
soon as it arrives and put on screen when it is due — at once when it is already due — unless a
frame due later is already showing. ``window.bb`` keeps what was shown and when, for tests and for
a curious performer's console.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bendbridge</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
html, body { margin: 0; height: 100%; background: #000; overflow: hidden; }
#frame { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain;
         image-rendering: pixelated; }
#overlay { position: absolute; left: 12px; top: 10px; color: #eee; font: 13px/1.45 ui-monospace, monospace;
           background: rgba(0,0,0,.55); padding: 8px 10px; border-radius: 6px; min-width: 220px; }
#overlay.hidden { display: none; }
#stats { white-space: pre-line; margin-bottom: 4px; }
.meter { display: flex; align-items: center; gap: 6px; }
.meter b { font-weight: normal; width: 120px; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.meter i { display: block; height: 6px; background: #4fc3f7; }
.meter span { width: 70px; height: 6px; background: #333; display: block; }
#wait { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
        color: #666; font: 15px sans-serif; }
</style></head>
<body>
<img id="frame" alt="">
<div id="wait">bendbridge: waiting for frames…</div>
<div id="overlay"><div id="stats"></div><div id="meters"></div></div>
<script>
"use strict";
const img = document.getElementById("frame"), overlay = document.getElementById("overlay");
const statsEl = document.getElementById("stats"), metersEl = document.getElementById("meters");
const params = new URLSearchParams(location.search);
if (params.get("overlay") === "0") overlay.classList.add("hidden");
window.bb = { shown: -1, shownDue: 0, received: 0, log: [], skipped: 0 };
const ranges = {};

function meters(values) {
  const rows = [];
  for (const [bend, ps] of Object.entries(values || {})) {
    for (const [name, v] of Object.entries(ps)) {
      const key = bend + "." + name, r = ranges[key] || (ranges[key] = [v, v]);
      r[0] = Math.min(r[0], v); r[1] = Math.max(r[1], v);
      const f = r[1] > r[0] ? (v - r[0]) / (r[1] - r[0]) : 0.5;
      rows.push('<div class="meter"><b>' + key + '</b><span><i style="width:' + Math.round(f * 100) +
                '%"></i></span>' + v.toFixed(3) + "</div>");
    }
  }
  metersEl.innerHTML = rows.join("");
}

function stats(d) {
  const s = d.stats || {};
  const lines = [];
  if (d.bar_beat) lines.push("\\u25b6 " + d.bar_beat);
  if (s.fps !== undefined) {
    lines.push(s.fps.toFixed(1) + " fps \\u00b7 dropped " + s.dropped + " \\u00b7 late " + s.late);
  }
  if (s.latency_ms !== undefined) lines.push("render latency " + Math.round(s.latency_ms) + " ms");
  if (s.missing && s.missing.length) lines.push("no data: " + s.missing.join(", "));
  statsEl.textContent = lines.join("\\n");
}

function show(d, picture) {
  if (d.due < bb.shownDue) { bb.skipped++; return; }  // a frame due later is already on screen
  img.src = picture.src;
  document.getElementById("wait").style.display = "none";
  bb.shown = d.frame; bb.shownDue = d.due;
  bb.log.push({ frame: d.frame, due: d.due * 1000, at: Date.now(), params: d.params });
  if (bb.log.length > 600) bb.log.shift();
  stats(d); meters(d.params);
}

const events = new EventSource("/events");
events.addEventListener("frame", (e) => {
  const d = JSON.parse(e.data);
  bb.received++;
  const picture = new Image();
  picture.src = "data:image/png;base64," + d.png;
  picture.decode().catch(() => {}).then(() => {
    const wait = d.due * 1000 - Date.now();
    if (wait > 1) setTimeout(() => show(d, picture), wait); else show(d, picture);
  });
});

function fullscreen() {
  if (!document.fullscreenElement) document.documentElement.requestFullscreen().catch(() => {});
  else document.exitFullscreen();
}
document.addEventListener("keydown", (e) => {
  if (e.key === "f") fullscreen();
  if (e.key === "o") overlay.classList.toggle("hidden");
});
document.addEventListener("dblclick", fullscreen);
</script></body></html>
"""
