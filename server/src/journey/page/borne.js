// /borne: a USB scanner types the code and Enter; a visitor can type it too. A launched order
// shows its number and the QR code of its follow page, then the kiosk resets by itself.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var resetTimer = null, trades = [];
  fetch("/api/trades").then(function (r) { return r.json(); }).then(function (c) { trades = c.trades; });
  function focus() { if (!$("scan").hidden) { $("code").focus(); } }
  function reset() {
    clearTimeout(resetTimer);
    $("code").value = ""; $("error").hidden = true;
    $("done").hidden = true; $("scan").hidden = false; focus();
  }
  function showError(body) {
    var e = $("error");
    e.textContent = body.error || "Erreur inattendue : demandez à l'animateur·rice.";
    e.dataset.kind = body.kind || "";
    e.hidden = false;
    $("code").value = ""; focus();
  }
  function showTrades() {
    var box = $("trades"); box.innerHTML = "";
    trades.filter(function (t) { return t.steps.length > 0; }).forEach(function (t) {
      var s = document.createElement("span"); s.textContent = t.name; box.appendChild(s);
    });
    var off = trades.filter(function (t) { return t.steps.length === 0; }).length;
    if (off) { var s = document.createElement("span"); s.textContent = "+ " + off + " métiers avant et après la ligne"; box.appendChild(s); }
  }
  $("form").addEventListener("submit", function (event) {
    event.preventDefault();
    var code = $("code").value.trim();
    if (!code) { return; }
    $("launch").disabled = true;
    fetch("/api/kiosk/scan", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code: code }) })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (res) {
        $("launch").disabled = false;
        if (!res.ok) { showError(res.body); return; }
        $("order").textContent = res.body.order;
        $("qr").src = "/api/follow/" + encodeURIComponent(res.body.order) + "/qr.svg";
        $("qr").dataset.follow = res.body.follow;
        showTrades();
        $("scan").hidden = true; $("done").hidden = false;
        resetTimer = setTimeout(reset, 45000);
      })
      .catch(function () { $("launch").disabled = false; showError({ error: "Pas de connexion avec la ligne : réessayez.", kind: "network" }); });
  });
  $("next").addEventListener("click", reset);
  document.addEventListener("click", function () { setTimeout(focus, 0); });
  focus();
})();
