// Field notes: what the app keeps and how it is shown, without the page (tested with node --test).
// A classic script, not an ES module: Android's WebView refuses module scripts from file:// pages, so
// this file sets window.FieldNotes in the app and module.exports under Node.
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.FieldNotes = factory();
})(typeof self !== "undefined" ? self : this, function () {
  const MAX_TEXT = 500;

  // A new note from what was typed; null when there is nothing to keep.
  function makeNote(text, place, now) {
    const body = String(text || "").trim().slice(0, MAX_TEXT);
    if (!body) return null;
    return { text: body, place: String(place || "").trim(), at: now.toISOString() };
  }

  // Newest first, without changing the list it was given.
  function newestFirst(notes) {
    return notes.slice().sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
  }

  // Notes as stored in localStorage: a JSON list; anything else reads as no notes.
  function parseNotes(raw) {
    try {
      const value = JSON.parse(raw || "[]");
      return Array.isArray(value) ? value.filter((n) => n && typeof n.text === "string") : [];
    } catch {
      return [];
    }
  }

  // Where notes are kept: localStorage on the phone, or memory where a page may not store anything (the
  // store's sandboxed preview, private browsing), so the app still works for the visit.
  function openStore(getStorage) {
    let storage = null;
    try {
      storage = getStorage();
      storage.getItem("field-notes");
    } catch {
      storage = null;
    }
    const memory = new Map();
    return {
      persistent: storage !== null,
      get: (key) => (storage ? storage.getItem(key) : (memory.get(key) ?? null)),
      set: (key, value) => (storage ? storage.setItem(key, value) : memory.set(key, value)),
    };
  }

  function countLabel(count) {
    return count === 1 ? "1 note" : `${count} notes`;
  }

  return {
    MAX_TEXT,
    makeNote,
    newestFirst,
    parseNotes,
    openStore,
    countLabel,
  };
});
