// The attempts box of the new-prototype form starts at the chosen app's default (Target.default_attempts)
// and follows the choice of app until the person types a number of their own.
function followTargetDefault(form) {
  const attempts = form?.querySelector("input[name=attempts]");
  const option = form?.querySelector("select[name=target]")?.selectedOptions[0];
  if (attempts && option?.dataset.attempts && !attempts.dataset.touched) attempts.value = option.dataset.attempts;
}
document.addEventListener("change", (event) => {
  if (event.target.matches?.("#new-prototype select[name=target]")) followTargetDefault(event.target.form);
});
document.addEventListener("input", (event) => {
  if (event.target.matches?.("#new-prototype input[name=attempts]")) event.target.dataset.touched = "1";
});

// Fills a form from a suggested (sample) idea: the new-prototype form, or the follow-up or remix form its
// list names (data-suggest-form), which have no app to choose and the follow-up no name.
document.addEventListener("click", (event) => {
  const chip = event.target.closest("[data-suggest-idea]");
  if (!chip) return;
  const form = document.getElementById(chip.closest("[data-suggest-form]")?.dataset.suggestForm || "new-prototype");
  const select = form.querySelector("select[name=target]");
  for (const option of select?.options || []) {
    if (option.dataset.slug === chip.dataset.suggestTarget) select.value = option.value;
  }
  followTargetDefault(form);
  form.querySelector("textarea[name=idea]").value = chip.dataset.suggestIdea;
  const title = form.querySelector("input[name=title]");
  if (title) title.value = chip.dataset.suggestTitle;
  form.querySelector("textarea[name=idea]").focus();
});

// Selects the whole share link when its box gets focus, ready to copy. (Here, not in an onfocus
// attribute: the Content-Security-Policy allows no inline scripts.)
document.addEventListener("focusin", (event) => {
  if (event.target.matches?.("input.share-url")) event.target.select();
});

// A Copy button (data-copy names the box): copies with the clipboard API, or, where there is none (a page
// served over plain http, an old browser), selects the text so Ctrl+C or the phone's menu copies it; the
// status line next to it says which happened.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const box = document.getElementById(button.dataset.copy);
  const status = document.getElementById("copy-status");
  const say = (text) => { if (status) status.textContent = text; };
  box.focus();
  box.select();
  try {
    if (!navigator.clipboard?.writeText) throw new Error("no clipboard");
    await navigator.clipboard.writeText(box.value);
    say("Copied. Paste it wherever you want to share it.");
  } catch {
    say("The link is selected: press Ctrl+C (⌘C on a Mac) to copy it.");
  }
});
