// The dashboard's chart: bus voltage, battery current and temperature over the last minutes, from
// the telemetry points the server keeps (`history` in the snapshot) and sends (`point` messages):
// [time (Unix s), bus V, battery A (+ discharging), battery °C, commanded charging set-point V],
// a null being a gap.
// Drawn with uPlot (static/vendor/, shipped in the package), which sizes its elements through the
// CSSOM (element.style.width = …), never a style attribute nor markup, so the page's CSP
// (`style-src 'self'`, Trusted Types) holds. Loaded before app.js, which calls chartReset and
// chartAdd.
"use strict";

const CHART_HEIGHT = 150;  // the plot and its time axis; the legend is below it
// `span`: the least range a plot's axis shows, so sensor noise stays small beside a real change.
const CHARTS = [
  { id: "chart-bus", unit: "V", digits: 2, span: 4,
    series: [{ column: 1, label: "bus voltage", stroke: "#58a6ff" },
             { column: 4, label: "charging set-point", stroke: "#3fb950", dash: [4, 3] }] },
  { id: "chart-current", unit: "A", digits: 1, span: 20,
    series: [{ column: 2, label: "battery current (+ discharging)", stroke: "#e3b341" }] },
  { id: "chart-temperature", unit: "°C", digits: 1, span: 10,
    series: [{ column: 3, label: "battery temperature", stroke: "#f85149" }] },
];
const chart = { points: [], windowS: 300, plots: [], most: 1200 };  // most: as the server keeps

function chartData(spec) {
  return [chart.points.map(p => p[0]), ...spec.series.map(s => chart.points.map(p => p[s.column]))];
}

// The window ends at the newest point and spans the last windowS seconds, by telemetry's clock
// (before the first point, by the page's clock: an empty chart of the last minutes).
function timeRange(u, min, max) {
  const end = max === null ? Date.now() / 1000 : max;
  return [end - chart.windowS, end];
}

// The values' range, widened to the plot's least span (and a margin).
function valueRange(spec, min, max) {
  if (min === null || max === null) return [0, spec.span];
  const widen = Math.max(0, spec.span - (max - min)) / 2 + spec.span / 20;
  return [min - widen, max + widen];
}

function chartOptions(spec, width) {
  const value = (u, v) => (v === null || v === undefined) ? "—" : `${v.toFixed(spec.digits)} ${spec.unit}`;
  const axis = { stroke: "#6d7c8c", grid: { stroke: "#2c3846", width: 1 }, ticks: { stroke: "#2c3846", width: 1 } };
  return {
    width, height: CHART_HEIGHT,
    cursor: { sync: { key: "telemetry" } },  // one time under the pointer on every chart
    legend: { live: true },
    scales: { x: { time: true, range: timeRange }, y: { range: (u, min, max) => valueRange(spec, min, max) } },
    axes: [axis, { ...axis, size: 64, values: (u, ticks) => ticks.map(t => `${t} ${spec.unit}`) }],
    series: [{}, ...spec.series.map(s => ({ label: s.label, stroke: s.stroke, dash: s.dash, width: 1.5, value }))],
  };
}

function chartDraw() {
  if (typeof uPlot !== "function") return;  // the library did not load: the page still works
  for (const [index, spec] of CHARTS.entries()) {
    const element = document.getElementById(spec.id);
    const data = chartData(spec);
    if (!chart.plots[index]) chart.plots[index] = new uPlot(chartOptions(spec, element.clientWidth || 600), data, element);
    else chart.plots[index].setData(data);
    // What the chart holds, for a reader of the DOM (and the tests): points and the range shown.
    const values = data[1].filter(v => typeof v === "number");
    element.dataset.points = String(values.length);
    element.dataset.min = values.length ? String(Math.min(...values)) : "";
    element.dataset.max = values.length ? String(Math.max(...values)) : "";
  }
}

// Points may come fast (many publishers, or a flood): the charts are drawn at most every 100 ms.
let chartDrawing = null;
function chartLater() {
  if (chartDrawing === null) chartDrawing = setTimeout(() => { chartDrawing = null; chartDraw(); }, 100);
}

function validPoint(point) {
  return Array.isArray(point) && point.length === 5 && Number.isFinite(point[0]) &&
         point.slice(1).every(v => v === null || Number.isFinite(v));
}

// A snapshot: the server's whole history (it keeps the same window).
function chartReset(points, windowS, most) {
  if (Number.isFinite(windowS) && windowS > 0) chart.windowS = windowS;
  if (Number.isInteger(most) && most > 0) chart.most = most;
  chart.points = Array.isArray(points) ? points.filter(validPoint) : [];
  chartDraw();
}

// One new point. As on the server, a point older than the newest starts the history over.
function chartAdd(point) {
  if (!validPoint(point)) return;
  const last = chart.points[chart.points.length - 1];
  if (last && point[0] < last[0]) chart.points = [];
  chart.points.push(point);
  const oldest = point[0] - chart.windowS;
  while (chart.points[0][0] < oldest || chart.points.length > chart.most) chart.points.shift();
  chartLater();
}

window.addEventListener("resize", () => {
  for (const [index, spec] of CHARTS.entries()) {
    const element = document.getElementById(spec.id);
    if (chart.plots[index]) chart.plots[index].setSize({ width: element.clientWidth, height: CHART_HEIGHT });
  }
});
