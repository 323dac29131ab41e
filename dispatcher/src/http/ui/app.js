// The dispatcher's dashboard: plain DOM, no framework, no build step. Every number comes
// from the admin API of the replica that serves this page; it refreshes every 2 seconds.
"use strict";

const API = "/_dispatcher";
const TOKEN_KEY = "dispatcher-admin-token";
const REFRESH_MS = 2000;

let timer = null;
// The previous stats of each function, for rates between two refreshes.
const previous = new Map();

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(method, path, body) {
  const resp = await fetch(API + path, {
    method,
    headers: { Authorization: "Bearer " + token() },
    body,
  });
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    show();
    throw new Error("the admin token was rejected: sign in again");
  }
  const text = await resp.text();
  const type = resp.headers.get("content-type") || "";
  let data = text;
  if (type.startsWith("application/json")) {
    try { data = JSON.parse(text); } catch (_) { /* shown as text */ }
  }
  if (!resp.ok && !(method === "POST" && path.endsWith("/invoke"))) {
    const message = data && data.message ? data.message : text;
    throw new Error(resp.status + ": " + message);
  }
  return { status: resp.status, data, text };
}

// el("td", {class: "num"}, "12"): an element with attributes and children (text is escaped).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function table(headers, rows, id) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { class: h.num ? "num" : null }, h.label || h)))),
    el("tbody", {}, rows));
}

function bytes(n) {
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(0) + " KiB";
  return n + " B";
}

function ms(v) { return v === null || v === undefined ? "-" : v.toFixed(v < 10 ? 2 : 0) + " ms"; }

function say(text, bad) {
  const m = document.getElementById("message");
  m.textContent = text;
  m.className = bad ? "error" : "ok";
}

function route() {
  const h = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = h.split("/");
  return { page: page || "functions", arg: rest.map(decodeURIComponent).join("/") };
}

// Renders the page the hash names, and keeps refreshing it.
function show() {
  clearInterval(timer);
  const signedIn = !!token();
  document.getElementById("login").hidden = signedIn;
  document.getElementById("nav").hidden = !signedIn;
  const view = document.getElementById("view");
  if (!signedIn) {
    view.replaceChildren();
    document.getElementById("token").focus();
    return;
  }
  const { page, arg } = route();
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.id === "nav-" + (page === "function" ? "functions" : page));
  }
  const render = page === "function" ? (v) => functionPage(arg, v)
    : page === "schedules" ? schedulesPage
    : functionsPage;
  let first = true;
  const tick = async () => {
    try {
      await render(view, first);
      first = false;
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      say(e.message, true);
    }
  };
  tick();
  timer = setInterval(tick, REFRESH_MS);
}

async function functionsPage(view) {
  const { data: functions } = await api("GET", "/functions");
  const stats = await Promise.all(functions.map((f) =>
    api("GET", "/functions/" + encodeURIComponent(f.name) + "/stats").then((r) => r.data, () => null)));
  const rows = functions.map((f, i) => el("tr", { "data-function": f.name },
    el("td", {}, el("a", { href: "#/function/" + encodeURIComponent(f.name), class: "function-link" }, f.name)),
    el("td", { class: "num" }, "v" + f.version),
    el("td", { class: "mono" }, f.route || "-"),
    el("td", { class: "mono" }, f.schedules.join("; ") || "-"),
    el("td", { class: "num" }, bytes(f.module_size)),
    el("td", {}, f.deployed_at),
    el("td", {}, f.deployed_by),
    el("td", { class: "num requests" }, stats[i] ? stats[i].total : "-"),
    el("td", { class: "num" }, stats[i] ? stats[i].errors : "-")));
  view.replaceChildren(
    el("h2", {}, "Functions (" + functions.length + ")"),
    table(["Name", { label: "Version", num: true }, "Route", "Schedules", { label: "Module", num: true },
      "Deployed", "By", { label: "Requests", num: true }, { label: "Errors", num: true }], rows, "functions"));
}

