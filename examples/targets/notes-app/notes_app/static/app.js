// A little help on top of plain forms: everything works without JavaScript too.

// Ask before a form with data-confirm is sent (deleting a note).
document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

// Show how many characters are left while a note is written.
for (const form of document.querySelectorAll("form.new-note")) {
  const text = form.querySelector("textarea");
  const counter = form.querySelector(".counter");
  const update = () => {
    const left = text.maxLength - text.value.length;
    counter.textContent = `${left} characters left`;
  };
  text.addEventListener("input", update);
  update();
}
