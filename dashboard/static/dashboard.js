// The dashboard's only script: refresh the Now page in place, expand every decision at once.
// Everything works without it (the pages are server-rendered; <details> expands by itself).
(function () {
  "use strict";
  var main = document.getElementById("main");
  var every = main && Number(main.getAttribute("data-refresh"));
  if (every > 0) {
    window.setInterval(function () {
      if (document.hidden) return;
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("main");
          if (fresh) main.innerHTML = fresh.innerHTML;
        })
        .catch(function () { /* the next tick tries again */ });
    }, every * 1000);
  }
  // A filter applies as soon as it changes (the page's Content-Security-Policy forbids inline handlers).
  document.addEventListener("change", function (event) {
    var select = event.target.closest && event.target.closest("select[data-autosubmit]");
    if (select && select.form) select.form.submit();
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-expand-all]");
    if (!button) return;
    var all = document.querySelectorAll(".story details");
    var open = button.getAttribute("data-open") !== "1";
    all.forEach(function (d) { d.open = open; });
    button.setAttribute("data-open", open ? "1" : "0");
    button.textContent = open ? "collapse all" : "expand all";
  });
})();
