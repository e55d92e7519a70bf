// logserver console: two pages (#/ the streams, #/stream/NAME one stream) over the JSON API.
// No framework and no build step; charts with the vendored uPlot. Every value from the server
// goes into the page as text (textContent), never as HTML.
"use strict";

const API = "/api/v1";
const PAGE_SIZES = [10, 25, 50];
const TAIL_ROWS_KEPT = 500;
const TAIL_PAGE = 50;
const TAIL_IDLE_MS = 1000; // pause between history polls once the tail has caught up
const CHART_SERIES_MAX = 8;
const COLOURS = ["#2f6fde", "#e07b39", "#3a9d5d", "#c4352b", "#8e5bd6", "#1c9aa8", "#b8860b", "#d6589b"];

// ---- talking to the server ---------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function request(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let decoded = null;
  try {
    decoded = text ? JSON.parse(text) : null;
  } catch (error) {
    decoded = text;
  }
  if (!response.ok) {
    const detail = typeof decoded === "string" ? decoded : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, detail);
  }
  return { body: decoded, headers: response.headers };
}

async function getJson(path) {
  return (await request("GET", path)).body;
}

function streamPath(name) {
  return `${API}/streams/${encodeURIComponent(name)}`;
}

// One page of history: the events and where the next page starts (null on the last one).
async function historyPage(stream, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
  }
  const answer = await request("GET", `${streamPath(stream)}/history?${query}`);
  const next = answer.headers.get("X-Next-Sequence");
  return { events: answer.body, next: next === null ? null : Number(next) };
}

// ---- building the page -------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function cell(value, className) {
  return el("td", { class: className }, value === null || value === undefined ? "—" : value);
}

function numberText(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

function bytesText(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

function agoText(time) {
  if (!time) return "never";
  const seconds = Math.round((Date.now() - Date.parse(time)) / 1000);
  if (Number.isNaN(seconds)) return time;
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function isDeadLetter(name) {
  return name.endsWith(".dlq");
}

function deadLetterBadge(name) {
  return isDeadLetter(name) ? el("span", { class: "badge dlq", title: "dead-letter stream" }, "dead letters") : null;
}

function setStatus(text, isError = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function showMessage(node, text, isError) {
  node.textContent = text;
  node.className = `message ${isError ? "error" : "ok"}`;
}

// A modal confirmation; resolves true when the user confirms.
function confirmAction(title, text, action) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  ok.textContent = action;
  return new Promise((resolve) => {
    const finish = (answer) => {
      ok.removeEventListener("click", onOk);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      dialog.close();
      resolve(answer);
    };
    const onOk = () => finish(true);
    const onCancel = () => finish(false);
    ok.addEventListener("click", onOk);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
  });
}

// ---- charts --------------------------------------------------------------------------------------

// A uPlot chart that is rebuilt when its series change and fed new data otherwise.
class Chart {
  constructor(container, unit) {
    this.container = container;
    this.unit = unit;
    this.plot = null;
    this.labels = "";
  }

  // `empty` is said instead of a chart when there is no series to draw.
  update(times, series, empty) {
    if (times.length < 2 || series.length === 0) {
      this.destroy();
      const text = times.length < 2 ? "Collecting samples…" : empty;
      this.container.replaceChildren(el("p", { class: "muted empty" }, text));
      return;
    }
    const labels = series.map((s) => s.label).join("\n");
    const data = [times, ...series.map((s) => s.values)];
    if (this.plot && labels === this.labels) {
      this.plot.setData(data);
      return;
    }
    this.destroy();
    this.container.replaceChildren();
    this.labels = labels;
    this.plot = new uPlot(this.options(series), data, this.container);
  }

  options(series) {
    return {
      width: Math.max(this.container.clientWidth, 300),
      height: 220,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, 1)] } },
      axes: [{}, { label: this.unit, size: 60 }],
      series: [
        { label: "time" },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: COLOURS[i % COLOURS.length],
          width: 2,
          value: (u, v) => (v === null ? "—" : Number(v).toLocaleString("en-US", { maximumFractionDigits: 2 })),
        })),
      ],
    };
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(this.container.clientWidth, 300), height: 220 });
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.labels = "";
  }
}