async function functionPage(name, view) {
  const enc = encodeURIComponent(name);
  const [details, stats, invocations, logs] = await Promise.all([
    api("GET", "/functions/" + enc),
    api("GET", "/functions/" + enc + "/stats").catch(() => null),
    api("GET", "/functions/" + enc + "/invocations?limit=50").catch(() => null),
    api("GET", "/functions/" + enc + "/logs").catch(() => null),
  ]);
  const d = details.data;
  const s = stats ? stats.data : null;
  const now = Date.now();
  let rate = "-", errorRate = "-";
  const prev = previous.get(name);
  if (s && prev && now > prev.at) {
    const dt = (now - prev.at) / 1000;
    const dn = s.total - prev.total;
    rate = (dn / dt).toFixed(1) + "/s";
    errorRate = dn > 0 ? (100 * (s.errors - prev.errors) / dn).toFixed(1) + "%" : "0%";
  }
  if (s) previous.set(name, { at: now, total: s.total, errors: s.errors });

  const card = (label, value, id) => el("div", { class: "card" },
    el("div", { class: "label" }, label), el("div", { class: "value", id }, value));
  const cards = el("div", { class: "cards" },
    card("Requests", s ? s.total : "-", "stat-total"),
    card("Errors", s ? s.errors : "-", "stat-errors"),
    card("Rate", rate, "stat-rate"),
    card("Error rate", errorRate, "stat-error-rate"),
    card("p50 (last min)", ms(s && s.p50_ms), "stat-p50"),
    card("p95", ms(s && s.p95_ms), "stat-p95"),
    card("p99", ms(s && s.p99_ms), "stat-p99"));

  const current = d.current ? d.current.version : d.current_version;
  const versions = d.versions.slice().reverse().map((v) => el("tr", { "data-version": v.version },
    el("td", { class: "num" }, "v" + v.version),
    el("td", { class: "mono" }, v.module_hash.slice(0, 12)),
    el("td", { class: "num" }, bytes(v.module_size)),
    el("td", {}, v.deployed_at),
    el("td", {}, v.deployed_by),
    el("td", { class: "mono" }, v.source),
    el("td", {}, v.version === current ? el("span", { class: "current" }, "current")
      : el("button", { type: "button", class: "secondary rollback", id: "rollback-" + v.version,
        onclick: () => rollback(name, v.version) }, "Roll back to v" + v.version))));

  const invRows = (invocations ? invocations.data : []).map((r) => el("tr", {},
    el("td", {}, r.at), el("td", { class: "mono" }, r.request_id), el("td", {}, r.trigger),
    el("td", { class: r.outcome === "ok" ? "ok" : "bad" }, r.outcome),
    el("td", { class: "num" }, r.status || "-"),
    el("td", { class: "num" }, (r.duration_us / 1000).toFixed(2) + " ms")));

  const lines = logs && typeof logs.data === "string" ? logs.data.split("\n").filter((l) => l.trim()) : [];
  const logText = lines.slice(-200).map((l) => {
    try {
      const x = JSON.parse(l);
      return x.at + " " + (x.request_id || "-") + " " + x.source + " " + x.level + ": " + x.message;
    } catch (_) { return l; }
  }).join("\n");

  // The invoke form keeps what was typed across refreshes.
  let form = document.getElementById("invoke-form");
  if (!form || form.dataset.function !== name) {
    form = el("form", { id: "invoke-form", class: "invoke", "data-function": name, onsubmit: (e) => { e.preventDefault(); invoke(name); } },
      el("input", { id: "invoke-query", placeholder: "query, e.g. id=7", "aria-label": "query" }),
      el("textarea", { id: "invoke-body", placeholder: "body (stdin)", "aria-label": "body" }),
      el("button", { type: "submit", id: "invoke-button" }, "Invoke"));
  }
  const output = document.getElementById("invoke-output") || el("pre", { id: "invoke-output", class: "logs" });

  view.replaceChildren(
    el("h2", { id: "function-name" }, name, d.current ? " (v" + d.current.version + ")" : " (removed)"),
    d.current ? el("p", { class: "mono" }, d.current.route || "", d.current.schedules.length ? " schedules: " + d.current.schedules.join("; ") : "") : null,
    cards,
    el("h3", {}, "Versions"),
    table([{ label: "Version", num: true }, "Module", { label: "Size", num: true }, "Deployed", "By", "Source", ""], versions, "versions"),
    el("h3", {}, "Recent invocations on this replica"),
    table(["At", "Request id", "Trigger", "Outcome", { label: "Status", num: true }, { label: "Duration", num: true }], invRows, "invocations"),
    el("h3", {}, "Recent logs"),
    el("pre", { class: "logs", id: "logs" }, logText || "(no lines yet)"),
    el("h3", {}, "Invoke"),
    form,
    output);
}

async function rollback(name, version) {
  try {
    const r = await api("POST", "/functions/" + encodeURIComponent(name) + "/rollback?to=" + version);
    say(name + " is at v" + r.data.version + " again (" + r.data.action + ")");
    show();
  } catch (e) {
    say(e.message, true);
  }
}

async function invoke(name) {
  const query = document.getElementById("invoke-query").value;
  const body = document.getElementById("invoke-body").value;
  const out = document.getElementById("invoke-output");
  try {
    const r = await api("POST", "/functions/" + encodeURIComponent(name) + "/invoke" + (query ? "?" + query : ""), body);
    out.textContent = "status " + r.status + "\n\n" + r.text;
  } catch (e) {
    out.textContent = e.message;
  }
}

async function schedulesPage(view) {
  const { data: schedules } = await api("GET", "/schedules");
  const blocks = schedules.map((s) => el("div", { class: "schedule", "data-schedule": s.function + "/" + s.schedule },
    el("h3", {}, s.function + " / " + s.schedule),
    el("p", { class: "mono" }, "cron \"" + s.cron + "\" in " + s.timezone),
    el("p", {}, "Next: ", el("span", { class: "mono next" }, s.next.join(", ") || "none")),
    s.runs.length ? table(["Fire time", { label: "Attempt", num: true }, "Status", "Replica", "Started",
      { label: "Duration", num: true }, "Request id", "Error"],
    s.runs.map((r) => el("tr", {},
      el("td", {}, r.fire_time), el("td", { class: "num" }, r.attempt),
      el("td", { class: r.status === "succeeded" ? "ok" : r.status === "failed" ? "bad" : null }, r.status),
      el("td", { class: "mono" }, r.replica), el("td", {}, r.started_at),
      el("td", { class: "num" }, r.duration_ms === null ? "-" : r.duration_ms + " ms"),
      el("td", { class: "mono" }, r.request_id || "-"), el("td", { class: "bad" }, r.error || "")))) : el("p", {}, "No runs yet.")));
  view.replaceChildren(el("h2", {}, "Schedules (" + schedules.length + ")"), ...blocks);
}

document.getElementById("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const given = document.getElementById("token").value.trim();
  const error = document.getElementById("login-error");
  const resp = await fetch(API + "/functions", { headers: { Authorization: "Bearer " + given } });
  if (resp.ok) {
    sessionStorage.setItem(TOKEN_KEY, given);
    document.getElementById("token").value = "";
    error.textContent = "";
    show();
  } else {
    error.textContent = resp.status === 401 ? "That token was rejected." : "The platform answered " + resp.status + ".";
  }
});

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  show();
});

window.addEventListener("hashchange", show);
show();
