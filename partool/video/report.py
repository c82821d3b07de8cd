"""`partool report --html`: one self-contained HTML gallery of an event store's tracks, filterable offline.

Why one file: it is mailed, archived and opened on machines without network access, so thumbnails are
inlined as base64 JPEG and the CSS and script are inline; nothing is fetched. Cards are rendered here, so
the page reads without script; the script only hides cards. The filter state lives in the URL fragment —
`#attr=Backpack,!Hat,Female>0.8&stream=cam1,cam2` (terms ANDed, each URL-encoded: `Skirt%26Dress`) — read
on load and rewritten on every change, so a link or a headless browser applies a filter with no driver.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from html import escape
from urllib.parse import quote

from partool import __version__
from partool.video.event_store import StoredTrack, attribute_names, local_time, stream_names
from partool.video.query import And, Expr, Found, Not, Term, find_tracks, parse_query

CSS = """
:root { color-scheme: light; --ink: #1d232b; --muted: #5c6773; --line: #d9dee4; --on: #1f7a4d; --off: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--ink); background: #f4f6f8; }
header { padding: 16px 20px 8px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 18px; }
.scope, .count, .note { color: var(--muted); margin: 2px 0; }
.filters { display: flex; flex-wrap: wrap; gap: 6px 12px; align-items: center; margin-top: 8px; }
.chips { display: flex; flex-wrap: wrap; gap: 4px; }
.chip { border: 1px solid var(--line); background: #fff; border-radius: 12px; padding: 2px 10px; cursor: pointer;
        font: inherit; color: var(--ink); }
.chip[data-state="on"] { background: var(--on); border-color: var(--on); color: #fff; }
.chip[data-state="on"]::before { content: "\\2713 "; }
.chip[data-state="off"] { background: var(--off); border-color: var(--off); color: #fff; text-decoration: line-through; }
.chip small { color: inherit; opacity: .7; }
#terms { min-width: 280px; padding: 3px 6px; font: inherit; }
.streams label { margin-right: 8px; white-space: nowrap; }
#notice { color: var(--off); margin: 6px 0 0; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); gap: 12px; padding: 16px 20px; }
.card { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px; overflow: hidden; }
.card img, .card .noimg { display: block; width: 100%; height: 200px; object-fit: contain; background: #e9edf1; }
.card .noimg { display: flex; align-items: center; justify-content: center; color: var(--muted); }
.card figcaption { padding: 6px 8px 8px; }
.who { font-weight: 600; }
.who span { font-weight: 400; color: var(--muted); font-size: 12px; white-space: nowrap; }
.when { color: var(--muted); font-size: 12px; }
.tags { display: flex; flex-wrap: wrap; gap: 3px; margin: 4px 0 0; padding: 0; list-style: none; }
.tags li { background: #e7f2ec; color: var(--on); border-radius: 4px; padding: 0 5px; font-size: 12px; }
#empty { padding: 24px 20px; color: var(--muted); }
[hidden] { display: none !important; }
"""

SCRIPT = """
"use strict";
(function () {
  const names = JSON.parse(document.getElementById("gallery-attributes").textContent);
  const byLower = new Map(names.map((n) => [n.toLowerCase(), n]));
  const cards = Array.from(document.querySelectorAll(".card"), (el) => ({
    el, stream: el.dataset.stream, on: new Set(JSON.parse(el.dataset.on)), probs: JSON.parse(el.dataset.probs),
  }));
  const streamBoxes = Array.from(document.querySelectorAll("input.stream"));
  const chips = Array.from(document.querySelectorAll("button.chip"));
  const box = document.getElementById("terms");
  const notice = document.getElementById("notice");
  const count = document.getElementById("count");
  const empty = document.getElementById("empty");
  const TERM = /^(!?)\\s*(.*?)\\s*(?:(>=|<=|>|<)\\s*([0-9]*\\.?[0-9]+))?$/;
  let terms = [];
  let problems = [];

  function parseTerms(text) {
    const out = [];
    for (const piece of text.split(",")) {
      const item = piece.trim();
      if (!item) continue;
      const m = TERM.exec(item);
      const name = m && byLower.get(m[2].toLowerCase());
      if (!name) { problems.push("ignored unknown attribute term " + JSON.stringify(item)); continue; }
      out.push({ name, neg: m[1] === "!", op: m[3] || null, value: m[4] === undefined ? null : parseFloat(m[4]) });
    }
    return out;
  }
  const termText = (t) => (t.neg ? "!" : "") + t.name + (t.op ? t.op + t.value : "");
  function holds(card, t) {
    let hit = card.on.has(t.name);
    if (t.op) {
      const p = card.probs[t.name];
      hit = p !== undefined && ({ ">": p > t.value, ">=": p >= t.value, "<": p < t.value, "<=": p <= t.value })[t.op];
    }
    return t.neg ? !hit : hit;
  }
  function chosenStreams() {
    const chosen = streamBoxes.filter((b) => b.checked).map((b) => b.value);
    return chosen.length === streamBoxes.length ? null : new Set(chosen);
  }
  function apply() {
    const streams = chosenStreams();
    let shown = 0;
    for (const card of cards) {
      const visible = (!streams || streams.has(card.stream)) && terms.every((t) => holds(card, t));
      card.el.hidden = !visible;
      shown += visible ? 1 : 0;
    }
    for (const chip of chips) {
      const t = terms.find((x) => x.name === chip.value && !x.op);
      chip.dataset.state = t ? (t.neg ? "off" : "on") : "";
    }
    box.value = terms.map(termText).join(", ");
    count.textContent = shown + " of " + cards.length + " tracks shown";
    empty.hidden = shown > 0;
    notice.textContent = problems.join("; ");
    notice.hidden = problems.length === 0;
  }
  function save() {
    const parts = [];
    if (terms.length) parts.push("attr=" + terms.map((t) => encodeURIComponent(termText(t))).join(","));
    const streams = chosenStreams();
    if (streams) parts.push("stream=" + Array.from(streams, encodeURIComponent).join(","));
    const next = parts.join("&");
    if (location.hash.slice(1) !== next) location.replace("#" + next);
  }
  function load() {
    problems = [];
    const params = new Map();
    for (const part of location.hash.slice(1).split("&")) {
      const eq = part.indexOf("=");
      if (eq < 0) continue;
      try { params.set(part.slice(0, eq), decodeURIComponent(part.slice(eq + 1))); }
      catch (e) { problems.push("ignored badly encoded " + JSON.stringify(part)); }
    }
    terms = parseTerms(params.get("attr") || "");
    const wanted = params.has("stream") ? params.get("stream").split(",").map((s) => s.trim()).filter(Boolean) : null;
    for (const name of wanted || []) {
      if (!streamBoxes.some((b) => b.value === name)) problems.push("no stream " + JSON.stringify(name) + " here");
    }
    for (const b of streamBoxes) b.checked = !wanted || wanted.includes(b.value);
    apply();
  }
  for (const chip of chips) {
    chip.addEventListener("click", () => {
      const state = chip.dataset.state;
      terms = terms.filter((t) => t.name !== chip.value);
      if (state !== "off") terms.push({ name: chip.value, neg: state === "on", op: null, value: null });
      problems = [];
      apply();
      save();
    });
  }
  for (const b of streamBoxes) b.addEventListener("change", () => { apply(); save(); });
  box.addEventListener("change", () => { problems = []; terms = parseTerms(box.value); apply(); save(); });
  document.getElementById("reset").addEventListener("click", () => {
    terms = [];
    problems = [];
    for (const b of streamBoxes) b.checked = true;
    apply();
    save();
  });
  window.addEventListener("hashchange", load);
  load();
})();
"""


def _card(track: StoredTrack) -> str:
    image = (
        f'<img src="data:image/jpeg;base64,{base64.b64encode(track.thumbnail).decode()}" alt="track {track.track}">'
        if track.thumbnail is not None
        else '<div class="noimg">no picture</div>'
    )
    tags = "".join(
        f'<li title="p = {track.probs.get(name, float("nan")):.2f}">{escape(name)}</li>'
        for name in track.attributes
    )
    first, last = local_time(track.first_epoch), local_time(track.last_epoch)
    until = last[11:] if last[:10] == first[:10] else last
    seconds = max(0.0, track.last_epoch - track.first_epoch)
    return (
        f'<figure class="card" data-id="{track.id}" data-stream="{escape(track.stream)}" '
        f'data-on="{escape(json.dumps(track.attributes))}" data-probs="{escape(json.dumps(track.probs))}">'
        f"{image}<figcaption>"
        f'<div class="who">{escape(track.stream)} · track {track.track} <span>(id {track.id})</span></div>'
        f'<div class="when" title="{escape(track.first_time)} – {escape(track.last_time)} (UTC)">'
        f"{first} → {until} ({seconds:.0f} s)</div>"
        f'<ul class="tags">{tags}</ul></figcaption></figure>'
    )


def render_gallery(
    tracks: Sequence[StoredTrack],
    attributes: Sequence[str],
    streams: Sequence[str],
    title: str,
    scope: str,
    matched: int,
) -> str:
    """The whole HTML page: `tracks` as cards, chips for `attributes`, a checkbox per stream.

    `scope` says which tracks the command picked (query, streams, times); `matched` counts them before
    any --limit, so the page says when it shows fewer.
    """
    on_counts = Counter(name for track in tracks for name in track.attributes)
    chips = "".join(
        f'<button type="button" class="chip" value="{escape(name)}" data-state="" '
        f'title="click: must be on, again: must be off, again: either">{escape(name)} <small>{on_counts[name]}</small></button>'
        for name in attributes
    )
    boxes = "".join(
        f'<label><input type="checkbox" class="stream" value="{escape(name)}" checked> {escape(name)}</label>'
        for name in streams
    )
    limited = (
        f" (the first {len(tracks)} of {matched} that match; raise --limit for more)"
        if matched > len(tracks)
        else ""
    )
    zone = datetime.now().astimezone().strftime("UTC%z")
    generated = local_time(datetime.now().timestamp())
    names = json.dumps(list(attributes)).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style></head>
<body>
<header>
<h1>{escape(title)}</h1>
<p class="scope">{escape(scope)}{escape(limited)}</p>
<p class="note">Times are {zone}, the clock of the machine that wrote this report ({generated}, partool {__version__}).</p>
<div class="filters">
<div class="chips">{chips}</div>
</div>
<div class="filters">
<input id="terms" type="text" placeholder="Backpack, !Hat, Female>0.8" aria-label="attribute terms, all must hold">
<span class="streams">{boxes}</span>
<button type="button" id="reset">show all</button>
<span class="count" id="count">{len(tracks)} tracks</span>
</div>
<p id="notice" hidden></p>
</header>
<main>{"".join(_card(track) for track in tracks)}</main>
<p id="empty" hidden>No track matches this filter.</p>
<script type="application/json" id="gallery-attributes">{names}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def gallery_page(
    conn: sqlite3.Connection,
    title: str,
    query: str | None = None,
    streams: Sequence[str] = (),
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
) -> tuple[str, Found]:
    """The gallery of the store's tracks that `partool search` would find with the same arguments, and
    those tracks."""
    found = find_tracks(conn, query, streams, since, until, limit=limit, thumbnails=True)
    shown_streams = list(dict.fromkeys(streams)) or stream_names(conn)
    scope = [f"{found.total} tracks"]
    if query:
        scope.append(f"matching {query!r}")
    if streams:
        scope.append(f"on {', '.join(shown_streams)}")
    if since is not None:
        scope.append(f"in view from {local_time(since)}")
    if until is not None:
        scope.append(f"until {local_time(until)}")
    page = render_gallery(
        found.tracks, attribute_names(conn), shown_streams, title, " ".join(scope), found.total
    )
    return page, found


def filter_fragment(query: str) -> str | None:
    """The gallery's URL fragment that applies `query` (`attr=Female,!Hat`), or None when the page's terms,
    which are all ANDed, cannot say it (an `|`, a negated group)."""
    terms: list[str] = []

    def collect(expr: Expr) -> bool:
        if isinstance(expr, And):
            return collect(expr.left) and collect(expr.right)
        negated = isinstance(expr, Not)
        term = expr.operand if isinstance(expr, Not) else expr
        if not isinstance(term, Term):
            return False
        terms.append(("!" if negated else "") + term.name + (f"{term.op}{term.value:g}" if term.op else ""))
        return True

    if not collect(parse_query(query)) or any("," in t for t in terms):
        return None
    return "attr=" + ",".join(quote(t, safe="!") for t in terms)
