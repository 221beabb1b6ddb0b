// The Starting page's poll (templates/live/starting.html), served by the live preview proxy at
// /__preview/starting.js: the page carries no inline script.
(function () {
  var tries = 0;
  function showFailure(s) {
    // Shown in place rather than by reloading: a reload would ask for the app, and so start it again.
    var main = document.getElementById("live-status");
    main.dataset.state = "failed";
    main.querySelector("h1").textContent = main.dataset.title + " did not start";
    main.querySelectorAll("p")[0].textContent = s.error || "The app did not start.";
    if (s.log) { var pre = document.createElement("pre"); pre.id = "live-log"; pre.textContent = s.log; main.insertBefore(pre, main.lastElementChild); }
  }
  function poll() {
    tries += 1;
    fetch("/__preview/status", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : {state: "refused"}; })
      .then(function (s) {
        if (s.state === "running") { location.reload(); return; }
        if (s.state === "failed") { showFailure(s); return; }
        if (s.state === "refused") { document.getElementById("live-note").textContent = "You can no longer open this preview."; return; }
        if (tries > 5) { document.getElementById("live-note").textContent = "Still starting…"; }
        setTimeout(poll, tries < 10 ? 500 : 2000);
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 500);
})();