// Events per second between consecutive samples of a stream's last sequence.
function rates(times, lastSequences) {
  return lastSequences.map((value, i) => {
    const before = lastSequences[i - 1];
    if (i === 0 || value === null || before === null || before === undefined) return null;
    return Math.max(0, value - before) / (times[i] - times[i - 1]);
  });
}

// Events per second over the last `seconds` of samples (fewer when the stream is younger).
function recentRate(times, lastSequences, seconds) {
  const end = lastSequences.length - 1;
  if (end < 1 || lastSequences[end] === null) return null;
  let start = end;
  while (start > 0 && lastSequences[start - 1] !== null && times[end] - times[start - 1] <= seconds) start -= 1;
  if (start === end) return null;
  return (lastSequences[end] - lastSequences[start]) / (times[end] - times[start]);
}

// ---- the pages -----------------------------------------------------------------------------------

// The page shown now: its timers and charts end when the user goes elsewhere.
class Page {
  constructor() {
    this.timers = new Set();
    this.charts = [];
    this.stopped = false;
  }

  // Runs `work` now and again `refreshMs` after each run ends, until the page stops.
  every(work) {
    const run = async () => {
      if (this.stopped) return;
      await work();
      if (!this.stopped) this.timers.add(setTimeout(run, refreshMs));
    };
    return run();
  }

  sleep(ms) {
    return new Promise((resolve) => this.timers.add(setTimeout(resolve, ms)));
  }

  chart(container, unit) {
    const chart = new Chart(container, unit);
    this.charts.push(chart);
    return chart;
  }

  stop() {
    this.stopped = true;
    for (const timer of this.timers) clearTimeout(timer);
    for (const chart of this.charts) chart.destroy();
  }
}

let current = null;
let refreshMs = 5000; // the server's sample interval, once a samples answer has told it

function followSampleInterval(samples) {
  refreshMs = Math.min(10000, Math.max(500, samples.intervalSeconds * 1000));
}

async function refreshing(work) {
  try {
    await work();
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    setStatus(error.status === 401 ? "signed out: reload the page to sign in" : error.message, true);
  }
}

function route() {
  if (current) current.stop();
  current = new Page();
  const main = document.getElementById("main");
  main.replaceChildren();
  const match = location.hash.match(/^#\/stream\/(.+)$/);
  if (match) streamPage(current, main, decodeURIComponent(match[1]));
  else streamsPage(current, main);
}

// -- #/ : every stream the user may see

function streamsPage(page, main) {
  document.title = "Streams · logserver";
  const chartBox = el("div", { class: "chart", id: "rate-chart" });
  const body = el("tbody");
  main.append(
    el("h1", {}, "Streams"),
    el("section", { class: "card" }, el("h2", {}, "Append rate (events/s)"), chartBox),
    el(
      "section",
      { class: "card table-scroll" },
      el(
        "table",
        { id: "streams" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ["Stream", "Owner"].map((h) => el("th", {}, h)),
            ["Events", "Bytes", "First seq", "Last seq"].map((h) => el("th", { class: "num" }, h)),
            el("th", {}, "Last append"),
            el("th", { class: "num", title: "events per second over the last minute" }, "Rate (ev/s, 1 min)"),
          ),
        ),
        body,
      ),
    ),
  );
  const chart = page.chart(chartBox, "events/s");
  window.onresize = () => chart.resize();
  page.every(() =>
    refreshing(async () => {
      const [streams, samples] = await Promise.all([getJson(`${API}/streams`), getJson(`${API}/samples`)]);
      if (page.stopped) return;
      followSampleInterval(samples);
      const rateOf = new Map(samples.streams.map((s) => [s.name, rates(samples.times, s.lastSequence)]));
      const minuteRate = new Map(samples.streams.map((s) => [s.name, recentRate(samples.times, s.lastSequence, 60)]));
      body.replaceChildren(...streams.map((stream) => streamRow(stream, minuteRate.get(stream.name))));
      if (streams.length === 0) {
        body.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No streams yet.")));
      }
      const busiest = [...rateOf.entries()]
        .map(([name, values]) => ({ label: name, values, total: values.reduce((a, v) => a + (v || 0), 0) }))
        .sort((a, b) => b.total - a.total)
        .slice(0, CHART_SERIES_MAX)
        .sort((a, b) => a.label.localeCompare(b.label));
      chart.update(samples.times, busiest, "No streams yet.");
    }),
  );
}

