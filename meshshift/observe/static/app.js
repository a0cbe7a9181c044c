// The meshshift dashboard: a list of rollouts and a page per rollout, fed by the
// daemon's own API (/api/v1) through Server-Sent Events. No framework, no CDN: every
// value goes into the page through textContent, never through HTML.
"use strict";

const TOKEN_KEY = "meshshift.token";
const ACTIONS = [
  ["promote", "Promote", "Skip the current pause"],
  ["promote-full", "Promote full", "Skip every remaining step and analysis"],
  ["abort", "Abort", "Send all traffic back to the stable"],
  ["retry", "Retry", "Retry an aborted rollout or a blocked analysis"],
];

let info = { controlEnabled: false, leader: true, version: "" };
let serverOffset = 0; // the daemon's clock minus this browser's, in seconds (from its Date header)
let stream = null;
let lastNotice = null; // the answer to the last button, kept across re-renders

// --- tiny DOM helpers ----------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children.flat(Infinity)) if (child) node.append(child);
  return node;
}

// A time from the API as seconds since the epoch: a number, or an RFC 3339 string.
function toSeconds(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value;
  const parsed = Date.parse(String(value));
  return Number.isNaN(parsed) ? null : parsed / 1000;
}

// Now on the daemon's clock: deadlines it sets (a timed pause) are on that clock.
function serverNow() {
  return Date.now() / 1000 + serverOffset;
}

function ago(value) {
  const seconds = toSeconds(value);
  if (seconds === null) return "";
  const delta = Math.max(0, serverNow() - seconds);
  if (delta < 60) return `${Math.round(delta)}s ago`;
  if (delta < 3600) return `${Math.round(delta / 60)}m ago`;
  if (delta < 86400) return `${Math.round(delta / 3600)}h ago`;
  return `${Math.round(delta / 86400)}d ago`;
}

