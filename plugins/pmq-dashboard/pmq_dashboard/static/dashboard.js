// The dashboard's only script of its own (the CSP admits no inline script):
// the throughput chart and the dead letters' "select all" box. The live
// fragments are htmx's work (hx-get with hx-trigger="every Ns").
(function () {
  "use strict";

  function selectAll(box) {
    box.addEventListener("change", function () {
      var form = box.closest("form");
      form.querySelectorAll('input[type=checkbox][name="' + box.dataset.selectAll + '"]').forEach(function (c) {
        c.checked = box.checked;
      });
    });
  }

  function chartData(json) {
    var rate = json.error_rate.map(function (r) { return r === null ? null : r * 100; });
    return [json.minutes, json.completed, json.failed, json.retried, rate];
  }

  function throughputChart(el) {
    var chart = null;
    function options() {
      return {
        width: Math.max(320, el.clientWidth), height: 260,
        scales: {x: {time: true}, "%": {range: [0, 100]}},
        axes: [{}, {label: "attempts / min"}, {scale: "%", side: 1, label: "error rate %", grid: {show: false}}],
        series: [
          {},
          {label: "completed", stroke: "#2f855a", fill: "rgba(47,133,90,0.15)"},
          {label: "failed", stroke: "#c53030"},
          {label: "retried", stroke: "#d69e2e"},
          {label: "error rate %", stroke: "#6b46c1", scale: "%", dash: [6, 4]},
        ],
      };
    }
    function load() {
      fetch(el.dataset.src, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (json) {
          var data = chartData(json);
          if (chart === null) { chart = new uPlot(options(), data, el); } else { chart.setData(data); }
          el.dataset.loaded = String(json.minutes.length);
        })
        .catch(function () { el.dataset.loaded = "error"; });
    }
    load();
    setInterval(load, (parseFloat(el.dataset.refresh) || 10) * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-select-all]").forEach(selectAll);
    var chart = document.getElementById("throughput");
    if (chart && window.uPlot) { throughputChart(chart); }
  });
})();
