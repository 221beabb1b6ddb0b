// The live build page: follows a build over a websocket, resuming after the last event shown.
(() => {
  const root = document.getElementById("progress");
  if (!root) return;
  const buildId = root.dataset.build;
  // The prototype's slug: the link of a link-only prototype, without which its build's id opens nothing.
  const prototype = encodeURIComponent(root.dataset.prototype || "");
  let last = Number(root.dataset.lastSeq || 0);
  let final = ["succeeded", "failed", "cancelled"].includes(root.dataset.state);
  const list = document.getElementById("activity");
  const live = document.getElementById("live");

  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  function toolItem(item) {
    const li = el("li", "tool");
    li.dataset.seq = item.seq;
    li.dataset.call = item.id;
    const details = el("details");
    details.append(el("summary", "", item.text));
    li.append(details);
    return li;
  }

  function applyResult(item) {
    const li = list.querySelector(`li[data-call="${CSS.escape(item.id)}"]`);
    if (!li) return;
    const details = li.querySelector("details");
    if (!item.ok) {
      li.classList.add("bad");
      details.querySelector("summary").append(" ", el("span", "badge warn", "problem"));
    }
    if (item.detail) details.append(el("pre", "", item.detail));
  }

  const mark = (passed) => (passed === true ? "✓ " : passed === false ? "✗ " : "– ");
  const grade = (passed) => (passed === true ? "pass" : passed === false ? "fail" : "skip");

  function checklistItem(item) {
    const li = el("li", "note", item.text);
    const list = el("ul", "checks");
    for (const check of item.items || []) list.append(el("li", grade(check.passed), mark(check.passed) + check.item));
    li.append(list);
    return li;
  }

  // The browser check, as templates/store/_smoke.html renders it once the build has ended.
  function showSmoke(smoke) {
    const section = document.getElementById("smoke");
    if (!section || !smoke) return;
    const status = { passed: true, failed: false }[smoke.status];
    section.className = "card smoke smoke-" + smoke.status;
    section.replaceChildren(el("h3", "", "Checked in a browser"), el("p", "smoke-headline", mark(status) + smoke.headline));
    section.lastChild.id = "smoke-headline";
    for (const page of smoke.pages) {
      const box = el("div", "smoke-page");
      const head = el("p");
      head.append(el("strong", "", page.path));
      if (page.title) head.append(" ", el("span", "muted", `· “${page.title}”`));
      box.append(head);
      if (page.problems.length) {
        const problems = el("ul", "problems");
        for (const problem of page.problems) problems.append(el("li", "", "✗ " + problem));
        box.append(problems);
      } else box.append(el("p", "muted small", "No errors, no failed requests, not blank."));
      if (page.steps.length) {
        const steps = el("ul", "steplist");
        for (const step of page.steps) {
          steps.append(el("li", grade(step.ok), mark(step.ok) + step.text + (step.detail ? " — " + step.detail : "")));
        }
        box.append(steps);
      }
      section.append(box);
    }
    if (smoke.before.length) {
      const before = el("div", "smoke-before");
      before.append(el("p", "small", "Already there before the change (not counted against it):"));
      const list = el("ul", "problems muted small");
      for (const page of smoke.before) for (const problem of page.problems) list.append(el("li", "", problem));
      before.append(list);
      section.append(before);
    }
    section.hidden = false;
  }

  function render(item) {
    if (item.kind === "result") return applyResult(item);
    let li = null;
    if (item.kind === "say") li = el("li", "say", item.text);
    else if (item.kind === "tool") li = toolItem(item);
    else if (item.kind === "checklist") li = checklistItem(item);
    else if (item.kind === "verify") {
      li = el("li", "verify " + (item.ok ? "good" : "bad"), (item.ok ? "✓ " : "✗ ") + item.text);
      showSmoke(item.smoke);
    }
    else if (item.kind === "files") li = el("li", "note", `${item.text} (${item.detail})`);
    else if (item.kind === "note") li = el("li", "note", item.text);
    if (!li) return;
    li.dataset.seq = item.seq;
    list.append(li);
    document.getElementById("waiting")?.remove();
  }

  function showBuild(build) {
    // Every frame carries the summary as of its last event (prototypes/progress.summary): steps, bar and
    // usage follow the events, so a batch that covers several steps shows each of them reached.
    const steps = document.getElementById("steps");
    steps.replaceChildren(...build.steps.map((s) => {
      const li = el("li", "step " + s.status, s.label);
      li.dataset.step = s.key;
      return li;
    }));
    document.getElementById("bar").style.width = build.percent + "%";
    document.getElementById("progressbar").setAttribute("aria-valuenow", build.percent);
    if (build.usage) document.getElementById("usage-line").textContent = build.usage.text;
    document.getElementById("state-label").textContent = build.label;
    document.getElementById("build-state").className = "state state-" + build.state;
    document.getElementById("state-note").textContent = build.state === "queued" ? "— waiting for a free build machine." : "";
    root.dataset.state = build.state;
    if (build.started_at) root.dataset.started = build.started_at;
    if (build.finished_at) root.dataset.finished = build.finished_at;
    if (build.final && !final) {
      final = true;
      // The finished page has the preview, the tests and what to do next: load it.
      setTimeout(() => window.location.reload(), 400);
    }
  }

  function tickElapsed() {
    const started = root.dataset.started ? Date.parse(root.dataset.started) : NaN;
    const finished = root.dataset.finished ? Date.parse(root.dataset.finished) : NaN;
    const node = document.getElementById("elapsed");
    if (Number.isNaN(started)) return;
    const end = Number.isNaN(finished) ? Date.now() : finished;
    const seconds = Math.max(0, Math.round((end - started) / 1000));
    node.textContent = `· ${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")} elapsed`;
  }
  tickElapsed();
  if (final) return;
  setInterval(tickElapsed, 1000);

  let delay = 500;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/builds/${buildId}/?after=${last}&prototype=${prototype}`);
    socket.onopen = () => { delay = 500; live.hidden = false; };
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type !== "events") return;
      for (const item of data.items) {
        if (item.seq <= last) continue; // already shown: never twice
        render(item);
        last = item.seq;
      }
      root.dataset.lastSeq = last;
      if (data.build) showBuild(data.build);
    };
    socket.onclose = () => {
      live.hidden = true;
      if (final) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