function streamRow(stream, rate) {
  const link = el("a", { href: `#/stream/${encodeURIComponent(stream.name)}` }, stream.name);
  const name = el("td", { class: "wrap" }, link, " ", deadLetterBadge(stream.name));
  if (stream.damaged) {
    name.append(" ", el("span", { class: "badge damaged", title: stream.damaged }, "damaged"));
    return el("tr", { "data-stream": stream.name }, name, el("td", { colspan: 8, class: "muted" }, stream.damaged));
  }
  return el(
    "tr",
    { "data-stream": stream.name },
    name,
    cell(stream.owner),
    cell(numberText(stream.eventCount), "num"),
    cell(bytesText(stream.bytes), "num"),
    cell(numberText(stream.firstSequence), "num"),
    cell(numberText(stream.lastSequence), "num"),
    el("td", { title: stream.lastAppendAt || "" }, agoText(stream.lastAppendAt)),
    cell(rate === null || rate === undefined ? "—" : rate.toFixed(2), "num"),
  );
}

// -- #/stream/NAME : one stream

function streamPage(page, main, name) {
  document.title = `${name} · logserver`;
  const facts = el("div", { class: "facts", id: "facts" });
  const names = el("tbody");
  const consumers = el("tbody");
  const lagBox = el("div", { class: "chart", id: "lag-chart" });
  // What the last refresh read; the forms register here to hear of each new stream description.
  const state = { info: null, infoListeners: [], onInfo: (listener) => state.infoListeners.push(listener) };

  main.append(
    el("p", {}, el("a", { href: "#/" }, "← all streams")),
    el("h1", {}, name, deadLetterBadge(name)),
    facts,
    el(
      "div",
      { class: "grid" },
      el(
        "section",
        { class: "card" },
        el("h2", {}, "Event names"),
        el("table", { id: "event-names" }, el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", { class: "num" }, "Events"))), names),
      ),
      el("section", { class: "card" }, el("h2", {}, "Consumer lag (events behind)"), lagBox),
    ),
    el(
      "section",
      { class: "card table-scroll" },
      el("h2", {}, "Consumers"),
      el(
        "table",
        { id: "consumers" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ["Consumer", "Event name"].map((h) => el("th", {}, h)),
            ["Position", "Acknowledged", "Behind", "Consumed", "In flight"].map((h) => el("th", { class: "num" }, h)),
            el("th", {}, ""),
          ),
        ),
        consumers,
      ),
      resetForm(name, state, () => refresh()),
    ),
    retentionForm(name, state, () => refresh()),
    eventBrowser(name, state),
    liveTail(page, name, state),
  );
  const lag = page.chart(lagBox, "behind");
  window.onresize = () => lag.resize();

  const refresh = () =>
    refreshing(async () => {
      const [info, lagRows, samples] = await Promise.all([
        getJson(streamPath(name)),
        getJson(`${streamPath(name)}/consumers`),
        getJson(`${streamPath(name)}/samples`).catch((error) => (error.status === 404 ? null : Promise.reject(error))),
      ]);
      if (page.stopped) return;
      if (samples) followSampleInterval(samples);
      state.info = info;
      showFacts(facts, info);
      names.replaceChildren(
        ...Object.entries(info.eventNames || {}).map(([eventName, count]) =>
          el("tr", {}, el("td", { class: "wrap" }, eventName), cell(numberText(count), "num")),
        ),
      );
      if (!Object.keys(info.eventNames || {}).length) names.append(el("tr", {}, el("td", { colspan: 2, class: "muted" }, "No events.")));
      consumers.replaceChildren(...lagRows.map(consumerRow));
      if (!lagRows.length) consumers.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No consumers yet.")));
      const series = samples
        ? samples.consumers.slice(0, CHART_SERIES_MAX).map((c) => ({ label: `${c.consumer} · ${c.eventName}`, values: c.behind }))
        : [];
      lag.update(samples ? samples.times : [], series, "No consumers yet.");
      for (const listener of state.infoListeners) listener(info);
    });
  page.every(refresh);
}

