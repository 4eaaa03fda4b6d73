// The clawpen dashboard: fetches /api/overview and renders it; refreshes on server-sent events.
// Every value is put in the page as text (textContent), never as markup: chat messages and
// chat ids come from strangers.
"use strict";

const COLORS = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477"];
const SVG = "http://www.w3.org/2000/svg";
let csrf = "";
let pending = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function when(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleString();
}

function fill(id, rows) {
  // an empty table says so, rather than looking like one that has not loaded
  const body = document.querySelector(`#${id} tbody`);
  const columns = document.querySelectorAll(`#${id} thead th`).length;
  body.replaceChildren(...(rows.length ? rows :
    [el("tr", { class: "none" }, el("td", { colspan: columns }, "none"))]));
}

function showError(text) {
  const box = document.getElementById("error");
  box.textContent = text;
  box.hidden = !text;
}

async function act(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Clawpen-CSRF": csrf },
    body: JSON.stringify(body || {}),
  });
  const answer = await response.json().catch(() => ({}));
  showError(response.ok ? "" : answer.error || `failed (${response.status})`);
  refresh();
}

function renderAgents(data) {
  fill("agents", data.agents.map((a) => el("tr", { "data-agent": a.id },
    el("td", {}, a.id),
    el("td", { class: `state state-${a.state}` }, a.state),
    el("td", {}, a.container || ""),
    el("td", {}, (a.tasks || []).map((t) => `#${t.id} ${t.chat}`).join(", ")),
    el("td", {}, a.state === "stopped" ? "" :
      el("button", { onclick: () => act(`/api/agents/${encodeURIComponent(a.id)}/stop`) }, "stop")),
  )));
  const select = document.querySelector("#pair select");
  const chosen = select.value;
  select.replaceChildren(...data.agents.map((a) => el("option", { value: a.id }, a.id)));
  if (chosen) select.value = chosen;
}

function renderSpend(spend) {
  const agents = Object.keys(spend.agents);
  fill("spend", agents.map((a) => el("tr", { "data-agent": a },
    el("td", {}, a),
    // no price under model.prices: the cost is unknown, not nothing (as /usage says)
    el("td", { class: "usd" }, spend.total_usd[a] || !spend.total_tokens[a] ?
      spend.total_usd[a].toFixed(4) : "cost unknown"),
    el("td", { class: "tokens" }, String(spend.total_tokens[a])),
  )));
  const anyUsd = agents.some((a) => spend.total_usd[a] > 0);
  const key = anyUsd ? "usd" : "tokens";
  const days = spend.days;
  const totals = days.map((_, i) => agents.reduce((sum, a) => sum + spend.agents[a][key][i], 0));
  const top = Math.max(...totals) || 1;
  // the legend has a row of its own below the dates, and the dates are centred under their
  // bars with room on the right: no label overlaps another or is cut at the edge
  const width = 420, height = 160, left = 44, bottom = 20, legend = 18, right = 16;
  const bar = (width - left) / days.length;
  const chart = svg("svg", { viewBox: `0 0 ${width + right} ${height + bottom + legend}`,
    width: "100%", role: "img",
    "aria-label": `spend per day in ${anyUsd ? "US dollars" : "tokens"}` });
  chart.append(svg("text", { x: 0, y: 16, class: "scale" },
    anyUsd ? `$${top.toPrecision(2)}` : `${Math.round(top)} tok`));
  chart.append(svg("line", { x1: left, y1: height, x2: width, y2: height, stroke: "#999" }));
  days.forEach((day, i) => {
    let y = height;
    agents.forEach((a, j) => {
      const value = spend.agents[a][key][i];
      if (!value) return;
      const h = (value / top) * (height - 12);
      y -= h;
      const rect = svg("rect", { x: left + i * bar + 2, y, width: bar - 4, height: h,
        fill: COLORS[j % COLORS.length], class: "bar", "data-agent": a, "data-day": day });
      rect.append(svg("title", {}, `${a} ${day}: ${anyUsd ? "$" + value.toFixed(4) : value + " tokens"}`));
      chart.append(rect);
    });
    if ((days.length - 1 - i) % 2 === 0) {
      chart.append(svg("text", { x: left + (i + 0.5) * bar, y: height + 14, "text-anchor": "middle",
        class: "date" }, day.slice(5)));
    }
  });
  const row = height + bottom + 12;
  agents.forEach((a, j) => {
    chart.append(svg("rect", { x: left + 4 + j * 90, y: row - 8, width: 8, height: 8,
      fill: COLORS[j % COLORS.length] }));
    chart.append(svg("text", { x: left + 16 + j * 90, y: row, class: "legend" }, a));
  });
  document.getElementById("spend-chart").replaceChildren(chart);
}

