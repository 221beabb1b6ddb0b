"""Accounts, sessions and notes in one SQLite file under the data folder. Every SQL query lives here."""

import hashlib
import re
import secrets
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from notes_app.passwords import DUMMY_HASH, check_password, hash_password

FILENAME = "notes.sqlite3"
USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{2,29}")
MIN_PASSWORD = 8
MAX_PASSWORD = 200
MAX_NOTE = 2000

# The schema, one step per entry. A database remembers how many steps it has run (PRAGMA
# user_version), so an existing data folder is brought up to date on start. Add a step at the end;
# never edit one that has shipped.
MIGRATIONS = [
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created TEXT NOT NULL
    );
    CREATE TABLE notes (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        text TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX notes_by_user ON notes (user_id, created);
    """,
]

NOTE_COLUMNS = "notes.id, notes.text, notes.created"


class Invalid(ValueError):
    """Input a person can fix; the message says how."""


def now():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token_hash(token):
    # Sessions are stored hashed: someone who reads the database file cannot sign in as anyone.
    return hashlib.sha256(token.encode()).hexdigest()


class Database:
    """The app's data. One connection is shared by the server's threads, so every query holds a lock."""

    def __init__(self, connection):
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys = ON")
        self._connection = connection
        self._lock = threading.Lock()
        self.migrate()

    @classmethod
    def open(cls, data_dir):
        """The database in `data_dir` (created with the folder when missing)."""
        folder = Path(data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(sqlite3.connect(folder / FILENAME, check_same_thread=False))

    @classmethod
    def in_memory(cls):
        return cls(sqlite3.connect(":memory:", check_same_thread=False))

    def migrate(self):
        with self._lock:
            done = self._connection.execute("PRAGMA user_version").fetchone()[0]
            for number, step in enumerate(MIGRATIONS[done:], done + 1):
                self._connection.executescript(
                    f"BEGIN; {step}; PRAGMA user_version = {number}; COMMIT;"
                )

    def close(self):
        self._connection.close()

    def _query(self, sql, params=()):
        with self._lock:
            return [dict(row) for row in self._connection.execute(sql, params)]

    def _change(self, sql, params=()):
        """Runs one statement in its own transaction; returns the cursor (rowcount, lastrowid)."""
        with self._lock, self._connection:
            return self._connection.execute(sql, params)

    # --- accounts ---------------------------------------------------------------------------------
    def create_user(self, username, password):
        """Returns the new user as {"id", "username"}. Raises Invalid with a message for people."""
        username = username.strip().lower()
        if not USERNAME.fullmatch(username):
            raise Invalid(
                "Pick a username of 3 to 30 letters, digits, dots, dashes or underscores."
            )
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise Invalid(f"Pick a password of at least {MIN_PASSWORD} characters.")
        try:
            cursor = self._change(
                "INSERT INTO users (username, password_hash, created) VALUES (?, ?, ?)",
                (username, hash_password(password), now()),
            )
        except sqlite3.IntegrityError:
            raise Invalid(f"The username {username!r} is taken.") from None
        return {"id": cursor.lastrowid, "username": username}

    def has_user(self, username):
        return bool(self._query("SELECT 1 FROM users WHERE username = ?", (username,)))

    def user(self, user_id):
        rows = self._query("SELECT id, username FROM users WHERE id = ?", (user_id,))
        return rows[0] if rows else None

    def authenticate(self, username, password):
        """The user with this username and password, or None."""
        rows = self._query(
            "SELECT id, username, password_hash FROM users WHERE username = ?",
            (username.strip().lower(),),
        )
        if not rows:
            check_password(password, DUMMY_HASH)  # as slow as a real check
            return None
        row = rows[0]
        if not check_password(password, row.pop("password_hash")):
            return None
        return row

    # --- sessions ---------------------------------------------------------------------------------
    def start_session(self, user_id):
        """Returns a new random session token for the user's cookie."""
        token = secrets.token_urlsafe(32)
        self._change(
            "INSERT INTO sessions (token_hash, user_id, created) VALUES (?, ?, ?)",
            (_token_hash(token), user_id, now()),
        )
        return token

    def session_user(self, token):
        """The signed-in user for a session token, or None."""
        if not token:
            return None
        rows = self._query(
            "SELECT users.id, users.username FROM sessions JOIN users ON users.id = sessions.user_id "
            "WHERE sessions.token_hash = ?",
            (_token_hash(token),),
        )
        return rows[0] if rows else None

    def end_session(self, token):
        self._change("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token or ""),))

    # --- notes: every query is scoped to its owner, so nobody reaches another person's notes ------
    def notes(self, user_id):
        """The user's notes, newest first."""
        return self._query(
            f"SELECT {NOTE_COLUMNS} FROM notes WHERE user_id = ? ORDER BY created DESC, id DESC",
            (user_id,),
        )

    def note(self, user_id, note_id):
        rows = self._query(
            f"SELECT {NOTE_COLUMNS} FROM notes WHERE user_id = ? AND id = ?", (user_id, note_id)
        )
        return rows[0] if rows else None

    def add_note(self, user_id, text, created=None):
        """Returns the new note. Raises Invalid when the text is empty or too long."""
        text = text.strip()
        if not text:
            raise Invalid("Write something first.")
        if len(text) > MAX_NOTE:
            raise Invalid(f"A note holds at most {MAX_NOTE} characters.")
        cursor = self._change(
            "INSERT INTO notes (user_id, text, created) VALUES (?, ?, ?)",
            (user_id, text, created or now()),
        )
        return self.note(user_id, cursor.lastrowid)

    def delete_note(self, user_id, note_id):
        """True when the user had that note and it is gone."""
        cursor = self._change("DELETE FROM notes WHERE user_id = ? AND id = ?", (user_id, note_id))
        return cursor.rowcount == 1