function clock(value) {
  const seconds = toSeconds(value);
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

// "1h 02m 05s", "4m 05s", "12s": what is left until a deadline.
function duration(seconds) {
  const total = Math.max(0, Math.ceil(seconds));
  const [h, m, s] = [Math.floor(total / 3600), Math.floor((total % 3600) / 60), total % 60];
  const pad = (n) => String(n).padStart(2, "0");
  if (h) return `${h}h ${pad(m)}m ${pad(s)}s`;
  if (m) return `${m}m ${pad(s)}s`;
  return `${s}s`;
}

function countdownText(deadline) {
  const left = deadline - serverNow();
  return left > 0 ? `resumes in ${duration(left)}` : "resuming now";
}

// A countdown to `deadline` (seconds since the epoch), kept current by tickCountdowns.
function countdown(deadline) {
  return el("span", { class: "countdown", "data-testid": "pause-countdown", "data-deadline": deadline, text: countdownText(deadline) });
}

function tickCountdowns() {
  for (const node of document.querySelectorAll("[data-deadline]")) node.textContent = countdownText(Number(node.dataset.deadline));
}

function phaseBadge(phase) {
  return el("span", { class: `badge phase-${String(phase).toLowerCase()}`, "data-testid": "phase", text: phase });
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// --- routing ---------------------------------------------------------------------------

function route() {
  if (stream) {
    stream.close();
    stream = null;
  }
  lastNotice = null;
  const match = location.hash.match(/^#\/rollouts\/([^/]+)\/([^/]+)$/);
  if (match) showRollout(decodeURIComponent(match[1]), decodeURIComponent(match[2]));
  else showList();
}

function watch(url, render) {
  stream = new EventSource(url);
  stream.onmessage = (event) => render(JSON.parse(event.data));
  stream.addEventListener("deleted", () => {
    document.getElementById("view").replaceChildren(el("p", { class: "notice", text: "This rollout was deleted." }));
    stream.close();
  });
  stream.onerror = () => {
    const banner = document.getElementById("connection");
    if (banner) banner.textContent = "reconnecting…";
  };
  stream.onopen = () => {
    const banner = document.getElementById("connection");
    if (banner) banner.textContent = "";
  };
}

// --- the list --------------------------------------------------------------------------

function showList() {
  document.title = "meshshift: rollouts";
  watch("/api/v1/rollouts?watch=true", renderList);
}

function renderList(data) {
  const rows = data.rollouts.map((r) =>
    el(
      "tr",
      { "data-testid": "rollout-row" },
      el("td", {}, el("a", { href: `#/rollouts/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}`, text: r.name })),
      el("td", { text: r.namespace }),
      el("td", {}, phaseBadge(r.phase)),
      el("td", { text: r.step.label }),
      el("td", {}, weightBar(r.weights.canary)),
      el("td", { class: "message", text: r.message }),
      el("td", { class: "muted", text: ago(Date.parse(r.updatedAt) / 1000) }),
    ),
  );
  const table = rows.length
    ? el(
        "table",
        { class: "list" },
        el("thead", {}, el("tr", {}, ["Rollout", "Namespace", "Phase", "Step", "Canary weight", "Message", "Updated"].map((h) => el("th", { text: h })))),
        el("tbody", {}, rows),
      )
    : el("p", { class: "muted", text: "No rollouts yet." });
  const key = rows.length ? legend("stable", "canary", "list-legend") : null;
  document.getElementById("view").replaceChildren(el("h1", { text: "Rollouts" }), el("p", { id: "connection", class: "muted" }), key, table);
}

// --- one rollout -----------------------------------------------------------------------

function showRollout(namespace, name) {
  document.title = `meshshift: ${namespace}/${name}`;
  const url = `/api/v1/rollouts/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`;
  fetch(url).then((response) => {
    if (response.status === 404) {
      document.getElementById("view").replaceChildren(el("p", { class: "notice", text: `No rollout ${namespace}/${name}.` }), el("a", { href: "#/", text: "All rollouts" }));
      return;
    }
    watch(`${url}?watch=true`, (view) => renderRollout(view, url));
  });
}

function renderRollout(view, url) {
  const sections = [
    el("nav", { class: "crumbs" }, el("a", { href: "#/", text: "Rollouts" }), " / ", `${view.namespace}/${view.name}`),
    el(
      "section",
      { class: "summary" },
      el("h1", {}, view.name, " ", phaseBadge(view.phase)),
      el("p", { class: "message", "data-testid": "message", text: view.message }),
      el("p", { id: "connection", class: "muted" }),
      facts(view),
      controls(view, url),
    ),
    el("section", {}, el("h2", { text: "Traffic" }), weights(view)),
    view.blueGreen
      ? el("section", { "data-testid": "blue-green" }, el("h2", { text: "Blue-green" }), blueGreen(view))
      : el("section", {}, el("h2", { text: "Steps" }), steps(view)),
    view.headerRoutes.length ? el("section", {}, el("h2", { text: "Header routes" }), headerRoutes(view)) : null,
    el("section", {}, el("h2", { text: "Analysis" }), analysis(view)),
    el("section", {}, el("h2", { text: "History" }), history(view)),
  ];
  document.getElementById("view").replaceChildren(...sections.filter(Boolean));
}

function facts(view) {
  const items = [
    ["Step", el("span", { "data-testid": "step", text: view.step.label })],
    ["Strategy", `${view.strategy} (${view.trafficRouter || "no router"})`],
    ["Stable", view.revisions.stable || "none"],
    ["Canary", view.revisions.canary || "none"],
    ["Images", Object.entries(view.images).map(([role, images]) => `${images.join(", ")} (${imageRole(view, role)})`).join("; ") || "unknown"],
    ["Started", view.rolloutStartedAt ? `${clock(view.rolloutStartedAt)} (${ago(view.rolloutStartedAt)})` : "not rolling out"],
  ];
  if (view.blueGreen) {
    const bg = view.blueGreen;
    items.splice(0, 1, ["Active", el("span", { "data-testid": "bg-active", text: revisionWithRoles(bg, bg.activeRevision) })]);
    items.splice(1, 0, ["Preview", el("span", { "data-testid": "bg-preview", text: revisionWithRoles(bg, bg.previewRevision) })]);
    if (bg.switchedAt) items.push(["Switched", `${clock(bg.switchedAt)} (${ago(bg.switchedAt)})`]);
  }
  const pauseUntil = toSeconds(view.pauseUntil);
  if (pauseUntil) items.push(["Paused until", el("span", {}, clock(pauseUntil), " (", countdown(pauseUntil), ")")]);
  if (view.lastError) items.push(["Last error", view.lastError]);
  return el("dl", { class: "facts" }, items.map(([term, value]) => [el("dt", { text: term }), el("dd", {}, value)]));
}

function controls(view, url) {
  const notice = el("p", { class: "notice", id: "control-result", "data-testid": "control-result", role: "status" });
  if (lastNotice) {
    notice.textContent = lastNotice.text;
    notice.classList.add(lastNotice.ok ? "ok" : "bad");
  }
  if (!info.controlEnabled) {
    return el("div", { class: "controls" }, el("p", { class: "muted", text: "Control is off: start meshshift with --token to enable these buttons." }));
  }
  const buttons = ACTIONS.map(([action, label, hint]) =>
    el("button", {
      type: "button",
      class: `action action-${action}`,
      "data-action": action,
      title: hint,
      text: label,
      onclick: () => send(url, action, label, action === "abort" ? abortQuestion(view) : null),
    }),
  );
  return el("div", { class: "controls" }, buttons, notice);
}

function abortQuestion(view) {
  const stable = view.revisions.stable ? ` (${view.revisions.stable})` : "";
  return `Abort ${view.namespace}/${view.name}? All traffic goes back to the stable${stable} at once, and the rollout stops until it is retried.`;
}

function showNotice(ok, text) {
  lastNotice = { ok, text };
  const notice = document.getElementById("control-result");
  if (notice) {
    notice.textContent = text;
    notice.className = `notice ${ok ? "ok" : "bad"}`;
  }
}

// `question`: asked first (window.confirm); nothing is sent unless it is accepted.
async function send(url, action, label, question) {
  if (!token()) {
    showNotice(false, "Enter the control token first (top right).");
    return;
  }
  if (question && !window.confirm(question)) {
    showNotice(false, `${label} cancelled: nothing was sent.`);
    return;
  }
  for (const button of document.querySelectorAll("button.action")) button.disabled = true;
  let text;
  let ok = false;
  try {
    const response = await fetch(`${url}/${action}`, { method: "POST", headers: { Authorization: `Bearer ${token()}` } });
    const body = await response.json();
    ok = response.status === 200;
    if (response.status === 401 || response.status === 403) text = `${label} refused: ${body.error}`;
    else text = `${label}: ${body.message || body.error}`;
  } catch (error) {
    text = `${label} failed: ${error}`;
  }
  showNotice(ok, text);
  for (const button of document.querySelectorAll("button.action")) button.disabled = false;
}

function weightBar(canary) {
  const stable = 100 - canary;
  return el(
    "span",
    { class: "bar", title: `stable ${stable}% / canary ${canary}%` },
    svg(
      "svg",
      { width: 120, height: 12, viewBox: "0 0 100 10", preserveAspectRatio: "none", role: "img", "aria-label": `canary ${canary}%` },
      svg("rect", { x: 0, y: 0, width: stable, height: 10, class: "stable" }),
      svg("rect", { x: stable, y: 0, width: canary, height: 10, class: "canary" }),
    ),
    el("span", { class: "bar-label", text: ` ${canary}%` }),
  );
}

// What the bar's two colours are: the same classes fill the bar and the swatches.
function legend(stableText, canaryText, testid) {
  return el(
    "ul",
    { class: "legend", "data-testid": testid },
    el("li", { "data-testid": "legend-stable" }, el("span", { class: "swatch stable", "aria-hidden": "true" }), stableText),
    el("li", { "data-testid": "legend-canary" }, el("span", { class: "swatch canary", "aria-hidden": "true" }), canaryText),
  );
}

function weights(view) {
  const w = view.weights;
  const name = (role) => (view.revisions[role] ? ` ${view.revisions[role]}` : "");
  const applied = Object.entries(w.applied).map(([router, weight]) =>
    el("li", { "data-testid": `applied-${router}`, text: `${router}: ${weight === null ? "unknown" : `${weight}%`} applied` }),
  );
  return el(
    "div",
    { class: "weights" },
    el("div", { class: "bar-with-legend" }, weightBar(w.canary), legend(`stable${name("stable")}: ${w.stable}%`, `canary${name("canary")}: ${w.canary}%`, "traffic-legend")),
    el(
      "ul",
      {},
      el("li", { "data-testid": "weight-canary", text: `canary ${w.canary}%` }),
      el("li", { "data-testid": "weight-stable", text: `stable ${w.stable}%` }),
      el("li", { "data-testid": "weight-desired", text: `desired canary weight ${w.desired}% (setWeight ${w.setWeight})` }),
      applied,
      w.appliedAgree || !Object.keys(w.applied).length ? null : el("li", { class: "bad", text: "the data planes disagree" }),
    ),
  );
}

function steps(view) {
  if (!view.steps.length) return el("p", { class: "muted", text: view.specError || "No steps." });
  return el(
    "ol",
    { class: "steps" },
    view.steps.map((step) =>
      el(
        "li",
        {
          class: `step step-${step.status}`,
          "data-status": step.status,
          "data-testid": step.status === "current" ? "current-step" : null,
          "aria-current": step.status === "current" ? "step" : null,
        },
        el("span", { class: "marker", text: { completed: "✔", current: "▶", failed: "✖", pending: "○" }[step.status] || "○" }),
        el("span", { class: "index", text: `${step.index + 1}.` }),
        el("span", { text: step.description }),
        step.status === "current" ? el("span", { class: "current-label", text: " (current)" }) : null,
      ),
    ),
  );
}

function imageRole(view, role) {
  if (!view.blueGreen) return role;
  const roles = (view.blueGreen.roles || {})[view.revisions[role]] || [];
  return roles.join(", ") || role;
}

function revisionWithRoles(bg, revision) {
  if (!revision) return "none";
  const roles = (bg.roles || {})[revision] || [];
  return roles.length ? `${revision} (${roles.join(", ")})` : revision;
}

function blueGreen(view) {
  const bg = view.blueGreen;
  const markers = { completed: "✔", current: "▶", failed: "✖", pending: "○", skipped: "»" };
  const services = [bg.activeService ? `active Service ${bg.activeService}` : null, bg.previewService ? `preview Service ${bg.previewService}` : null].filter(Boolean);
  const preview = Object.entries(bg.previewApplied || {}).map(([router, target]) => `${router} preview listener: ${target}`);
  return el(
    "div",
    { class: "blue-green" },
    el(
      "p",
      { class: "roles" },
      el("span", { class: "role role-active", "data-testid": "bg-active-role", text: `users → ${bg.activeRevision || "none"}` }),
      " ",
      el("span", { class: "role role-preview", "data-testid": "bg-preview-role", text: `preview → ${bg.previewRevision || "none"}` }),
    ),
    services.length || preview.length ? el("p", { class: "muted", text: [...services, ...preview].join(" · ") }) : null,
    el(
      "ol",
      { class: "steps" },
      bg.phases.map((phase) =>
        el(
          "li",
          {
            class: `step step-${phase.status}`,
            "data-status": phase.status,
            "data-phase": phase.name,
            "data-testid": phase.status === "current" ? "current-phase" : "phase-item",
            "aria-current": phase.status === "current" ? "step" : null,
          },
          el("span", { class: "marker", text: markers[phase.status] || "○" }),
          el("span", { text: phase.description }),
          phase.run ? el("span", { class: "muted", text: ` · ${phase.run}` }) : null,
          phase.status === "current" ? el("span", { class: "current-label", text: " (current)" }) : null,
          phase.name === "promotion" && phase.status === "current" && bg.scaleDownAt ? el("span", { class: "muted", text: ` · old revision goes at ${clock(bg.scaleDownAt)}` }) : null,
        ),
      ),
    ),
  );
}

function headerRoutes(view) {
  return el(
    "ul",
    {},
    view.headerRoutes.map((route) =>
      el("li", {}, el("strong", { text: route.name }), ": ", route.match.map((m) => `${m.headerName} ${m.value.kind} "${m.value.value}"`).join(" and ")),
    ),
  );
}

function analysis(view) {
  if (!view.analysisRuns.length) return el("p", { class: "muted", text: "No analysis runs in this rollout." });
  return view.analysisRuns.map((run) =>
    el(
      "article",
      { class: "run", "data-testid": "analysis-run" },
      el(
        "h3",
        {},
        run.name,
        " ",
        phaseBadge(run.phase || "Pending"),
        el("span", { class: "muted", text: ` ${RUN_KINDS[run.kind] || `step ${run.stepIndex + 1}`} · ${run.templates.join(", ")}${run.superseded ? " · superseded" : ""}` }),
      ),
      run.message ? el("p", { class: "message", text: run.message }) : null,
      el(
        "table",
        { class: "metrics" },
        el("thead", {}, el("tr", {}, ["Metric", "Phase", "✔", "✖", "?", "⚠", "Last value", "Values", "Condition"].map((h) => el("th", { text: h })))),
        el("tbody", {}, run.metrics.map(metricRow)),
      ),
      run.metrics.filter((m) => m.judge).map(judgeBlock),
      run.metrics.filter((m) => m.query).map((m) => el("details", {}, el("summary", { text: `${m.name}: resolved query` }), el("pre", { text: m.query }))),
    ),
  );
}

const RUN_KINDS = { background: "background", prePromotion: "pre-promotion", postPromotion: "post-promotion" };

function metricRow(metric) {
  const last = metric.measurements.length ? metric.measurements[metric.measurements.length - 1] : null;
  const judged = metric.judge ? `${metric.judge.verdict} (evidence ${typeof metric.judge.evidence === "number" ? +metric.judge.evidence.toPrecision(3) : metric.judge.evidence})` : null;
  const lastText = judged || (last ? (last.number !== null ? String(+last.number.toPrecision(6)) : JSON.stringify(last.value)) : "–");
  return el(
    "tr",
    { "data-testid": "metric", "data-metric": metric.name },
    el("td", {}, metric.name, metric.dryRun ? el("span", { class: "muted", text: " (dry run)" }) : null),
    el("td", {}, phaseBadge(metric.phase)),
    el("td", { text: metric.counts.successful }),
    el("td", { text: metric.counts.failed }),
    el("td", { text: metric.counts.inconclusive }),
    el("td", { text: metric.counts.error }),
    el("td", { "data-testid": "last-value", text: lastText, title: last ? last.message : "" }),
    el("td", {}, plot(metric.measurements)),
    el("td", { class: "condition", text: [metric.successCondition && `success: ${metric.successCondition}`, metric.failureCondition && `failure: ${metric.failureCondition}`].filter(Boolean).join("; ") || "none" }),
  );
}

// A sequential judge's verdict: the counts and rates of each side, and the evidence against alpha.
function judgeBlock(metric) {
  const judge = metric.judge;
  const number = (v) => (typeof v === "number" ? (v < 1e4 ? String(+v.toPrecision(3)) : v.toExponential(2)) : String(v));
  const side = (name, c) =>
    el("tr", {}, el("th", { text: name }), el("td", { text: `${c.bad ?? 0} ${c.badName} in ${c.requests ?? 0} requests` }), el("td", { text: c.rate === null || c.rate === undefined ? "–" : `${+(c.rate * 100).toPrecision(3)}%` }));
  const ratio = typeof judge.evidence === "number" && judge.threshold ? Math.min(1, Math.max(0, Math.log(Math.max(judge.evidence, 1)) / Math.log(judge.threshold))) : judge.evidence === "inf" ? 1 : 0;
  return el(
    "div",
    { class: `judge judge-${judge.verdict}`, "data-testid": "judge", "data-metric": metric.name, "data-verdict": judge.verdict },
    el("h4", {}, `${metric.name}: `, el("span", { class: "verdict", text: judge.verdict }), el("span", { class: "muted", text: ` after ${judge.elapsed ?? 0}s · ${judge.mode}` })),
    el("table", { class: "judge-counts" }, el("tbody", {}, side("canary", judge.canary), side("stable", judge.stable))),
    el(
      "p",
      { class: "evidence", "data-testid": "evidence" },
      `evidence ${number(judge.evidence)} of ${number(judge.threshold)} needed (alpha ${judge.alpha}) `,
      el("meter", { min: 0, max: 1, value: ratio.toFixed(3), title: "log evidence / log (1/alpha)" }),
    ),
  );
}

// A small line plot of a metric's values over time, one dot per measurement, colored by phase.
function plot(measurements) {
  const points = measurements.filter((m) => m.number !== null);
  const width = 160;
  const height = 40;
  const pad = 4;
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "plot", role: "img", "aria-label": `${points.length} measured values` });
  if (!points.length) return chart;
  const times = points.map((p) => p.finishedAt);
  const values = points.map((p) => p.number);
  const [t0, t1] = [Math.min(...times), Math.max(...times)];
  let [v0, v1] = [Math.min(...values), Math.max(...values)];
  if (v0 === v1) [v0, v1] = [v0 - 1, v1 + 1];
  const x = (t) => (t1 === t0 ? width / 2 : pad + ((t - t0) / (t1 - t0)) * (width - 2 * pad));
  const y = (v) => height - pad - ((v - v0) / (v1 - v0)) * (height - 2 * pad);
  const coords = points.map((p) => `${x(p.finishedAt).toFixed(1)},${y(p.number).toFixed(1)}`);
  chart.append(svg("polyline", { points: coords.join(" "), class: "line" }));
  points.forEach((p) => {
    const dot = svg("circle", { cx: x(p.finishedAt).toFixed(1), cy: y(p.number).toFixed(1), r: 2.5, class: `dot dot-${p.phase.toLowerCase()}` });
    dot.append(svg("title", {}, document.createTextNode(`${clock(p.finishedAt)}: ${p.number} (${p.phase})`)));
    chart.append(dot);
  });
  return chart;
}

function history(view) {
  if (!view.history.length) return el("p", { class: "muted", text: "No finished rollouts yet." });
  return el(
    "table",
    { class: "history" },
    el("thead", {}, el("tr", {}, ["Revision", "Outcome", "Started", "Finished", "Message"].map((h) => el("th", { text: h })))),
    el(
      "tbody",
      {},
      [...view.history].reverse().map((record) =>
        el(
          "tr",
          {},
          el("td", { text: record.revision }),
          el("td", {}, phaseBadge(record.outcome)),
          el("td", { text: clock(record.startedAt) }),
          el("td", { text: `${clock(record.finishedAt)} (${ago(record.finishedAt)})` }),
          el("td", { class: "message", text: `${record.message}${record.fullPromotion ? " (promote-full)" : ""}` }),
        ),
      ),
    ),
  );
}

// --- start -----------------------------------------------------------------------------

function showTokenState() {
  const state = document.getElementById("token-state");
  state.textContent = token() ? "token set" : info.controlEnabled ? "no token" : "control off";
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token-input");
  if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
  else sessionStorage.removeItem(TOKEN_KEY);
  input.value = "";
  showTokenState();
});

// The daemon's clock minus ours, from the Date header of an answer sent between `sent` and
// `received`; kept only when larger than what that header cannot tell (whole seconds, and
// the time on the way), so a browser on the daemon's own clock counts on its own.
function clockOffset(response, sent, received) {
  const date = Date.parse(response.headers.get("Date") || "");
  if (Number.isNaN(date)) return 0;
  const offset = date / 1000 + 0.5 - (sent + received) / 2;
  const uncertainty = 0.5 + (received - sent) / 2;
  return Math.abs(offset) > uncertainty + 0.5 ? offset : 0;
}

const infoSent = Date.now() / 1000;
fetch("/api/v1/info")
  .then((response) => {
    serverOffset = clockOffset(response, infoSent, Date.now() / 1000);
    return response.json();
  })
  .then((data) => {
    info = data;
    document.getElementById("daemon-info").textContent = `v${data.version}${data.leader ? "" : " · standby"}`;
    showTokenState();
    window.addEventListener("hashchange", route);
    setInterval(tickCountdowns, 1000);
    route();
  });
