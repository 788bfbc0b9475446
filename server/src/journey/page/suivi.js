// /suivi/{order}: the order's steps, live, over Server-Sent Events. The server sends the whole
// view on connect, so a phone waking from sleep (EventSource reconnects by itself, or we reopen
// it when the page becomes visible) is up to date at once.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var order = decodeURIComponent(location.pathname.split("/").pop());
  var trades = {}, source = null, finished = false;
  var STATES = { Queued: "En attente", InProgress: "En fabrication", Delivered: "Livré", Scrapped: "Rebuté au contrôle", Lost: "Perdu" };
  function esc(s) { var d = document.createElement("div"); d.textContent = s == null ? "" : String(s); return d.innerHTML; }
  function duration(s) {
    if (s == null) { return ""; }
    s = Math.round(s);
    return s < 60 ? s + " s" : Math.floor(s / 60) + " min " + (s % 60) + " s";
  }
  function render(v) {
    $("title").textContent = "Commande " + v.id;
    $("summary").innerHTML = "<div>Modèle <b>" + esc(v.model) + "</b> · texte « <b>" + esc(v.text) + "</b> »</div>" +
      "<div>État : <span class=\"state\" id=\"state\" data-state=\"" + esc(v.state) + "\">" + esc(STATES[v.state] || v.state) + "</span>" +
      (v.current_step ? " · étape " + v.current_step + " / 9" : "") + (v.line === "Stopped" ? " · <b>ligne à l'arrêt</b>" : "") + "</div>";
    $("delivered").hidden = v.state !== "Delivered";
    var html = "";
    v.steps.forEach(function (s) {
      html += "<li class=\"step " + s.status + "\" data-step=\"" + s.number + "\"><header><span>" + s.number + ". " + esc(s.name) + "</span>" +
        "<span class=\"time\">" + duration(s.duration_s) + "</span></header>";
      if (s.status === "current" && s.progress != null) { html += "<div class=\"bar\"><span style=\"width:" + s.progress + "%\"></span></div>"; }
      if (s.live && s.live.length) {
        html += "<div class=\"live\">" + s.live.map(function (l) {
          return "<div>" + esc(l.name) + "<b>" + esc(l.value) + (l.unit ? " " + esc(l.unit) : "") + "</b></div>";
        }).join("") + "</div>";
      }
      if (s.trades.length && s.status === "current") {
        // The step at work: who does it, what they do, how to become one.
        html += "<ul class=\"trades\">" + s.trades.map(function (id) {
          var t = trades[id]; if (!t) { return ""; }
          return "<li class=\"trade\"><b>" + esc(t.name) + "</b> — " + esc(t.description) + " <span class=\"training\">(" + esc(t.training.join(", ")) + ")</span></li>";
        }).join("") + "</ul>";
      } else if (s.trades.length) {
        html += "<div class=\"trade-cloud small\">" + s.trades.map(function (id) {
          var t = trades[id]; return t ? "<span class=\"trade\" title=\"" + esc(t.description) + "\">" + esc(t.name) + "</span>" : "";
        }).join("") + "</div>";
      }
      html += "</li>";
    });
    $("steps").innerHTML = html;
    if (v.state === "Delivered" || v.state === "Scrapped" || v.state === "Lost") { finished = true; close(); $("conn").textContent = "terminé"; }
  }
  function close() { if (source) { source.close(); source = null; } }
  function open() {
    if (finished || source) { return; }
    source = new EventSource("/api/follow/" + encodeURIComponent(order) + "/events");
    source.addEventListener("order", function (e) { $("conn").textContent = "en direct"; $("error").hidden = true; render(JSON.parse(e.data)); });
    source.addEventListener("unknown", function () {
      close(); finished = true;
      $("summary").textContent = ""; $("error").textContent = "Commande inconnue : vérifiez le numéro " + order + ".";
      $("error").hidden = false;
    });
    source.onerror = function () { $("conn").textContent = "reconnexion…"; };
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && (!source || source.readyState === 2)) { source = null; open(); }
  });
  fetch("/api/trades").then(function (r) { return r.json(); }).then(function (c) {
    c.trades.forEach(function (t) { trades[t.id] = t; });
  }).finally(open);
})();