function showFacts(facts, info) {
  const fact = (label, value, title) => el("span", { title }, `${label} `, el("b", {}, value));
  const retention = info.retention
    ? [info.retention.maxAgeSeconds ? `${info.retention.maxAgeSeconds} s` : null, info.retention.maxBytes ? bytesText(info.retention.maxBytes) : null]
        .filter(Boolean)
        .join(", ")
    : "server default";
  facts.replaceChildren(
    fact("owner", info.owner),
    fact("events", numberText(info.eventCount)),
    fact("bytes", bytesText(info.bytes)),
    fact("sequences", `${numberText(info.firstSequence)} – ${numberText(info.lastSequence)}`),
    fact("created", agoText(info.createdAt), info.createdAt),
    fact("last append", agoText(info.lastAppendAt), info.lastAppendAt || ""),
    fact("retention", retention || "server default"),
  );
}

function consumerRow(row) {
  const reset = el("button", { class: "small", type: "button" }, "Reset…");
  reset.addEventListener("click", () => {
    document.getElementById("reset-consumer").value = row.consumer;
    document.getElementById("reset-event-name").value = row.eventName;
    document.getElementById("reset-consumer").focus();
  });
  return el(
    "tr",
    { "data-consumer": row.consumer, "data-event-name": row.eventName },
    el("td", { class: "wrap" }, row.consumer),
    el("td", { class: "wrap" }, row.eventName),
    cell(numberText(row.position), "num"),
    cell(numberText(row.acknowledged), "num"),
    cell(numberText(row.behind), "num"),
    cell(`${row.consumedPercentage}%`, "num"),
    cell(numberText(row.inFlight ?? 0), "num"),
    el("td", {}, reset),
  );
}

function resetForm(name, state, done) {
  const consumer = el("input", { id: "reset-consumer", placeholder: "consumer id", required: true });
  const eventName = el("select", { id: "reset-event-name" }, el("option", { value: "" }, "every event name"));
  const target = el(
    "select",
    { id: "reset-to" },
    el("option", { value: "start" }, "the start (replay everything)"),
    el("option", { value: "end" }, "the end (skip everything)"),
    el("option", { value: "sequence" }, "a sequence"),
    el("option", { value: "time" }, "a time"),
  );
  const sequence = el("input", { id: "reset-sequence", type: "number", min: 1, placeholder: "sequence", hidden: true });
  const time = el("input", { id: "reset-time", type: "datetime-local", step: 1, hidden: true });
  const message = el("p", { class: "message", id: "reset-message" });
  target.addEventListener("change", () => {
    sequence.hidden = target.value !== "sequence";
    time.hidden = target.value !== "time";
  });
  state.onInfo((info) => fillNames(eventName, info, "every event name"));
  const button = el("button", { type: "button", class: "primary", id: "reset-button" }, "Reset consumer");
  button.addEventListener("click", async () => {
    const id = consumer.value.trim();
    if (!id) return showMessage(message, "Name the consumer to reset.", true);
    const body = { start: { to: "start" }, end: { to: "end" } }[target.value] || {};
    let where = { start: "the start", end: "the end" }[target.value];
    if (target.value === "sequence") {
      body.sequence = Number(sequence.value);
      where = `sequence ${sequence.value}`;
    } else if (target.value === "time") {
      if (!time.value) return showMessage(message, "Pick a time.", true);
      body.time = new Date(time.value).toISOString();
      where = `the first event at or after ${body.time}`;
    }
    if (eventName.value) body.eventName = eventName.value;
    const scope = eventName.value ? `for event name “${eventName.value}”` : "for every event name";
    const confirmed = await confirmAction(
      "Reset consumer",
      `Move consumer “${id}” of stream “${name}” to ${where}, ${scope}? Events from there on are delivered again; acknowledgements after it are forgotten.`,
      "Reset",
    );
    if (!confirmed) return;
    try {
      const answer = (await request("PUT", `${streamPath(name)}/consumers/${encodeURIComponent(id)}`, body)).body;
      showMessage(message, `Consumer “${answer.consumer}” is now at position ${answer.position}.`, false);
      done();
    } catch (error) {
      showMessage(message, error.message, true);
    }
  });
  return el(
    "div",
    { class: "controls", id: "reset-form" },
    el("label", {}, "Reset consumer", consumer),
    el("label", {}, "Event name", eventName),
    el("label", {}, "To", target),
    sequence,
    time,
    button,
    message,
  );
}

