// The dashboard page: reads the JSON API, renders one view per route (#/, #/traces,
// #/trace/<id>, #/object/<plural>/<ns>/<name>), and re-reads when the server's event
// stream says something changed. Plain DOM, no framework; text only through textContent.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");

function withToken(path) {
  return token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
}

async function api(path) {
  const r = await fetch(withToken(path));
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const fmt = (v, d = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const ms = (us) => (us / 1000).toFixed(us < 10000 ? 2 : 1) + " ms";

// Which view the URL asks for; `?trace=<id>` works as well as `#/trace/<id>`.
function route() {
  if (params.get("trace") && !location.hash) return { view: "trace", id: params.get("trace") };
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "trace" && parts[1]) return { view: "trace", id: parts[1] };
  if (parts[0] === "traces") return { view: "traces" };
  if (parts[0] === "object" && parts.length === 4) return { view: "object", plural: parts[1], ns: parts[2], name: parts[3] };
  return { view: "overview" };
}

function actorsTable(rows) {
  const body = el("tbody");
  let proc = null;
  for (const r of rows) {
    if (r.process !== proc) {
      proc = r.process;
      body.append(el("tr", { class: "proc" }, el("td", { colspan: 10 }, proc)));
    }
    body.append(
      el("tr", { class: r.instance ? "actor instance" : "actor", "data-actor": r.actor, "data-instance": r.instance, "data-process": r.process, "data-handled": r.handled },
        el("td", {}, r.actor), el("td", {}, r.instance || ""),
        el("td", { class: "n handled" }, r.handled), el("td", { class: "n" }, fmt(r.rate)),
        el("td", { class: "n" }, r.mailbox), el("td", { class: "n" }, fmt(r.p50_ms, 2)), el("td", { class: "n" }, fmt(r.p99_ms, 2)),
        el("td", { class: "n" }, fmt(r.queued_p99_ms, 2)),
        el("td", { class: "n" + (r.failed ? " bad" : "") }, r.failed), el("td", { class: "n muted" }, fmt(r.age_s, 0) + " s")));
  }
  const head = el("tr", {}, ["actor", "instance", "handled", "msg/s", "mailbox", "p50 ms", "p99 ms", "wait p99 ms", "failed", "updated"].map((h, i) => el("th", { class: i > 1 ? "n" : "" }, h)));
  return el("table", { id: "actors" }, el("thead", {}, head), body);
}

function nodesView(nodes) {
  return el("div", { id: "nodes" }, nodes.map((n) =>
    el("div", { class: "node", "data-node": n.name },
      el("b", {}, n.name || "(no node)"), el("span", { class: n.ready ? "muted" : "bad" }, n.name ? (n.ready ? "Ready" : "NotReady") : ""), " ",
      n.pods.map((p) => el("a", { class: "pod " + p.phase, href: "#/object/pods/" + encodeURIComponent(p.namespace) + "/" + encodeURIComponent(p.name), "data-pod": p.namespace + "/" + p.name }, p.name + " " + p.phase)))));
}

function tracesTable(traces) {
  return el("table", { id: "traces" },
    el("thead", {}, el("tr", {}, el("th", {}, "trace"), el("th", {}, "began"), el("th", { class: "n" }, "duration"), el("th", { class: "n" }, "spans"), el("th", {}, "actors"))),
    el("tbody", {}, traces.map((t) =>
      el("tr", { "data-trace": t.trace_id },
        el("td", {}, el("a", { href: "#/trace/" + t.trace_id }, t.trace_id.slice(0, 16) + "…")),
        el("td", {}, new Date(t.start_us / 1000).toLocaleTimeString()),
        el("td", { class: "n" }, ms(t.duration_us)), el("td", { class: "n" }, t.spans), el("td", { class: "wrap" }, t.actors.join(" → "))))));
}

async function overview() {
  const [actors, nodes, traces] = await Promise.all([api("/api/actors"), api("/api/nodes"), api("/api/traces")]);
  return [
    el("section", {}, el("h2", {}, "Actors of every process"), actorsTable(actors)),
    el("div", { class: "grid2" },
      el("section", {}, el("h2", {}, "Nodes and their pods"), nodesView(nodes)),
      el("section", {}, el("h2", {}, "Recent traces"), tracesTable(traces.slice(0, 15)))),
  ];
}

async function tracesView() {
  return [el("section", {}, el("h2", {}, "Recent traces"), tracesTable(await api("/api/traces")))];
}

async function traceView(id) {
  const spans = await api("/api/traces/" + encodeURIComponent(id));
  const total = Math.max(1, ...spans.map((s) => s.offset_us + s.took_us));
  const actors = new Set(spans.map((s) => s.actor));
  const rows = spans.map((s) =>
    el("div", { class: "wrow span", "data-actor": s.actor, "data-process": s.process, "data-span": s.span_id, title: "span " + s.span_id + " parent " + s.parent_id },
      el("div", { class: "wlabel" }, el("b", {}, s.actor), " ", el("span", { class: "muted" }, s.process)),
      el("div", { class: "wtrack" }, el("div", { class: "wbar " + s.actor, style: "left:" + (100 * s.offset_us / total) + "%;width:" + Math.max(0.3, 100 * s.took_us / total) + "%" })),
      el("div", { class: "n muted" }, "+" + ms(s.offset_us))));
  return [el("section", { id: "trace", "data-trace": id, "data-actors": actors.size },
    el("h2", {}, "Trace " + id),
    el("p", { class: "muted" }, spans.length + " spans from " + actors.size + " actors over " + ms(total) + ": " + [...actors].join(", ")),
    spans.length ? el("div", { class: "waterfall" }, rows) : el("p", {}, "No spans of this trace (yet, or any more)."))];
}

async function objectView(r) {
  const revs = await api("/api/history/" + [r.plural, r.ns, r.name].map(encodeURIComponent).join("/"));
  return [el("section", { id: "history" },
    el("h2", {}, "History of " + r.plural + " " + (r.ns === "_" ? "" : r.ns + "/") + r.name),
    el("table", {},
      el("thead", {}, el("tr", {}, ["revision", "change", "writer", "trace", "object"].map((h) => el("th", {}, h)))),
      el("tbody", {}, revs.reverse().map((v) =>
        el("tr", { class: "revision", "data-rev": v.rev, "data-writer": v.writer },
          el("td", { class: "n" }, v.rev), el("td", {}, v.type), el("td", {}, v.writer || "–"),
          el("td", {}, v.trace_id ? el("a", { href: "#/trace/" + v.trace_id }, v.trace_id.slice(0, 16) + "…") : "–"),
          el("td", {}, el("details", {}, el("summary", {}, "generation " + ((v.object.metadata || {}).generation || "–") + ((v.object.status || {}).phase ? ", " + v.object.status.phase : "")), el("pre", {}, JSON.stringify(v.object, null, 1)))))))))];
}

let rendering = false, again = false;
async function render() {
  if (rendering) { again = true; return; }
  rendering = true;
  try {
    const r = route();
    const parts = r.view === "trace" ? await traceView(r.id) : r.view === "traces" ? await tracesView() : r.view === "object" ? await objectView(r) : await overview();
    document.getElementById("view").replaceChildren(...parts);
    document.body.dataset.rendered = r.view;
  } catch (e) {
    document.getElementById("view").replaceChildren(el("p", { class: "bad" }, String(e)));
  } finally {
    rendering = false;
    if (again) { again = false; render(); }
  }
}

document.getElementById("open-object").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  location.hash = "#/object/" + [f.get("plural") || "deployments", f.get("ns") || "default", f.get("name")].map(encodeURIComponent).join("/");
});
window.addEventListener("hashchange", render);

function live() {
  const es = new EventSource(withToken("/api/events"));
  const badge = document.getElementById("live");
  es.onopen = () => { badge.textContent = "live"; badge.className = "live on"; };
  es.onerror = () => { badge.textContent = "reconnecting…"; badge.className = "live"; };
  // An object's history is read from the events stream on request, not live.
  es.addEventListener("changed", () => { if (route().view !== "object") render(); });
}

// `?live=0` renders once (headless browsers wait for an open event stream forever).
render().then(() => {
  if (params.get("live") !== "0") live();
  else document.getElementById("live").textContent = "not live (live=0)";
});
