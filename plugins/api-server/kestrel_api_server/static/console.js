// Kestrel console: plain JavaScript, no build step, no third-party code.
// The live feed reads /api/stream with fetch (not EventSource) so that it can
// send the bearer token and Last-Event-ID itself and follow the reconnect
// policy of BRIEF section 14: 90 s without a heartbeat is a disconnect, then
// exponential back-off (1 s, 2 s, 4 s ... at most 30 s).
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const HEARTBEAT_TIMEOUT_MS = Number(params.get("hb_timeout_ms")) || 90000;
  const BACKOFF_MAX_MS = Number(params.get("backoff_max_ms")) || 30000;
  const BACKOFF_FIRST_MS = 1000;
  const SEVERITIES = ["critical", "high", "medium", "low"];
  const MAX_ROWS = 1000;
  // the server's cursor for "older than alert N" (opaque to users, stable for this page)
  const encodeCursor = (seq) => btoa("s" + seq).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  const SEV_COLOR = { critical: "#8e1b2f", high: "#d2452f", medium: "#e3a21a", low: "#4a86c5" };

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem("kestrel-token") || "",
    lastId: null,          // highest alert id seen: the stream resumes after it
    rows: new Map(),       // id -> <tr> in the list
    received: [],          // ids the stream delivered, in order (the last 10,000; tests read it)
    seen: new Set(),
    live: [],              // the latest alerts the stream delivered (a list reload keeps those it missed)
    duplicates: 0,         // ids the stream delivered twice (must stay 0)
    reconnects: 0,
    connected: false,
    filter: {},
    cursor: null,
    selected: null,
    epsSamples: [],
    waits: [],             // each back-off wait, in ms (tests read it)
    heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
    backoffMaxMs: BACKOFF_MAX_MS,
  };
  window.kestrelConsole = state;

  // ------------------------------------------------------------ HTTP

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    if (state.token) opts.headers.Authorization = "Bearer " + state.token;
    const resp = await fetch(path, opts);
    if (resp.status === 401) { askToken(); throw new Error("401"); }
    if (!resp.ok) throw new Error(resp.status + " " + (await resp.text()));
    return resp.json();
  }

  function askToken() { $("token-bar").hidden = false; }
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token-input").value.trim();
    sessionStorage.setItem("kestrel-token", state.token);
    $("token-bar").hidden = true;
    start();
  });

  // ------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function fmtTime(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }
  function sevBadge(sev) { return el("span", { class: "sev sev-" + sev, text: sev }); }
  function windowNs() {
    const end = Date.now() * 1e6;
    return { start: end - Number($("range").value) * 1e9, end: end };
  }

  // ------------------------------------------------------------ overview

  function bars(container, items) {
    container.replaceChildren();
    const max = Math.max(1, ...items.map((i) => i.count));
    for (const item of items) {
      const fill = el("div", { class: "fill" });
      fill.style.width = (100 * item.count / max).toFixed(1) + "%";
      container.append(el("div", { class: "bar" }, fill, el("span", { text: item.key == null ? "(none)" : item.key }),
        el("span", { text: String(item.count) })));
    }
    if (!items.length) container.append(el("div", { class: "bar" }, el("span", { text: "no alerts" })));
  }

  function timeline(ov) {
    const chart = $("chart-timeline");
    chart.replaceChildren();
    const n = ov.timeline.buckets, series = ov.timeline.by_severity;
    const totals = new Array(n).fill(0);
    for (const sev of Object.keys(series)) series[sev].forEach((v, i) => { totals[i] += v; });
    const max = Math.max(1, ...totals), w = 600 / n, h = 150;
    for (let i = 0; i < n; i++) {
      let y = h;
      for (const sev of SEVERITIES.slice().reverse()) {
        const v = (series[sev] || [])[i] || 0;
        if (!v) continue;
        const bh = (v / max) * (h - 10);
        y -= bh;
        const r = svg("rect", { x: i * w + 1, y: y, width: Math.max(1, w - 2), height: bh, fill: SEV_COLOR[sev] });
        r.append(svg("title", {})); r.firstChild.textContent = v + " " + sev;
        chart.append(r);
      }
    }
    chart.append(svg("line", { x1: 0, y1: h, x2: 600, y2: h, stroke: "#999", "stroke-width": 1 }));
    const label = (x, anchor, text) => {
      const t = svg("text", { x: x, y: 12, "font-size": 11, fill: "#5f6b78", "text-anchor": anchor });
      t.textContent = text;
      chart.append(t);
    };
    label(2, "start", fmtTime(ov.start));
    label(598, "end", fmtTime(ov.end) + " · max " + max + "/bucket");
    const legend = $("legend");
    legend.replaceChildren(...SEVERITIES.map((s) => {
      const i = el("i"); i.style.background = SEV_COLOR[s];
      return el("span", {}, i, s);
    }));
  }

  function epsChart() {
    const chart = $("chart-eps");
    chart.replaceChildren();
    const pts = state.epsSamples;
    if (pts.length < 2) return;
    const max = Math.max(1, ...pts);
    const step = 300 / (pts.length - 1);
    const d = pts.map((v, i) => (i ? "L" : "M") + (i * step).toFixed(1) + " " + (150 - (v / max) * 140).toFixed(1)).join(" ");
    chart.append(svg("path", { d: d, fill: "none", stroke: "#4a86c5", "stroke-width": 2 }));
    const label = svg("text", { x: 4, y: 12, "font-size": 11, fill: "#5f6b78" });
    label.textContent = "max " + max.toFixed(1);
    chart.append(label);
  }

  async function loadOverview() {
    const w = windowNs();
    const ov = await api(`/api/overview?start=${w.start}&end=${w.end}&buckets=48`);
    $("ov-total").textContent = ov.total;
    $("ov-unacked").textContent = ov.total - ov.acknowledged;
    const eng = ov.engine || {};
    $("ov-eps").textContent = eng.running ? eng.events_per_s.toFixed(1) : "–";
    $("ov-dropped").textContent = eng.running ? eng.events_dropped : "–";
    $("ov-lost").textContent = eng.running ? eng.events_lost : "–";
    if (eng.running) { state.epsSamples.push(eng.events_per_s); if (state.epsSamples.length > 60) state.epsSamples.shift(); }
    timeline(ov);
    epsChart();
    bars($("top-rules"), ov.by_rule);
    bars($("top-hosts"), ov.by_host);
    bars($("top-containers"), ov.by_container);
  }

  // ------------------------------------------------------------ alert list

  function matches(a) {
    const f = state.filter;
    if (f.severity && a.severity !== f.severity) return false;
    if (f.rule && a.rule.id !== f.rule) return false;
    if (f.host && a.host !== f.host) return false;
    if (f.container && a.container !== f.container) return false;
    return true;
  }

  function row(a) {
    const tr = el("tr", { "data-id": String(a.id), "data-severity": a.severity, class: "alert-row" },
      el("td", { text: String(a.id) }), el("td", { text: fmtTime(a.ts) }), el("td", {}, sevBadge(a.severity)),
      el("td", { text: a.rule.name, title: a.rule.id }), el("td", { text: a.host || "" }),
      el("td", { text: a.container || "" }), el("td", { class: "ack-cell", text: a.ack ? "✓" : "" }));
    tr.addEventListener("click", () => openDetail(a.id));
    return tr;
  }

  function addRow(a, top) {
    if (state.rows.has(a.id)) return;
    const tr = row(a);
    state.rows.set(a.id, tr);
    const body = $("alert-rows");
    for (const empty of body.querySelectorAll("tr.empty")) empty.remove();
    if (top) {
      // keep the list ordered by id, newest first
      let before = body.firstChild;
      while (before && Number(before.dataset.id) > a.id) before = before.nextSibling;
      body.insertBefore(tr, before);
      tr.classList.add("fresh");
      while (state.rows.size > MAX_ROWS && body.lastChild) {  // a long-open page keeps the newest
        state.rows.delete(Number(body.lastChild.dataset.id));
        body.lastChild.remove();
        state.cursor = encodeCursor(Number(body.lastChild.dataset.id));
        $("more").hidden = false;
      }
    } else body.append(tr);
    $("list-info").textContent = state.rows.size + " shown";
  }

  function readFilter() {
    const f = {};
    for (const k of ["severity", "rule", "host", "container"]) {
      const v = $("f-" + k).value.trim();
      if (v) f[k] = v;
    }
    return f;
  }

  function listQuery(cursor) {
    const q = new URLSearchParams(Object.assign({ limit: "50" }, state.filter));
    const w = windowNs();
    q.set("start", String(w.start));
    if (cursor) q.set("cursor", cursor);
    return "/api/alerts?" + q.toString();
  }

  async function loadList() {
    state.filter = readFilter();
    const page = await api(listQuery(null));
    state.rows.clear();
    $("alert-rows").replaceChildren();
    for (const a of page.alerts) addRow(a, false);
    if (!page.alerts.length) {
      $("alert-rows").append(el("tr", { class: "empty" }, el("td", { colspan: "7", text: "no alerts match" })));
    }
    // alerts committed after the query ran came (or will come) over the stream
    for (const a of state.live) if (a.id > page.last_seq && matches(a)) addRow(a, true);
    state.cursor = page.next_cursor;
    $("more").hidden = !state.cursor;
    $("list-info").textContent = state.rows.size + " shown";
    return page;
  }

  $("more").addEventListener("click", async () => {
    const page = await api(listQuery(state.cursor));
    for (const a of page.alerts) addRow(a, false);
    state.cursor = page.next_cursor;
    $("more").hidden = !state.cursor;
  });
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadList(); });
  $("f-severity").addEventListener("change", () => loadList());
  $("range").addEventListener("change", () => { loadList(); loadOverview(); });

  // ------------------------------------------------------------ detail

  function evidenceItem(ev, first) {
    const e = ev.event || {};
    const get = (path) => path.split(".").reduce((o, k) => (o && typeof o === "object" ? (k in o ? o[k] : undefined) : undefined), e) ?? e[path];
    const what = [ev.category, ev.action, get("process.name"), get("process.command_line") || (get("process.args") || []).join(" "),
      get("file.path"), get("destination.ip")].filter((x) => x !== undefined && x !== null && x !== "").join(" · ");
    const pre = el("pre", { text: JSON.stringify(e, null, 1) });
    const details = el("details", {}, el("summary", { text: "event" }), pre);
    const offset = first && ev.ts && first.ts ? (Date.parse(ev.ts) - Date.parse(first.ts)) / 1000 : null;
    const rel = offset === null || ev === first ? "" : ` (+${offset.toFixed(3)} s)`;
    return el("li", { class: "evidence", "data-step": String(ev.step) },
      el("time", { text: fmtTime(ev.ts) + rel }), el("span", { text: what }), details);
  }

  async function openDetail(id) {
    const a = await api("/api/alerts/" + id);
    state.selected = a;
    for (const tr of state.rows.values()) tr.classList.toggle("selected", Number(tr.dataset.id) === id);
    $("detail").hidden = false;
    $("detail").dataset.id = String(id);
    $("d-title").replaceChildren(sevBadge(a.severity), " ", a.rule.name);
    $("d-meta").textContent = `#${a.id} · rule ${a.rule.id} · ${fmtTime(a.ts)} · host ${a.host || "–"} · container ${a.container || "–"}`;
    $("d-desc").textContent = a.description || "";
    $("d-timeline").replaceChildren(...a.evidence.map((ev) => evidenceItem(ev, a.evidence[0])));
    const fields = Object.entries(a.fields || {}).map(([k, v]) =>
      el("tr", {}, el("td", { text: k }), el("td", {}, el("pre", { text: typeof v === "string" ? v : JSON.stringify(v) }))));
    $("d-fields").replaceChildren(...fields);
    showAck(a);
  }

  function showAck(a) {
    const box = $("d-ack-state");
    if (a.ack) {
      box.replaceChildren(el("span", { class: "acked", text: `acknowledged ${fmtTime(a.ack.ts)} by ${a.ack.by}` }),
        el("p", { class: "ack-note", text: a.ack.note || "(no note)" }));
      $("ack-button").textContent = "Update note";
    } else {
      box.replaceChildren(el("span", { text: "not acknowledged" }));
      $("ack-button").textContent = "Acknowledge";
    }
  }

  $("ack-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = Number($("detail").dataset.id);
    const done = await api(`/api/alerts/${id}/ack`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ note: $("ack-note").value }),
    });
    state.selected.ack = done.ack;
    showAck(done);
    const tr = state.rows.get(id);
    if (tr) tr.querySelector(".ack-cell").textContent = "✓";
    loadOverview();
  });
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });

  // ------------------------------------------------------------ live feed

  function setConn(kind, text) {
    const c = $("conn");
    c.className = "conn conn-" + kind;
    c.textContent = text;
    c.dataset.state = kind;
  }

  function onMessage(msg) {
    if (msg.type === "heartbeat") {
      if (msg.payload && msg.payload.reset) {  // the server has another store: start the list over
        state.seen.clear();
        state.lastId = 0;
        loadList().catch(() => {});
      }
      return;
    }
    if (msg.type !== "alert") return;
    const a = msg.payload;
    if (state.seen.has(a.id)) state.duplicates++;
    state.seen.add(a.id);
    state.received.push(a.id);
    if (state.received.length > 10000) state.received.splice(0, state.received.length - 10000);
    state.live.push(a);
    if (state.live.length > MAX_ROWS) state.live.shift();
    state.lastId = Math.max(state.lastId || 0, a.id);
    if (matches(a)) addRow(a, true);
    scheduleOverview();
  }

  let overviewTimer = null;
  function scheduleOverview() {
    if (overviewTimer) return;
    overviewTimer = setTimeout(() => { overviewTimer = null; loadOverview().catch(() => {}); }, 500);
  }

  async function streamOnce() {
    const ctrl = new AbortController();
    let watchdog = null;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => ctrl.abort(new Error("no heartbeat for " + HEARTBEAT_TIMEOUT_MS + " ms")), HEARTBEAT_TIMEOUT_MS);
    };
    const headers = { Accept: "text/event-stream" };
    if (state.lastId !== null) headers["Last-Event-ID"] = String(state.lastId);
    if (state.token) headers.Authorization = "Bearer " + state.token;
    arm();
    try {
      const resp = await fetch("/api/stream", { headers: headers, signal: ctrl.signal, cache: "no-store" });
      if (resp.status === 401) { askToken(); throw new Error("401"); }
      if (!resp.ok || !resp.body) throw new Error("stream answered " + resp.status);
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      let first = true;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error("stream ended");
        arm();
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (!data) continue;
          if (first) { first = false; state.connected = true; backoff = 0; setConn("live", "live"); }
          onMessage(JSON.parse(data));
        }
      }
    } finally {
      clearTimeout(watchdog);
      ctrl.abort();
      state.connected = false;
    }
  }

  let backoff = 0;
  let streaming = false;
  async function feed() {
    if (streaming) return;
    streaming = true;
    for (;;) {
      try {
        await streamOnce();
      } catch (err) {
        state.lastError = String(err && err.message || err);
      }
      state.reconnects++;
      const wait = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, backoff));
      backoff++;
      state.waits.push(wait);
      setConn("reconnecting", "reconnecting in " + Math.round(wait / 1000) + " s");
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  async function start() {
    try {
      const health = await api("/api/health");
      $("host-info").textContent = (health.sources || []).map((s) => s.name).join(", ") +
        (health.engine && health.engine.mode ? " · " + health.engine.mode : "");
      const page = await loadList();
      state.lastId = Math.max(state.lastId || 0, page.last_seq || 0);
      await loadOverview();
      feed();
      if (!state.poller) state.poller = setInterval(() => loadOverview().catch(() => {}), 10000);
    } catch (err) {
      state.lastError = String(err && err.message || err);
      if (state.lastError !== "401") { setConn("offline", "offline"); setTimeout(start, 3000); }
    }
  }

  start();
})();