function fillNames(select, info, allLabel) {
  const chosen = select.value;
  const wanted = ["", ...Object.keys(info.eventNames || {})];
  const have = [...select.options].map((o) => o.value);
  if (wanted.join("\n") === have.join("\n")) return;
  select.replaceChildren(...wanted.map((value) => el("option", { value }, value || allLabel)));
  select.value = wanted.includes(chosen) ? chosen : "";
}

function retentionForm(name, state, done) {
  const age = el("input", { id: "retention-age", type: "number", min: 1, step: "any", placeholder: "server default" });
  const size = el("input", { id: "retention-bytes", type: "number", min: 1, placeholder: "server default" });
  const message = el("p", { class: "message", id: "retention-message" });
  const button = el("button", { type: "button", class: "primary", id: "retention-button" }, "Set retention");
  state.onInfo((info) => {
    const own = info.retention || {};
    if (document.activeElement !== age && !age.dataset.touched) age.value = own.maxAgeSeconds ?? "";
    if (document.activeElement !== size && !size.dataset.touched) size.value = own.maxBytes ?? "";
  });
  for (const input of [age, size]) input.addEventListener("input", () => (input.dataset.touched = "1"));
  button.addEventListener("click", async () => {
    const body = {
      maxAgeSeconds: age.value === "" ? null : Number(age.value),
      maxBytes: size.value === "" ? null : Number(size.value),
    };
    const describe = (value, unit) => (value === null ? "the server's default" : `${value} ${unit}`);
    const confirmed = await confirmAction(
      "Set retention",
      `Keep stream “${name}” for ${describe(body.maxAgeSeconds, "seconds")} and below ${describe(body.maxBytes, "bytes")}? Sealed segments beyond that are deleted now, and cannot be restored.`,
      "Set retention",
    );
    if (!confirmed) return;
    try {
      const answer = (await request("PUT", `${streamPath(name)}/retention`, body)).body;
      delete age.dataset.touched;
      delete size.dataset.touched;
      showMessage(message, `Retention set; ${answer.segmentsRemoved} segment(s) removed.`, false);
      done();
    } catch (error) {
      showMessage(message, error.message, true);
    }
  });
  return el(
    "section",
    { class: "card" },
    el("h2", {}, "Retention"),
    el(
      "div",
      { class: "controls" },
      el("label", {}, "Max age (seconds)", age),
      el("label", {}, "Max bytes", size),
      button,
      el("span", { class: "muted" }, "Empty: follow the server's --retention-max-age / --retention-max-bytes."),
    ),
    message,
  );
}

