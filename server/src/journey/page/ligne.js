// /ligne: the big screen of the truck, every order at once, over Server-Sent Events.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  function esc(s) { var d = document.createElement("div"); d.textContent = s == null ? "" : String(s); return d.innerHTML; }
  function render(v) {
    $("title").textContent = "Les commandes sur la ligne" + (v.line === "Stopped" ? " — ligne à l'arrêt" : "");
    $("grid").innerHTML = v.steps.map(function (s) {
      var o = s.order;
      return "<div class=\"cell" + (o ? " busy" : "") + "\" data-step=\"" + s.number + "\"><h3>" + s.number + ". " + esc(s.name) + "</h3>" +
        (o ? "<div class=\"id\">" + esc(o.id) + "</div><div class=\"txt\">" + esc(o.text) + "</div><div class=\"muted\">" + esc(o.model) + "</div>" +
          "<div class=\"bar\"><span style=\"width:" + o.progress + "%\"></span></div>" : "<div class=\"muted\">libre</div>") +
        "<div class=\"muted\">" + s.trades + " métiers</div></div>";
    }).join("");
    $("queue").innerHTML = v.queue.map(function (o) { return "<span class=\"order\">" + esc(o.id) + " · " + esc(o.text) + "</span>"; }).join("") || "<span class=\"muted\">aucune</span>";
    $("finished").innerHTML = v.finished.map(function (o) {
      return "<span class=\"order " + (o.state === "Scrapped" ? "scrapped" : "") + "\" data-id=\"" + esc(o.id) + "\">" + esc(o.id) + " · " + esc(o.text) + (o.state === "Delivered" ? " ✓" : " ✗") + "</span>";
    }).join("");
  }
  var source = null;
  function open() {
    source = new EventSource("/api/line/events");
    source.addEventListener("line", function (e) { $("conn").textContent = "en direct"; render(JSON.parse(e.data)); });
    source.onerror = function () { $("conn").textContent = "reconnexion…"; };
  }
  open();
})();
