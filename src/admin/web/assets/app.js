// plausible-webhooks' page: conveniences only; every form works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Copy buttons (hidden until this script shows them).
  document.querySelectorAll("[data-copy]").forEach(function (b) {
    var target = document.getElementById(b.getAttribute("data-copy"));
    if (!target || !navigator.clipboard) return;
    b.hidden = false;
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(target.textContent.trim()).then(function () {
        b.textContent = "Copied";
      });
    });
  });
  // Confirm before what cannot be taken back at once.
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
    });
  });
  // A trigger form shows the fields its type takes.
  document.querySelectorAll("form.add-trigger").forEach(function (f) {
    var type = f.querySelector("select[name=type]");
    var parts = f.querySelectorAll("[data-for]");
    function show() {
      parts.forEach(function (p) {
        p.hidden = p.getAttribute("data-for").split(" ").indexOf(type.value) < 0;
      });
    }
    type.addEventListener("change", show);
    show();
  });
});