// A table of events whose rows open to show each event's JSON.
function eventTable(id) {
  const body = el("tbody");
  const table = el(
    "table",
    { id },
    el(
      "thead",
      {},
      el("tr", {}, el("th", { class: "num" }, "Seq"), ["Received", "Event name", "Version", "Producer", "Event id"].map((h) => el("th", {}, h))),
    ),
    body,
  );
  const row = (event) => {
    const tr = el(
      "tr",
      { class: "clickable", "data-sequence": event.sequence, title: "show the JSON" },
      cell(event.sequence, "num"),
      cell(event.receivedAt),
      el("td", { class: "wrap" }, event.event.name),
      cell(event.event.version),
      el("td", { class: "wrap" }, event.producerId),
      el("td", { class: "mono" }, event.eventId),
    );
    tr.addEventListener("click", () => {
      const open = tr.nextElementSibling;
      if (open && open.classList.contains("json-row")) return open.remove();
      tr.after(el("tr", { class: "json-row" }, el("td", { colspan: 6 }, el("pre", { class: "json" }, JSON.stringify(event, null, 2)))));
    });
    return tr;
  };
  return { table, body, row };
}

function eventBrowser(name, state) {
  const mode = el("select", { id: "browse-mode" }, el("option", { value: "sequence" }, "sequence"), el("option", { value: "time" }, "time"));
  const fromSequence = el("input", { id: "browse-sequence", type: "number", min: 1, placeholder: "first / last" });
  const fromTime = el("input", { id: "browse-time", type: "datetime-local", step: 1, hidden: true });
  const order = el("select", { id: "browse-order" }, el("option", { value: "newest" }, "newest first"), el("option", { value: "oldest" }, "oldest first"));
  const eventName = el("select", { id: "browse-event-name" }, el("option", { value: "" }, "all event names"));
  const size = el("select", { id: "browse-limit" }, ...PAGE_SIZES.map((n) => el("option", { value: n, selected: n === 25 }, n)));
  const show = el("button", { type: "button", class: "primary", id: "browse-show" }, "Show");
  const more = el("button", { type: "button", id: "browse-more", disabled: true }, "Next page");
  const info = el("p", { class: "muted", id: "browse-info" });
  const events = eventTable("events");
  let next = null; // where the next page starts (oldest first) or ends (newest first)

  mode.addEventListener("change", () => {
    fromSequence.hidden = mode.value !== "sequence";
    fromTime.hidden = mode.value !== "time";
  });
  state.onInfo((info) => fillNames(eventName, info, "all event names"));

  const params = () => ({ limit: Number(size.value), eventName: eventName.value || null });
  const render = (page) => {
    events.body.replaceChildren(...page.events.map(events.row));
    if (!page.events.length) events.body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No events here.")));
    next = page.next;
    more.disabled = next === null;
    const shown = page.events.map((e) => e.sequence);
    info.textContent = shown.length ? `Sequences ${Math.min(...shown)} to ${Math.max(...shown)}, ${order.value} first.` : "";
  };
  let loads = 0; // only the latest load may fill the table, whichever answer comes last
  const load = async (start) => {
    const mine = ++loads;
    try {
      const query = params();
      const page =
        order.value === "oldest"
          ? await oldestFirst(name, start, query)
          : await newestFirst(name, start, query, state.info.firstSequence);
      if (mine === loads) render(page);
    } catch (error) {
      if (mine === loads) info.textContent = error.message;
    }
  };
  show.addEventListener("click", async () => {
    if (!state.info) return;
    let start;
    if (mode.value === "time" && fromTime.value) {
      start = await sequenceAt(name, new Date(fromTime.value).toISOString(), state.info);
      if (order.value === "newest") start -= 1; // the events before that time
    } else if (fromSequence.value) {
      start = Number(fromSequence.value);
    } else {
      start = order.value === "oldest" ? state.info.firstSequence : state.info.lastSequence;
    }
    await load(start);
  });
  more.addEventListener("click", () => load(next));
  let shownOnce = false;
  state.onInfo(() => {
    if (!shownOnce) show.click(); // the newest page, as soon as the stream's range is known
    shownOnce = true;
  });

  return el(
    "section",
    { class: "card table-scroll" },
    el("h2", {}, "Events"),
    el(
      "div",
      { class: "controls" },
      el("label", {}, "From", mode),
      el("label", {}, "\u00a0", fromSequence),
      fromTime,
      el("label", {}, "Order", order),
      el("label", {}, "Event name", eventName),
      el("label", {}, "Per page", size),
      show,
      more,
    ),
    info,
    events.table,
  );
}