function renderMessages(data) {
  fill("messages", data.messages.map((m) => el("tr", { "data-id": m.id },
    el("td", {}, when(m.at)),
    el("td", {}, `${m.channel}:${m.chat}`),
    el("td", {}, m.sender),
    el("td", { class: "text" }, m.text),
    el("td", {}, m.status),
    el("td", {}, m.agent || ""),
  )));
  fill("tasks", data.tasks.map((t) => el("tr", { "data-id": t.id },
    el("td", {}, when(t.at)),
    el("td", {}, t.agent),
    el("td", {}, t.chat),
    el("td", {}, t.status),
    el("td", {}, t.seconds == null ? "" : t.seconds.toFixed(2)),
    el("td", { class: "text" }, t.error),
  )));
}

function renderJobs(data) {
  fill("jobs", data.jobs.map((j) => {
    const runs = el("td", { class: "runs" }, ...j.runs.map((r) =>
      el("span", { class: r.status, title: `${r.scheduled_for || r.fired}: ${r.status} ${r.error || ""}` })));
    const paused = j.state.startsWith("paused");
    const action = paused ? "resume" : "pause";
    return el("tr", { "data-job": j.name },
      el("td", {}, j.name), el("td", {}, j.agent), el("td", {}, j.schedule),
      el("td", {}, j.state + (j.paused_reason ? ` (${j.paused_reason})` : "")),
      el("td", {}, j.next_run || ""), runs,
      el("td", {}, j.state.startsWith("done") ? "" : el("button",
        { onclick: () => act(`/api/jobs/${encodeURIComponent(j.name)}/${action}?agent=${encodeURIComponent(j.agent)}`) }, action)));
  }));
}

function renderApprovals(data) {
  fill("approvals", data.approvals.map((a) => el("tr", { "data-approval": String(a.id) },
    el("td", {}, String(a.id)), el("td", {}, a.agent), el("td", {}, a.kind),
    el("td", { class: "text" }, a.summary), el("td", {}, a.chat),
    el("td", {}, new Date(a.expires_at * 1000).toLocaleTimeString()),
    el("td", {},
      el("button", { onclick: () => act(`/api/approvals/${a.id}/allow`) }, "allow"),
      el("button", { onclick: () => act(`/api/approvals/${a.id}/deny`) }, "deny")))));
}

function renderRest(data) {
  fill("channels", data.channels.map((c) => el("tr", {},
    el("td", {}, c.name), el("td", {}, c.state), el("td", { class: "text" }, c.error))));
  fill("pairings", Object.entries(data.pairings).map(([chat, agent]) =>
    el("tr", {}, el("td", {}, chat), el("td", {}, agent))));
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function refresh() {
  pending = null;
  const response = await fetch("/api/overview");
  if (response.status === 401) {
    showError("The token is no longer valid: run `clawpen dashboard` and open the address it prints.");
    return;
  }
  const data = await response.json();
  renderAgents(data);
  renderSpend(data.spend);
  renderMessages(data);
  renderJobs(data);
  renderApprovals(data);
  renderRest(data);
}

function soon() {
  if (pending === null) pending = setTimeout(refresh, 100);
}

function listen() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  events.addEventListener("hello", () => { live.textContent = "live"; live.className = "live on"; soon(); });
  events.addEventListener("update", soon);
  events.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("pair").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    act("/api/pairings", { chat: form.get("chat"), agent: form.get("agent") });
  });
  csrf = (await (await fetch("/api/session")).json()).csrf;
  await refresh();
  listen();
});
