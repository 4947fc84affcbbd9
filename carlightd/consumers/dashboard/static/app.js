// The dashboard page: draws what the server streams (/stream) and sends workshop commands.
// Everything received is data, never markup: it reaches the page only as text (textContent,
// createTextNode) or as a value checked against a fixed list (status classes). No innerHTML: the
// server's Content-Security-Policy (Trusted Types) makes any HTML-from-string assignment throw.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const SHOWN = 120;  // a received string is cut here on the page: a 100 KB name must not fill it
const PART_STATUSES = new Set(["ok", "pending", "failed", "untested"]);
const FAULT_STATUSES = new Set(["pending", "confirmed"]);
const EVENT_CLASSES = { fault_cleared: "ok", fault_confirmed: "failed", dtc_aged: "ok" };
const SHOWN_DTCS = 40;  // stored DTCs listed; a retained list of thousands must not fill the page
// The ISO 14229 status bits a reader looks for first (as carlightd.contract.payloads words them).
const DTC_STATUS_WORDS = [[0x08, "confirmed"], [0x04, "pending"], [0x01, "failing"], [0x80, "lamp"]];

// Where each lamp sits on the drawing, by what it does and which side it is on.
const FRONT = 70, REAR = 735;
const PLACES = {
  headlamp: [FRONT, 95], high_beam: [FRONT - 8, 135], turn_front: [FRONT + 40, 62],
  tail: [REAR - 10, 95], brake: [REAR + 10, 128], turn_rear: [REAR - 30, 62],
  reverse: [REAR + 28, 160], license_plate: [REAR + 42, 200],
};
// The page reads the parts and their kinds from the snapshot; it has a drawing for lamps (placed
// by function), a box of its own for the first battery, alternator and controller, and a row for
// the fuses (the fuse box, under the windscreen) and one for the ground points below it.
// Any other part — a kind added since, or a second part of a kind — is drawn generically: a box
// labelled with its id in the next free slot of a grid in the free space behind the controller.
const BOXES = { battery: [110, 330], alternator: [290, 330], controller: [200, 440] };
const ROWS = { fuse: 200, ground: 250 };  // y of each row; its parts share the car's width
const ROW_LEFT = 60, ROW_RIGHT = 340;
const SPARE_COLUMNS = [110, 200, 290], SPARE_TOP = 505, SPARE_ROW = 75;
// Labels stay inside the drawing: a failing part is named inside the car's body when the text
// fits there, and a text too long for it is cut (the part's tooltip has it whole).
const VIEW_W = 400, BODY_LEFT = 46, BODY_RIGHT = 354;
let state = { parts: [], latest: {}, events: [], notes: [], stale: null, commands: false, broker: false,
              workshop: [] };
let streamUp = false;

function shown(value) {
  const text = (value === null || value === undefined) ? "" : String(value);
  return text.length > SHOWN ? text.slice(0, SHOWN - 1) + "…" : text;
}

// An HTML element with a class and children (strings become text nodes, never markup).
function element(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) node.append(typeof child === "string" ? document.createTextNode(child) : child);
  return node;
}

