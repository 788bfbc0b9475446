// /concevoir: pick a model, type the text, see it on the holder, get the code and its QR code.
(function () {
  "use strict";
  var model = null, max = 20;
  var $ = function (id) { return document.getElementById(id); };
  var SHAPES = {
    Classic: '<rect x="20" y="20" width="160" height="110" rx="10"/>',
    Wave: '<path d="M20 40 Q60 10 100 40 T180 40 V130 H20 Z"/>',
    Hexa: '<polygon points="60,20 140,20 180,75 140,130 60,130 20,75"/>',
    Minimal: '<rect x="30" y="40" width="140" height="80" rx="40"/>'
  };
  function escapeXml(s) {
    return s.replace(/[&<>"']/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]; });
  }
  function preview() {
    var text = $("text").value.trim();
    var shape = SHAPES[model] || '<rect x="20" y="20" width="160" height="110" rx="10"/>';
    $("preview").innerHTML = '<svg viewBox="0 0 200 170" role="img" aria-label="Aperçu">' +
      '<g fill="#0b6e4f" stroke="#084c37" stroke-width="3">' + shape + '</g>' +
      '<rect x="40" y="140" width="120" height="14" rx="4" fill="#9aa6b0"/>' +
      '<text x="100" y="85" text-anchor="middle" font-size="' + (text.length > 12 ? 14 : 20) +
      '" font-weight="700" fill="#fff" font-family="sans-serif">' + escapeXml(text || "Votre texte") + '</text></svg>';
    $("count").textContent = text.length;
    $("create").disabled = !(model && text.length > 0 && text.length <= max);
  }
  function pick(button) {
    document.querySelectorAll("#models button").forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
    model = button.dataset.value;
    preview();
  }
  function showError(text) { $("error").textContent = text; $("error").hidden = false; }
  fetch("/api/designs/options").then(function (r) { return r.json(); }).then(function (o) {
    max = o.max_text_length; $("max").textContent = max; $("text").maxLength = max;
    o.models.forEach(function (m) {
      var b = document.createElement("button");
      b.type = "button"; b.dataset.value = m; b.textContent = m; b.setAttribute("aria-pressed", "false");
      b.addEventListener("click", function () { pick(b); });
      $("models").appendChild(b);
    });
    preview();
  });
  $("text").addEventListener("input", preview);
  $("create").addEventListener("click", function () {
    $("create").disabled = true; $("error").hidden = true;
    fetch("/api/designs", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: model, text: $("text").value.trim() }) })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (res) {
        if (!res.ok) { showError("Impossible de créer le code : " + (res.body.error || "erreur")); $("create").disabled = false; return; }
        var d = res.body;
        $("code").textContent = d.code;
        $("qr").src = d.qr;
        $("summary").textContent = "Modèle " + d.model + " · « " + d.text + " »";
        $("expires").textContent = "Valable jusqu'au " + new Date(d.expires_at).toLocaleDateString("fr-FR") + ".";
        $("design").hidden = true; $("done").hidden = false;
      })
      .catch(function () { showError("Pas de connexion : réessayez dans un instant."); $("create").disabled = false; });
  });
  $("again").addEventListener("click", function () {
    $("text").value = ""; $("done").hidden = true; $("design").hidden = false; preview();
  });
})();
