// Fills the new-prototype form from a suggested (sample) idea.
document.addEventListener("click", (event) => {
  const chip = event.target.closest("[data-suggest-idea]");
  if (!chip) return;
  const form = document.getElementById("new-prototype");
  const select = form.querySelector("select[name=target]");
  for (const option of select.options) {
    if (option.dataset.slug === chip.dataset.suggestTarget) select.value = option.value;
  }
  form.querySelector("textarea[name=idea]").value = chip.dataset.suggestIdea;
  form.querySelector("input[name=title]").value = chip.dataset.suggestTitle;
  form.querySelector("textarea[name=idea]").focus();
});

// Selects the whole share link when its box gets focus, ready to copy. (Here, not in an onfocus
// attribute: the Content-Security-Policy allows no inline scripts.)
document.addEventListener("focusin", (event) => {
  if (event.target.matches?.("input.share-url")) event.target.select();
});