// The first sequence received at or after `time` (one past the last event when there is none).
async function sequenceAt(stream, time, info) {
  const page = await historyPage(stream, { fromTime: time, limit: 1 });
  return page.events.length ? page.events[0].sequence : info.lastSequence + 1;
}

async function oldestFirst(stream, start, query) {
  return historyPage(stream, { ...query, fromSequence: Math.max(1, start) });
}

// The `limit` newest events at or before `end`, newest first; `next` is where the older page ends.
// History reads forwards, so this reads windows ending at `end`, widening them until they hold a
// page (a filtered name can be sparse) or reach the stream's first sequence.
async function newestFirst(stream, end, query, firstSequence) {
  if (end < firstSequence) return { events: [], next: null };
  let width = query.eventName ? query.limit * 4 : query.limit;
  for (;;) {
    const low = Math.max(firstSequence, end - width + 1);
    let found = [];
    let from = low;
    while (from !== null) {
      const page = await historyPage(stream, { ...query, fromSequence: from, toSequence: end });
      found = found.concat(page.events).slice(-query.limit);
      from = page.next;
    }
    if (found.length >= query.limit || low <= firstSequence) {
      found.reverse();
      const oldest = found.length ? found[found.length - 1].sequence : low;
      const more = found.length >= query.limit && oldest > firstSequence;
      return { events: found, next: more ? oldest - 1 : null };
    }
    width *= 4;
  }
}

// Follows new events by polling the history route from one past the last event seen.
function liveTail(page, name, state) {
  const button = el("button", { type: "button", class: "primary", id: "tail-toggle" }, "Follow live");
  const eventName = el("select", { id: "tail-event-name" }, el("option", { value: "" }, "all event names"));
  const info = el("span", { class: "muted", id: "tail-info" }, "Shows events appended while it follows, newest on top.");
  const events = eventTable("tail");
  let following = false;
  state.onInfo((info) => fillNames(eventName, info, "all event names"));

  const follow = async () => {
    let from = state.info.lastSequence + 1;
    const filter = eventName.value || null;
    info.replaceChildren(el("span", { class: "badge live" }, "live"), ` following from sequence ${from}`);
    while (following && !page.stopped) {
      try {
        const answer = await historyPage(name, { fromSequence: from, limit: TAIL_PAGE, eventName: filter });
        for (const event of answer.events) events.body.prepend(events.row(event));
        while (events.body.children.length > TAIL_ROWS_KEPT) events.body.lastElementChild.remove();
        if (answer.events.length) from = answer.events[answer.events.length - 1].sequence + 1;
        if (answer.next !== null) {
          from = answer.next;
          continue; // more is waiting: no pause
        }
      } catch (error) {
        info.textContent = `${error.message}; retrying`;
      }
      await page.sleep(TAIL_IDLE_MS);
    }
  };
  button.addEventListener("click", () => {
    if (!state.info) return;
    following = !following;
    button.textContent = following ? "Stop" : "Follow live";
    eventName.disabled = following;
    if (following) follow();
    else info.textContent = "Stopped.";
  });
  return el(
    "section",
    { class: "card table-scroll" },
    el("h2", {}, "Live tail"),
    el("div", { class: "controls" }, el("label", {}, "Event name", eventName), button, info),
    events.table,
  );
}

window.addEventListener("hashchange", route);
route();
