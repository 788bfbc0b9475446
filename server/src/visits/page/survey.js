// The exit survey: one tap per question, then "Envoyer"; the thank-you screen resets itself.
(function () {
  "use strict";
  var RESET_AFTER_MS = 5000;
  var answers = {};
  var form = document.getElementById("form");
  var thanks = document.getElementById("thanks");
  var submit = document.getElementById("submit");
  var error = document.getElementById("error");
  var questions = Array.prototype.slice.call(document.querySelectorAll(".question"));
  var tradesBox = document.getElementById("trades");
  // The optional multi-choice question, from the trades catalogue.
  var chosen = {};
  fetch("/api/trades").then(function (r) { return r.json(); }).then(function (catalogue) {
    catalogue.trades.forEach(function (t) {
      var b = document.createElement("button");
      b.type = "button"; b.dataset.value = t.id; b.textContent = t.name; b.title = t.description;
      b.setAttribute("aria-pressed", "false");
      b.addEventListener("click", function () {
        var on = b.getAttribute("aria-pressed") !== "true";
        b.setAttribute("aria-pressed", String(on));
        if (on) { chosen[t.id] = true; } else { delete chosen[t.id]; }
      });
      tradesBox.appendChild(b);
    });
    document.getElementById("trades-question").hidden = false;
  }).catch(function () { /* without the catalogue, the three questions remain */ });

  function complete() {
    return questions.every(function (q) { return q.dataset.field in answers; });
  }

  function reset() {
    answers = {};
    chosen = {};
    tradesBox.querySelectorAll("button").forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
    questions.forEach(function (q) {
      q.querySelectorAll("button").forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
    });
    submit.disabled = true;
    error.hidden = true;
    thanks.hidden = true;
    form.hidden = false;
    window.scrollTo(0, 0);
  }

  questions.forEach(function (q) {
    q.querySelectorAll("button").forEach(function (button) {
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", function () {
        q.querySelectorAll("button").forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
        button.setAttribute("aria-pressed", "true");
        var raw = button.dataset.value;
        var field = q.dataset.field;
        answers[field] = field === "satisfaction" ? Number(raw) : field === "view_changed" ? raw === "true" : raw;
        submit.disabled = !complete();
      });
    });
  });

  submit.addEventListener("click", function () {
    if (!complete()) { return; }
    submit.disabled = true;
    error.hidden = true;
    fetch("/api/survey", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.keys(chosen).length ? Object.assign({ trades: Object.keys(chosen) }, answers) : answers)
    }).then(function (response) {
      if (response.status !== 201) {
        return response.json().then(function (body) { throw new Error(body.error || response.status); });
      }
      form.hidden = true;
      thanks.hidden = false;
      setTimeout(reset, RESET_AFTER_MS);
    }).catch(function (e) {
      error.textContent = "Votre réponse n'a pas pu être enregistrée, merci de réessayer. (" + e.message + ")";
      error.hidden = false;
      submit.disabled = !complete();
    });
  });

  reset();
})();
