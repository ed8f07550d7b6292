// mqagent dashboard: plain JavaScript, no library, no build step.
//
// The overview keeps every host in a Map fed by /api/events (a snapshot,
// then deltas), and draws only the rows in view (virtual scrolling), so a
// fleet of 10,000 hosts costs a few dozen DOM nodes. The host page follows
// /api/hosts/{id}/events and draws its charts on <canvas>.
//
// Text from the fleet is only ever set with textContent: nothing the
// agents publish is parsed as HTML.
"use strict";

(() => {
  const ROW_H = 28; // px, as --row in app.css
  const OVERSCAN = 8;
  const $ = (id) => document.getElementById(id);

  const state = {
    session: { user: "", csrf: "", login: false, require_login: false, commands: false, can_run: false },
    hosts: new Map(), // id -> row
    view: [], // rows after filter and sort
    sortKey: "id",
    sortDir: 1,
    filter: "",
    stateFilter: "",
    clockOffset: 0, // server time minus browser time, ms
    stats: null,
    overviewES: null,
    hostES: null,
    hostID: "",
    expanded: new Set(), // command ids whose output is shown
    lastDetail: null,
    refreshQueued: false,
    renderQueued: false,
  };
  // For tests and benchmarks: counters of what the page did.
  const probe = (window.__mqagent = { snapshots: 0, deltas: 0, renders: 0, hostUpdates: 0 });

  // ---------- time and number formatting ----------
  const now = () => Date.now() + state.clockOffset;
  function ago(ms) {
    if (!ms) return "–";
    const d = Math.max(0, now() - ms) / 1000;
    if (d < 60) return Math.floor(d) + "s ago";
    if (d < 3600) return Math.floor(d / 60) + "m ago";
    if (d < 172800) return Math.floor(d / 3600) + "h ago";
    return Math.floor(d / 86400) + "d ago";
  }
  function clock(ms) {
    if (!ms) return "–";
    const d = new Date(ms);
    return d.toLocaleString(undefined, { hour12: false });
  }
  function bytes(n) {
    if (n == null) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) {
      n /= 1024;
      i++;
    }
    return (i === 0 ? Math.round(n) : n.toFixed(n >= 100 ? 0 : 1)) + " " + u[i];
  }
  function duration(ms) {
    if (ms == null) return "–";
    if (ms < 1000) return ms + " ms";
    const s = ms / 1000;
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }
  const hostState = (r) => r.state || "unknown";

  // ---------- session ----------
  async function loadSession() {
    try {
      const r = await fetch("/api/session", { credentials: "same-origin" });
      if (r.ok) state.session = await r.json();
    } catch (e) {
      /* shown by the stream's state */
    }
    renderSession();
  }
  function renderSession() {
    const s = state.session;
    $("user-name").textContent = s.user ? s.user : "";
    $("btn-login").hidden = !s.login || !!s.user;
    $("btn-logout").hidden = !s.user;
    const needLogin = s.require_login && !s.user;
    const n = $("notice");
    n.hidden = !needLogin;
    n.textContent = needLogin ? "Sign in to see the fleet." : "";
    renderRunForm();
  }
  async function postJSON(url, body) {
    const headers = { "Content-Type": "application/json" };
    if (state.session.csrf) headers["X-CSRF-Token"] = state.session.csrf;
    const r = await fetch(url, { method: "POST", credentials: "same-origin", headers, body: JSON.stringify(body || {}) });
    let data = {};
    try {
      data = await r.json();
    } catch (e) {
      /* empty */
    }
    return { ok: r.ok, status: r.status, data };
  }
  function openLogin() {
    $("login-error").hidden = true;
    const d = $("login-dialog");
    if (!d.open) d.showModal();
    $("login-user").focus();
  }
  async function submitLogin(ev) {
    ev.preventDefault();
    const res = await postJSON("/api/login", { user: $("login-user").value, password: $("login-password").value });
    $("login-password").value = "";
    if (!res.ok) {
      const e = $("login-error");
      e.textContent = res.data.error || "sign-in failed (" + res.status + ")";
      e.hidden = false;
      return;
    }
    state.session = res.data;
    $("login-dialog").close();
    renderSession();
    startOverview();
    route();
  }
  async function logout() {
    const res = await postJSON("/api/logout", {});
    state.session = res.ok ? res.data : { ...state.session, user: "", csrf: "", can_run: false };
    renderSession();
    if (state.session.require_login) {
      stopStreams();
      state.hosts.clear();
      refresh();
    }
  }

  // ---------- overview stream ----------
  function setConn(s, text) {
    const c = $("conn");
    c.dataset.state = s;
    c.textContent = text;
  }
  function stopStreams() {
    if (state.overviewES) state.overviewES.close();
    if (state.hostES) state.hostES.close();
    state.overviewES = state.hostES = null;
  }
  function startOverview() {
    if (state.session.require_login && !state.session.user) {
      setConn("connecting", "signed out");
      return;
    }
    if (state.overviewES) state.overviewES.close();
    const es = new EventSource("/api/events");
    state.overviewES = es;
    es.onopen = () => setConn("live", "live");
    es.onerror = () => {
      setConn("reconnecting", "reconnecting…");
      if (state.session.require_login) loadSession();
    };
    es.addEventListener("snapshot", (e) => {
      const s = JSON.parse(e.data);
      probe.snapshots++;
      state.clockOffset = s.now - Date.now();
      state.hosts.clear();
      for (const r of s.hosts) state.hosts.set(r.id, r);
      setStats(s.stats);
      refresh();
    });
    es.addEventListener("delta", (e) => {
      const d = JSON.parse(e.data);
      probe.deltas++;
      state.clockOffset = d.now - Date.now();
      if (d.upsert) for (const r of d.upsert) state.hosts.set(r.id, r);
      if (d.remove) for (const id of d.remove) state.hosts.delete(id);
      setStats(d.stats);
      refresh();
    });
  }
  function setStats(s) {
    state.stats = s;
    $("count-total").textContent = s.hosts;
    $("count-online").textContent = s.online;
    $("count-offline").textContent = s.offline;
    $("count-unknown").textContent = s.unknown;
    const top = (m) =>
      Object.entries(m || {})
        .sort((a, b) => b[1] - a[1])
        .slice(0, 3)
        .map(([k, v]) => k + " " + v)
        .join(", ");
    const parts = [];
    if (s.versions && Object.keys(s.versions).length) parts.push("versions: " + top(s.versions));
    if (s.oses && Object.keys(s.oses).length) parts.push("os: " + top(s.oses));
    $("breakdown").textContent = parts.join(" · ");
  }

  // ---------- filter and sort ----------
  // A filter is words; each must match. "key:value" matches one field
  // (group, os, version, state, arch, platform, host); a bare word
  // matches the id, hostname, os, version, platform or a group.
  function compileFilter(text) {
    const terms = text.toLowerCase().split(/\s+/).filter(Boolean);
    if (!terms.length) return null;
    const fields = {
      host: (r) => [r.id],
      id: (r) => [r.id],
      hostname: (r) => [r.hostname],
      group: (r) => r.groups || [],
      groups: (r) => r.groups || [],
      os: (r) => [r.os],
      version: (r) => [r.version],
      state: (r) => [hostState(r)],
      arch: (r) => [r.arch],
      platform: (r) => [r.platform],
    };
    const tests = terms.map((t) => {
      const i = t.indexOf(":");
      if (i > 0 && fields[t.slice(0, i)]) {
        const get = fields[t.slice(0, i)];
        const want = t.slice(i + 1);
        return (r) => get(r).some((v) => v && v.toLowerCase().includes(want));
      }
      return (r) =>
        (r.id && r.id.toLowerCase().includes(t)) ||
        (r.hostname && r.hostname.toLowerCase().includes(t)) ||
        (r.os && r.os.toLowerCase().includes(t)) ||
        (r.version && r.version.toLowerCase().includes(t)) ||
        (r.platform && r.platform.toLowerCase().includes(t)) ||
        (r.groups && r.groups.some((g) => g.toLowerCase().includes(t)));
    });
    return (r) => tests.every((f) => f(r));
  }
  const stateRank = { online: 0, offline: 1, unknown: 2 };
  function comparator(key, dir) {
    const str = (get) => (a, b) => {
      const x = get(a) || "";
      const y = get(b) || "";
      return x < y ? -dir : x > y ? dir : 0;
    };
    const num = (get) => (a, b) => {
      const x = get(a);
      const y = get(b);
      if (x == null && y == null) return 0;
      if (x == null) return 1; // unknown last, whatever the direction
      if (y == null) return -1;
      return (x - y) * dir;
    };
    let c;
    switch (key) {
      case "state":
        c = (a, b) => (stateRank[hostState(a)] - stateRank[hostState(b)]) * dir;
        break;
      case "cpu":
      case "mem":
      case "disk":
        c = num((r) => r[key]);
        break;
      case "seen":
        c = num((r) => r.seen || null);
        break;
      case "groups":
        c = str((r) => (r.groups || []).join(","));
        break;
      default:
        c = str((r) => r[key]);
    }
    const byID = str((r) => r.id);
    return (a, b) => c(a, b) || (key === "id" ? 0 : byID(a, b));
  }
  // refresh recomputes the view (on the next frame, at most once).
  function refresh() {
    if (state.refreshQueued) return;
    state.refreshQueued = true;
    onNextFrame(() => {
      state.refreshQueued = false;
      const f = compileFilter(state.filter);
      const sf = state.stateFilter;
      const rows = [];
      for (const r of state.hosts.values()) {
        if (sf && hostState(r) !== sf) continue;
        if (f && !f(r)) continue;
        rows.push(r);
      }
      rows.sort(comparator(state.sortKey, state.sortDir));
      state.view = rows;
      $("spacer").style.height = rows.length * ROW_H + "px";
      $("empty").hidden = rows.length > 0 || state.hosts.size === 0;
      $("shown").textContent = rows.length === state.hosts.size ? rows.length + " hosts" : rows.length + " of " + state.hosts.size + " hosts";
      renderRows();
    });
  }
  // onNextFrame runs fn on the next animation frame, or after 100 ms when
  // frames are not drawn (a hidden tab).
  function onNextFrame(fn) {
    let done = false;
    const run = () => {
      if (done) return;
      done = true;
      fn();
    };
    requestAnimationFrame(run);
    setTimeout(run, 100);
  }

  // ---------- virtual table ----------
  const pool = []; // row elements, reused
  const COLS = ["state", "id", "hostname", "os", "version", "groups", "cpu", "mem", "disk", "seen"];
  function makeRow() {
    const a = document.createElement("a");
    a.className = "row";
    a.setAttribute("role", "row");
    a.cells = {};
    for (const c of COLS) {
      const d = document.createElement("span");
      d.setAttribute("role", "cell");
      if (c === "state") {
        const dot = document.createElement("i");
        dot.className = "dot";
        d.appendChild(dot);
      } else if (c === "cpu" || c === "mem" || c === "disk") {
        d.className = "pct";
        const t = document.createElement("span");
        const bar = document.createElement("span");
        bar.className = "bar";
        bar.appendChild(document.createElement("i"));
        d.append(t, bar);
        d.text = t;
        d.fill = bar.firstChild;
      } else if (c === "seen") {
        d.className = "num";
      }
      a.cells[c] = d;
      a.appendChild(d);
    }
    a.addEventListener("click", (e) => {
      if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return;
      e.preventDefault();
      navigate("/hosts/" + encodeURIComponent(a.dataset.host));
    });
    return a;
  }
  function setText(el, v) {
    if (el.textContent !== v) el.textContent = v;
  }
  function setPct(cell, v) {
    if (v == null) {
      setText(cell.text, "–");
      cell.fill.style.width = "0";
      cell.classList.remove("warn", "crit");
      return;
    }
    setText(cell.text, v.toFixed(1));
    cell.fill.style.width = Math.max(0, Math.min(100, v)) + "%";
    cell.classList.toggle("crit", v >= 90);
    cell.classList.toggle("warn", v >= 75 && v < 90);
  }
  function fillRow(a, r) {
    if (a.dataset.host !== r.id) {
      a.dataset.host = r.id;
      a.href = "/hosts/" + encodeURIComponent(r.id);
    }
    const st = hostState(r);
    if (a.dataset.state !== st) a.dataset.state = st;
    const c = a.cells;
    c.state.title = st + (r.reason ? " (" + r.reason + ")" : "");
    setText(c.id, r.id);
    setText(c.hostname, r.hostname || "");
    setText(c.os, r.platform || r.os || "");
    setText(c.version, r.version || "");
    setText(c.groups, (r.groups || []).join(", "));
    setPct(c.cpu, r.cpu);
    setPct(c.mem, r.mem);
    setPct(c.disk, r.disk);
    c.disk.title = r.disk_mount ? "fullest: " + r.disk_mount : "";
    setText(c.seen, ago(r.seen));
  }
  function renderRows() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    onNextFrame(() => {
      state.renderQueued = false;
      const body = $("tbody");
      if (body.offsetParent === null) return; // overview hidden
      probe.renders++;
      const need = Math.ceil(body.clientHeight / ROW_H) + 2 * OVERSCAN;
      while (pool.length < need) {
        const r = makeRow();
        pool.push(r);
        body.appendChild(r);
      }
      const first = Math.max(0, Math.floor(body.scrollTop / ROW_H) - OVERSCAN);
      for (let k = 0; k < pool.length; k++) {
        const el = pool[k];
        const i = first + k;
        if (k < need && i < state.view.length) {
          fillRow(el, state.view[i]);
          el.style.transform = "translateY(" + i * ROW_H + "px)";
          if (el.hidden) el.hidden = false;
        } else if (!el.hidden) {
          el.hidden = true;
          delete el.dataset.host;
          delete el.dataset.state;
        }
      }
    });
  }
  function setSort(key) {
    if (state.sortKey === key) state.sortDir = -state.sortDir;
    else {
      state.sortKey = key;
      state.sortDir = key === "cpu" || key === "mem" || key === "disk" || key === "seen" ? -1 : 1;
    }
    markSort();
    refresh();
  }
  function markSort() {
    for (const b of document.querySelectorAll("#thead [data-sort]")) {
      if (b.dataset.sort === state.sortKey) b.setAttribute("aria-sort", state.sortDir > 0 ? "ascending" : "descending");
      else b.removeAttribute("aria-sort");
    }
  }

  // ---------- host page ----------
  function openHost(id) {
    if (state.hostID === id && state.hostES) return;
    closeHost();
    state.hostID = id;
    state.expanded.clear();
    state.lastDetail = null;
    $("host-title").textContent = id;
    $("host-state").textContent = "";
    for (const t of ["fs-table", "cmd-table", "audit-table"]) $(t).tBodies[0].replaceChildren();
    $("host-facts").replaceChildren();
    if (state.session.require_login && !state.session.user) return;
    const es = new EventSource("/api/hosts/" + encodeURIComponent(id) + "/events");
    state.hostES = es;
    es.addEventListener("host", (e) => {
      const d = JSON.parse(e.data);
      probe.hostUpdates++;
      state.clockOffset = d.now - Date.now();
      state.lastDetail = d;
      renderHost(d);
    });
  }
  function closeHost() {
    if (state.hostES) state.hostES.close();
    state.hostES = null;
    state.hostID = "";
  }
  function fact(dl, label, value) {
    if (value == null || value === "") return;
    const div = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = label;
    dd.textContent = value;
    dd.title = value;
    div.append(dt, dd);
    dl.appendChild(div);
  }
  function renderHost(d) {
    const h = d.host;
    const st = h.state || "unknown";
    $("host-missing").hidden = d.known;
    const badge = $("host-state");
    badge.dataset.state = st;
    badge.textContent = st + (h.reason ? " (" + h.reason + ")" : "");
    const inv = d.inventory;
    const m = d.metrics;
    const dl = $("host-facts");
    dl.replaceChildren();
    fact(dl, "Hostname", h.hostname);
    fact(dl, "OS", [h.os, h.arch].filter(Boolean).join(" / "));
    fact(dl, "Platform", [h.platform, h.platform_version].filter(Boolean).join(" "));
    if (inv) fact(dl, "Kernel", inv.kernel_version);
    fact(dl, "Agent", h.version);
    fact(dl, "Groups", (h.groups || []).join(", "));
    fact(dl, "Last seen", h.last_seen ? ago(Date.parse(h.last_seen)) + " (" + clock(Date.parse(h.last_seen)) + ")" : "");
    if (h.started_at) fact(dl, "Agent started", clock(Date.parse(h.started_at)));
    if (h.pid) fact(dl, "PID", String(h.pid));
    fact(dl, "Session", h.session ? String(h.session) : "");
    if (m && m.uptime_ms) fact(dl, "Uptime", duration(m.uptime_ms));
    if (inv) {
      fact(dl, "CPU", inv.cpu.model + " (" + inv.cpu.threads + " threads)");
      fact(dl, "Memory", bytes(inv.mem.total));
      const addrs = [];
      for (const i of inv.interfaces || []) for (const a of i.addrs || []) if (!a.startsWith("127.") && a !== "::1/128") addrs.push(a);
      fact(dl, "Addresses", addrs.slice(0, 6).join(", "));
      const facts = Object.entries(inv.facts || {}).map(([k, v]) => k + "=" + v);
      fact(dl, "Facts", facts.join(", "));
      if (d.software_count) fact(dl, "Software", d.software_count + " packages");
    }
    if (m && m.errors && m.errors.length) fact(dl, "Sample errors", m.errors.join("; "));

    const hs = d.history;
    drawChart($("chart-cpu"), hs.t, [{ v: hs.cpu, color: "#2f6fed" }], { max: 100 });
    drawChart($("chart-mem"), hs.t, [{ v: hs.mem, color: "#7c3aed" }], { max: 100 });
    drawChart($("chart-disk"), hs.t, [{ v: hs.disk, color: "#d97706" }], { max: 100 });
    drawChart(
      $("chart-net"),
      hs.t,
      [
        { v: hs.rx, color: "#16a34a", label: "rx" },
        { v: hs.tx, color: "#dc2626", label: "tx" },
      ],
      { fmt: (x) => bytes(x) + "/s" },
    );
    drawChart($("chart-load"), hs.t, [{ v: hs.load1, color: "#0891b2" }], {});
    drawChart($("chart-agent"), hs.t, [{ v: hs.agent_mb, color: "#db2777" }], {});

    const fs = $("fs-table").tBodies[0];
    fs.replaceChildren();
    for (const disk of (m && m.disks) || []) {
      fs.appendChild(tr([disk.mount, bytes(disk.total), bytes(disk.used), disk.percent.toFixed(1)], [0, 1, 1, 1]));
    }
    renderCommands(d.commands || []);
    const au = $("audit-table").tBodies[0];
    au.replaceChildren();
    for (const a of d.audits || []) {
      const row = tr([clock(Date.parse(a.ts)), a.event, a.decision || "", a.kind || "", a.id || "", a.operator || "", [a.summary, a.state, a.reason].filter(Boolean).join(" · ")], [0, 0, 0, 0, 0, 0, 0]);
      row.lastChild.className = "clip";
      row.dataset.id = a.id || "";
      au.appendChild(row);
    }
    renderRunForm();
  }
  function tr(cells, numeric) {
    const row = document.createElement("tr");
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      if (numeric && numeric[i]) td.className = "num";
      row.appendChild(td);
    });
    return row;
  }
  function renderCommands(cmds) {
    const body = $("cmd-table").tBodies[0];
    body.replaceChildren();
    for (const c of cmds) {
      const row = tr([clock(c.first || c.updated), c.id, c.kind || "", c.summary || "", c.operator || "", "", c.exit_code == null ? "" : String(c.exit_code), c.duration_ms ? duration(c.duration_ms) : ""], [0, 0, 0, 0, 0, 0, 1, 1]);
      row.className = "cmd";
      row.dataset.id = c.id;
      row.dataset.state = c.state;
      row.children[3].className = "clip";
      const b = document.createElement("span");
      b.className = "badge";
      b.dataset.state = c.state;
      b.textContent = c.state;
      row.children[5].appendChild(b);
      row.addEventListener("click", () => {
        if (state.expanded.has(c.id)) state.expanded.delete(c.id);
        else state.expanded.add(c.id);
        if (state.lastDetail) renderCommands(state.lastDetail.commands || []);
      });
      body.appendChild(row);
      if (state.expanded.has(c.id)) {
        const out = document.createElement("tr");
        out.className = "out";
        out.dataset.id = c.id;
        const td = document.createElement("td");
        td.colSpan = 8;
        const add = (text, cls) => {
          if (!text) return;
          const pre = document.createElement("pre");
          pre.className = "output " + cls;
          pre.textContent = text;
          td.appendChild(pre);
        };
        add(c.error ? "error: " + c.error : "", "stderr");
        add(c.stdout, "stdout");
        add(c.stderr, "stderr");
        if (c.truncated) add("(output cut: mqagent result " + c.id + " shows all of it)", "");
        if (!td.childNodes.length) add("(no output)", "");
        out.appendChild(td);
        body.appendChild(out);
      }
    }
  }

  // drawChart draws series (arrays aligned with t, null = gap) on a
  // canvas: a line per series, the y axis from 0 to opts.max (or the
  // largest value), the time span below. It records how many points it
  // drew in data-points.
  function drawChart(canvas, t, series, opts) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 300;
    const h = canvas.clientHeight || 140;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const fg = css.getPropertyValue("--muted").trim() || "#667085";
    const line = css.getPropertyValue("--line").trim() || "#dfe3ea";
    const fmt = opts.fmt || ((x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)));
    let max = opts.max || 0;
    if (!opts.max) {
      for (const s of series) for (const v of s.v) if (v != null && v > max) max = v;
      max = max > 0 ? max * 1.15 : 1;
    }
    const L = 64,
      R = 8,
      T = 8,
      B = 20;
    const pw = w - L - R,
      ph = h - T - B;
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = fg;
    g.strokeStyle = line;
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (const f of [0, 0.5, 1]) {
      const y = T + ph - f * ph;
      g.beginPath();
      g.moveTo(L, Math.round(y) + 0.5);
      g.lineTo(L + pw, Math.round(y) + 0.5);
      g.stroke();
      g.fillText(fmt(max * f), L - 6, y);
    }
    let points = 0;
    if (t.length) {
      const t0 = t[0],
        t1 = t[t.length - 1];
      const span = Math.max(1, t1 - t0);
      const x = (ti) => (t.length === 1 ? L + pw : L + ((ti - t0) / span) * pw);
      g.textBaseline = "top";
      g.textAlign = "left";
      g.fillText(clock(t0).split(" ").pop(), L, T + ph + 5);
      g.textAlign = "right";
      g.fillText(clock(t1).split(" ").pop(), L + pw, T + ph + 5);
      for (const s of series) {
        g.strokeStyle = s.color;
        g.fillStyle = s.color;
        g.lineWidth = 1.5;
        g.beginPath();
        let pen = false;
        for (let i = 0; i < t.length; i++) {
          const v = s.v[i];
          if (v == null) {
            pen = false;
            continue;
          }
          const px = x(t[i]);
          const py = T + ph - (Math.min(v, max) / max) * ph;
          if (pen) g.lineTo(px, py);
          else g.moveTo(px, py);
          pen = true;
          points++;
        }
        g.stroke();
        if (t.length === 1 && s.v[0] != null) {
          g.beginPath();
          g.arc(x(t[0]), T + ph - (Math.min(s.v[0], max) / max) * ph, 2.5, 0, 2 * Math.PI);
          g.fill();
        }
      }
      if (series.some((s) => s.label)) {
        g.textAlign = "left";
        g.textBaseline = "top";
        let lx = L + 6;
        for (const s of series) {
          if (!s.label) continue;
          const last = [...s.v].reverse().find((v) => v != null);
          const txt = s.label + (last != null ? " " + fmt(last) : "");
          g.fillStyle = s.color;
          g.fillText(txt, lx, T + 2);
          lx += g.measureText(txt).width + 14;
        }
      }
    } else {
      g.textAlign = "center";
      g.fillStyle = fg;
      g.fillText("no samples yet", L + pw / 2, T + ph / 2);
    }
    canvas.dataset.points = String(points);
  }

  // ---------- commands ----------
  function renderRunForm() {
    const s = state.session;
    const onHost = !!state.hostID;
    $("run").hidden = !(onHost && s.can_run);
    const hint = $("run-hint");
    if (onHost && s.commands && !s.user) {
      hint.textContent = "Sign in to run commands on this host.";
      hint.hidden = false;
    } else if (onHost && !s.commands) {
      hint.textContent = "Read-only dashboard: commands need a signing key and users (see docs/dashboard.md).";
      hint.hidden = false;
    } else hint.hidden = true;
    const kind = $("run-kind").value;
    $("run-command").disabled = kind === "ping" || kind === "inventory";
  }
  async function submitRun(ev) {
    ev.preventDefault();
    const kind = $("run-kind").value;
    const text = $("run-command").value.trim();
    const body = { kind, timeout_s: parseInt($("run-timeout").value, 10) || 0 };
    if (kind === "shell") body.command = text;
    if (kind === "exec") body.argv = text.split(/\s+/).filter(Boolean);
    const status = $("run-status");
    status.textContent = "sending…";
    const res = await postJSON("/api/hosts/" + encodeURIComponent(state.hostID) + "/commands", body);
    if (res.ok) {
      status.textContent = "sent " + res.data.id;
      state.expanded.add(res.data.id);
    } else {
      status.textContent = res.data.error || "failed (" + res.status + ")";
      if (res.status === 401) {
        await loadSession();
        openLogin();
      }
    }
  }

  // ---------- routing ----------
  function navigate(path) {
    if (location.pathname !== path) history.pushState(null, "", path);
    route();
  }
  function route() {
    const m = location.pathname.match(/^\/hosts\/([^/]+)$/);
    document.body.classList.toggle("page-host", !!m);
    if (m) {
      $("view-overview").hidden = true;
      $("view-host").hidden = false;
      const id = decodeURIComponent(m[1]);
      document.title = id + " · mqagent";
      openHost(id);
    } else {
      closeHost();
      $("view-host").hidden = true;
      $("view-overview").hidden = false;
      document.title = "mqagent fleet";
      renderRows();
    }
    renderRunForm();
  }

  // ---------- start ----------
  function init() {
    $("filter").addEventListener("input", (e) => {
      state.filter = e.target.value;
      $("tbody").scrollTop = 0;
      refresh();
    });
    $("state-filter").addEventListener("change", (e) => {
      state.stateFilter = e.target.value;
      $("tbody").scrollTop = 0;
      refresh();
    });
    for (const b of document.querySelectorAll("#thead [data-sort]")) b.addEventListener("click", () => setSort(b.dataset.sort));
    $("tbody").addEventListener("scroll", renderRows, { passive: true });
    window.addEventListener("resize", () => {
      renderRows();
      if (state.lastDetail && state.hostID) renderHost(state.lastDetail);
    });
    window.addEventListener("popstate", route);
    for (const a of document.querySelectorAll("a[data-nav]"))
      a.addEventListener("click", (e) => {
        if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return;
        e.preventDefault();
        navigate(a.getAttribute("href"));
      });
    $("btn-login").addEventListener("click", openLogin);
    $("btn-logout").addEventListener("click", logout);
    $("login-form").addEventListener("submit", submitLogin);
    $("login-cancel").addEventListener("click", () => $("login-dialog").close());
    $("run-form").addEventListener("submit", submitRun);
    $("run-kind").addEventListener("change", renderRunForm);
    // "Last seen" moves on without new data.
    setInterval(() => {
      if (!$("view-overview").hidden) renderRows();
    }, 1000);
    markSort();
    loadSession().then(() => {
      if (state.session.require_login && !state.session.user) openLogin();
      startOverview();
      route();
    });
  }
  init();
})();