function svgElement(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function spareSlot(index) {
  const column = index % SPARE_COLUMNS.length, row = Math.floor(index / SPARE_COLUMNS.length);
  return { x: SPARE_COLUMNS[column], y: SPARE_TOP + row * SPARE_ROW, box: true, generic: true };
}

// `boxed` is the kinds that already have their box on this drawing, `spare` the slots handed out,
// `rows` the parts of each row's kind (in the snapshot's order).
function placeOf(part, boxed, spare, rows) {
  if (Object.hasOwn(ROWS, part.kind)) {
    const members = rows[part.kind], slot = (ROW_RIGHT - ROW_LEFT) / members.length;
    const x = ROW_LEFT + slot * (members.indexOf(part) + 0.5);
    return { x, y: ROWS[part.kind], row: part.kind, width: Math.min(72, slot - 6), box: false };
  }
  if (part.kind !== "lamp") {
    const box = Object.hasOwn(BOXES, part.kind) && !boxed.has(part.kind) ? BOXES[part.kind] : null;
    if (!box) return spareSlot(spare.count++);
    boxed.add(part.kind);
    return { x: box[0], y: box[1], box: true, generic: false };
  }
  let fn = part.function;
  if (fn === "turn_left" || fn === "turn_right") fn = part.id.includes("front") ? "turn_front" : "turn_rear";
  const [y, dx] = PLACES[fn] || [400, 0];
  let side = (fn === "turn_front" || fn === "turn_rear") ? (part.function === "turn_left" ? -1 : 1)
             : part.id.includes("left") ? -1 : part.id.includes("right") ? 1 : 0;
  if (fn === "reverse" && side === 0) side = 1;            // a single reverse lamp sits off-centre
  if (fn === "brake" && side === 0) return { x: 200, y: REAR - 75, box: false };  // high-mounted
  return { x: 200 + side * (200 - dx), y, box: false };
}

// Put `text` in a text node centred on `x` (as near as it can) between `left` and `right`,
// cut with an ellipsis if it is wider (a failure label first widens to the whole drawing). A
// label that is not displayed measures 0: it is placed when its part is drawn with it shown.
function fitLabel(node, text, x, left = BODY_LEFT, right = BODY_RIGHT, widen = true) {
  node.textContent = text;
  node.setAttribute("x", x);
  let width = text ? node.getComputedTextLength() : 0;
  if (!width) return;
  if (width > right - left) {
    if (widen) [left, right] = [Math.min(left, 4), Math.max(right, VIEW_W - 4)];
    for (let n = Math.floor(text.length * (right - left) / width); width > right - left && n > 1; n--) {
      node.textContent = text.slice(0, n - 1) + "…";
      width = node.getComputedTextLength();
    }
  }
  node.setAttribute("x", Math.min(right - width / 2, Math.max(left + width / 2, x)));
}

// Failure labels never cover each other: each, from the top of the car down, takes the free line
// nearest its own (first towards the middle of the car), within the drawing.
const LINE = 15, LABEL_TOP = 14, LABEL_BOTTOM = 808;  // a line: 11 px text with its stroke
function spreadLabels() {
  const labels = [...document.querySelectorAll("#parts text.failure")]
    .filter(t => t.textContent && t.getComputedTextLength() > 0)
    .sort((a, b) => Number(a.dataset.y) - Number(b.dataset.y));
  const taken = [];
  for (const label of labels) {
    const y0 = Number(label.dataset.y), inward = y0 < 400 ? 1 : -1;
    const left = Number(label.getAttribute("x")) - label.getComputedTextLength() / 2;
    const right = left + label.getComputedTextLength();
    const free = y => !taken.some(t => t.left < right && left < t.right && Math.abs(t.y - y) < LINE);
    let y = y0;
    for (let step = 1; !free(y) && step < 130; step++) {
      const candidate = y0 + inward * LINE * Math.ceil(step / 2) * (step % 2 ? 1 : -1);
      if (candidate >= LABEL_TOP && candidate <= LABEL_BOTTOM) y = candidate;
    }
    label.setAttribute("y", y);
    taken.push({ left, right, y });
  }
}

function partShape(p) {
  if (p.box) return [svgElement("rect", { x: p.x - 42, y: p.y - 18, width: 84, height: 36, rx: 6 })];
  if (p.row === "fuse")
    return [svgElement("rect", { x: p.x - p.width / 2, y: p.y - 9, width: p.width, height: 18, rx: 4 })];
  if (p.row === "ground")  // a dot with the ground symbol on it
    return [svgElement("circle", { cx: p.x, cy: p.y, r: 8 }),
            svgElement("path", { class: "glyph", d: `M${p.x - 5} ${p.y - 1}h10M${p.x - 3} ${p.y + 2}h6M${p.x - 1} ${p.y + 5}h2M${p.x} ${p.y - 1}v-5` })];
  return [svgElement("circle", { cx: p.x, cy: p.y, r: 11 })];
}

function drawParts() {
  const group = document.getElementById("parts");
  group.replaceChildren();
  const boxed = new Set(), spare = { count: 0 }, rows = {};
  for (const kind of Object.keys(ROWS)) rows[kind] = state.parts.filter(part => part.kind === kind);
  for (const part of state.parts) {
    const p = placeOf(part, boxed, spare, rows);
    const g = svgElement("g", { class: "part unknown", id: "part-" + part.id });
    g.dataset.part = part.id;
    g.dataset.kind = String(part.kind);
    g.dataset.drawn = p.generic ? "generic" : p.row || (p.box ? "box" : "lamp");
    g.append(...partShape(p));
    // A lamp's name is in its tooltip; a box's inside it, a fuse's inside it, a ground's below it.
    const name = svgElement("text", { class: "name" + (p.row ? " small" : ""),
                                      y: p.box ? p.y + 4 : p.row === "fuse" ? p.y + 3 : p.y + 19 });
    // Failing parts are named inside the car: below the front lamps, above the rear ones.
    const failure = svgElement("text", {
      class: "failure",
      y: p.box ? p.y + 34 : p.row === "fuse" ? p.y + 24 : p.row === "ground" ? p.y + 36
         : (p.y < 400 ? p.y + 30 : p.y - 24),
    });
    failure.dataset.y = failure.getAttribute("y");  // its own line, before spreadLabels moves it
    const title = svgElement("title", {});
    title.textContent = part.id;
    g.append(name, failure, title);
    group.append(g);
    const room = p.box ? 39 : p.row === "fuse" ? p.width / 2 - 2 : null;  // a name inside its shape
    if (p.box || p.row) fitLabel(name, part.id, p.x, room ? p.x - room : 4, room ? p.x + room : VIEW_W - 4, false);
    g.dataset.x = String(p.x);
  }
}

function number(value, digits) {
  return (typeof value !== "number" || !Number.isFinite(value)) ? "—" : value.toFixed(digits);
}

// Draw one part's state; true when its failure label changed (the labels are spread again).
function drawPart(part) {
  const g = document.getElementById("part-" + part.id);
  if (!g) return false;
  const c = state.latest["components/" + part.id];
  const status = c && PART_STATUSES.has(c.status) ? c.status : "unknown";
  const lit = c && c.reading && c.reading.commanded_on === true;
  g.setAttribute("class", `part ${status}${lit ? " lit" : ""}`);
  g.dataset.status = status;
  const failure = c && c.failure ? shown(c.failure) : "";
  const label = failure ? `${part.id}: ${failure}${c.dtc ? " " + shown(c.dtc) : ""}` : "";
  const changed = g.dataset.label !== status + label;
  if (changed) {  // measuring a label costs a layout: only on change
    g.dataset.label = status + label;
    fitLabel(g.querySelector("text.failure"), label, Number(g.dataset.x));
  }
  // A failing part is drawn last, so its name stays readable over the parts around it.
  if (failure && g.parentNode.lastChild !== g) g.parentNode.append(g);
  const behind = Array.isArray(part.feeds) ? ` — feeds ${part.feeds.join(", ")}`
               : Array.isArray(part.serves) ? ` — serves ${part.serves.join(", ")}` : "";
  g.querySelector("title").textContent = `${part.id} — ${status}` +
    (failure ? ` (${failure}, ${shown(c.dtc)})` : "") + (c && c.reason ? " — " + shown(c.reason) : "") + behind;
  return changed;
}

function faultRow(f) {
  const status = FAULT_STATUSES.has(f.status) ? f.status : "unknown";
  const row = element("tr", "",
    element("td", "", shown(f.dtc)), element("td", "st-" + status, shown(f.status)),
    element("td", "", shown(f.component)), element("td", "", shown(f.failure)),
    element("td", "", shown(String(f.since).replace("T", " ").slice(0, 19))),
    element("td", "", shown(f.consequence_of)));
  row.dataset.part = String(f.component);
  return row;
}

function dtcStatus(status) {
  if (!Number.isInteger(status) || status < 0 || status > 255) return "—";
  const words = DTC_STATUS_WORDS.filter(([bit]) => status & bit).map(([, word]) => word);
  return "0x" + status.toString(16).padStart(2, "0") + (words.length ? " " + words.join(", ") : "");
}

function freezeFrame(frame) {
  if (!frame || typeof frame !== "object") return "—";
  return `${shown(frame.ignition)} ${number(frame.engine_rpm, 0)} rpm ${number(frame.bus_v, 2)} V ` +
         `${number(frame.battery_soc_percent, 0)} % ${number(frame.temperature_c, 1)} °C ` +
         `at ${shown(String(frame.at).replace("T", " ").slice(0, 19))}`;
}

function dtcRow(d) {
  const status = element("td", (d.dtc_status & 0x01) ? "st-failed" : "st-pending", dtcStatus(d.dtc_status));
  const row = element("tr", "",
    element("td", "", shown(d.dtc)), status,
    element("td", "", shown(d.component)), element("td", "", shown(d.failure)),
    element("td", "", shown(d.occurrences)), element("td", "", shown(d.aging_counter)),
    element("td", "", freezeFrame(d.freeze_frame)));
  row.dataset.part = String(d.component);
  row.dataset.dtc = String(d.dtc);
  return row;
}

function dtcRows(memory) {
  const dtcs = memory && Array.isArray(memory.dtcs) ? memory.dtcs : null;
  const note = (text, cls) => [element("tr", "", Object.assign(element("td", cls, text), { colSpan: 7 }))];
  if (!dtcs) return note("no fault memory yet", "");
  if (!dtcs.length) return note("none stored", "st-ok");
  const rows = dtcs.slice(0, SHOWN_DTCS).map(dtcRow);
  if (dtcs.length > SHOWN_DTCS) rows.push(...note(`… and ${dtcs.length - SHOWN_DTCS} more`, ""));
  return rows;
}

function eventItem(e) {
  const type = element("span", "st-" + (EVENT_CLASSES[e.type] || "pending"), shown(e.type));
  return element("li", "", `#${shown(e.seq)} ${String(e.at).slice(11, 19)} `, type,
                 ` ${shown(e.component)} ${shown(e.failure)} ${shown(e.dtc)}`);
}

function render() {
  const online = state.latest.availability === "online" && state.broker && streamUp;
  document.body.classList.toggle("offline", !online);
  document.body.classList.toggle("no-commands", !state.commands);
  document.body.classList.toggle("stale", !!state.stale);
  document.body.classList.toggle("has-notes", state.notes.length > 0);
  document.getElementById("stale-why").textContent = shown(state.stale);
  const badge = document.getElementById("availability");
  badge.textContent = !streamUp ? "dashboard disconnected" : !state.broker ? "broker unreachable"
                    : (state.latest.availability === "online" || state.latest.availability === "offline"
                       ? state.latest.availability : "unknown");
  badge.className = online ? "online" : "offline";
  const faultList = state.latest.faults || {};
  const faults = Array.isArray(faultList.faults) ? faultList.faults : [];
  const lamps = faultList.warning_lamps || {};
  for (const name of ["bulb", "battery", "check_engine"])
    document.getElementById("telltale-" + name).classList.toggle("lit", lamps[name] === true);
  let relabelled = false;
  for (const part of state.parts) relabelled = drawPart(part) || relabelled;
  if (relabelled) spreadLabels();
  document.getElementById("faults").replaceChildren(...(faults.length ? faults.map(faultRow)
    : [element("tr", "", Object.assign(element("td", "st-ok", "no faults"), { colSpan: 6 }))]));
  document.getElementById("dtcs").replaceChildren(...dtcRows(state.latest.dtcs));
  document.getElementById("events").replaceChildren(...state.events.slice().reverse().map(eventItem));
  const t = state.latest.telemetry || {};
  const ignition = ["off", "on", "run"].includes(t.ignition) ? t.ignition : "—";
  document.getElementById("telemetry").replaceChildren(
    element("div", "", "ignition", element("b", "", ignition)),
    element("div", "", "engine", element("b", "", `${number(t.engine_rpm, 0)} rpm`)),
    element("div", "", "bus", element("b", "", `${number(t.bus_v, 2)} V`)),
    element("div", "", "battery", element("b", "", `${number(t.battery_soc_percent, 0)} %`)));
  document.getElementById("notes").replaceChildren(...state.notes.slice().reverse().map(
    note => element("li", "note", `${String(note.at).slice(11, 19)} ${note.text}`)));
}

// The workshop: one control per command of the contract's registry (`workshop` in the snapshot).
// A command that names a part is offered on every part's row; any other once, for the whole car.
const namesPart = command => command.arguments.some(a => a.names === "part");

function controls(commands, part) {
  const inputs = [], buttons = [];
  for (const command of commands) {
    for (const argument of command.arguments) {
      if (argument.names === "part") continue;
      const values = argument.names === "failure" ? part.failures : argument.choices;
      const select = element("select", "", ...values.map(v => element("option", "", v)));
      select.dataset.command = command.name;
      select.dataset.field = argument.field;
      inputs.push(select);
    }
    for (const option of command.options || []) {  // may be left empty: then it is not sent
      const input = element("input", "option");
      Object.assign(input, { type: "text", size: 11, placeholder: option.label, title: option.help });
      input.dataset.command = command.name;
      input.dataset.field = option.field;
      inputs.push(input);
    }
    const button = element("button", command.label, command.label);
    button.dataset.command = command.name;
    button.title = command.description;
    if (part) button.dataset.part = part.id;
    buttons.push(...(buttons.length ? [" ", button] : [button]));
  }
  return element("tr", "", element("td", "", part ? part.id : commands[0].description),
                 element("td", "", ...inputs), element("td", "", ...buttons));
}

function drawWorkshop() {
  const forParts = state.workshop.filter(namesPart);
  const rows = state.workshop.filter(c => !namesPart(c)).map(c => controls([c], null));
  if (forParts.length) rows.push(...state.parts.map(p => controls(forParts, p)));
  document.getElementById("workshop-rows").replaceChildren(...rows);
}

async function command(name, body) {
  const message = document.getElementById("message");
  message.textContent = `${name} ${JSON.stringify(body)} …`;
  try {
    const response = await fetch("/api/command", { method: "POST", headers: { "Content-Type": "application/json" },
                                                   body: JSON.stringify({ command: name, body }) });
    const answer = await response.json();
    message.textContent = answer.status === "ok" ? `${name}: ok` : `${name}: ${shown(answer.error)}`;
  } catch (error) {
    message.textContent = `${name}: ${error}`;
  }
}

// A workshop button: its command's body from its row (the part, the chosen values).
document.addEventListener("click", event => {
  const button = event.target.closest("button[data-command]");
  const form = button && state.workshop.find(c => c.name === button.dataset.command);
  if (!form) return;
  const chosen = {};
  for (const select of button.closest("tr").querySelectorAll("select"))
    if (select.dataset.command === form.name) chosen[select.dataset.field] = select.value;
  const body = {};
  for (const argument of form.arguments)
    body[argument.field] = argument.names === "part" ? button.dataset.part : chosen[argument.field];
  // An option typed: sent as a number when it is one, else as typed, for the daemon to refuse
  // naming the field (JSON has no NaN or Infinity, and a guess here would hide the mistake).
  for (const input of button.closest("tr").querySelectorAll("input[data-field]")) {
    const text = input.value.trim();
    if (input.dataset.command !== form.name || text === "") continue;
    body[input.dataset.field] = Number.isFinite(Number(text)) ? Number(text) : text;
  }
  command(form.name, body);
});

function take(message) {
  if (message.type === "snapshot") {
    state = Object.assign(state, message);
    document.getElementById("vehicle").textContent = message.vehicle;
    document.getElementById("root").textContent = message.root;
    drawParts(); drawWorkshop();
    chartReset(message.history, message.history_s, message.history_points);
  } else if (message.type === "point") {
    chartAdd(message.point);
  } else if (message.type === "update") {
    if (message.topic === "events") state.events = state.events.concat([message.value]).slice(-20);
    else state.latest[message.topic] = message.value;
  } else if (message.type === "broker") {
    state.broker = message.connected;
  } else if (message.type === "note") {
    state.notes = state.notes.concat([message.note]).slice(-20);
  } else if (message.type === "stale") {
    state.stale = message.stale;
  }
}

function connect() {
  const source = new EventSource("/stream");
  source.onopen = () => { streamUp = true; render(); };
  source.onerror = () => { streamUp = false; render(); };
  source.onmessage = event => {
    take(JSON.parse(event.data));
    render();
  };
}
connect();
