// The page: a form to add a note and the list of notes, kept in localStorage on the phone.
(function () {
  const FieldNotes = window.FieldNotes;
  const KEY = "field-notes";
  const store = FieldNotes.openStore(() => window.localStorage);
  const form = document.querySelector("#add-note");
  const list = document.querySelector("#notes");

  function load() {
    return FieldNotes.parseNotes(store.get(KEY));
  }

  function render() {
    const notes = FieldNotes.newestFirst(load());
    document.querySelector("#note-count").textContent = FieldNotes.countLabel(notes.length);
    list.replaceChildren(
      ...notes.map((note) => {
        const item = document.createElement("li");
        const text = document.createElement("p");
        text.textContent = note.text;
        item.append(text);
        if (note.place) {
          const place = document.createElement("span");
          place.className = "place";
          place.textContent = note.place;
          item.append(place);
        }
        return item;
      }),
    );
    document.querySelector("#empty").hidden = notes.length > 0;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const note = FieldNotes.makeNote(form.elements.text.value, form.elements.place.value, new Date());
    if (!note) return;
    store.set(KEY, JSON.stringify([...load(), note]));
    form.reset();
    render();
  });

  render();
})();
