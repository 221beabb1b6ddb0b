"""Shows and episodes, kept in an in-memory SQLite database."""

import sqlite3
import threading

from podcast_api import seed

SCHEMA = """
CREATE TABLE shows (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    host TEXT NOT NULL,
    description TEXT NOT NULL,
    language TEXT NOT NULL
);
CREATE TABLE episodes (
    id INTEGER PRIMARY KEY,
    show_id TEXT NOT NULL REFERENCES shows (id),
    title TEXT NOT NULL,
    summary TEXT NOT NULL,
    published TEXT NOT NULL,
    duration_seconds INTEGER NOT NULL
);
CREATE INDEX episodes_by_show ON episodes (show_id, published);
"""

SHOW_COLUMNS = "shows.id, shows.title, shows.host, shows.description, shows.language"
EPISODE_COLUMNS = (
    "episodes.id, episodes.show_id, episodes.title, episodes.summary, "
    "episodes.published, episodes.duration_seconds"
)


class Catalog:
    """Read access to the shows and episodes.

    One connection is shared by the server's threads, so every query holds a lock.
    """

    def __init__(self, connection):
        connection.row_factory = sqlite3.Row
        self._connection = connection
        self._lock = threading.Lock()

    @classmethod
    def from_seed(cls, shows=seed.SHOWS, episodes=seed.EPISODES):
        connection = sqlite3.connect(":memory:", check_same_thread=False)
        connection.executescript(SCHEMA)
        connection.executemany(
            "INSERT INTO shows VALUES (:id, :title, :host, :description, :language)", shows
        )
        connection.executemany(
            "INSERT INTO episodes VALUES "
            "(:id, :show_id, :title, :summary, :published, :duration_seconds)",
            episodes,
        )
        connection.commit()
        return cls(connection)

    def _query(self, sql, params=()):
        with self._lock:
            return [dict(row) for row in self._connection.execute(sql, params)]

    def shows(self):
        return self._query(f"SELECT {SHOW_COLUMNS} FROM shows ORDER BY shows.title")

    def show(self, show_id):
        """Returns the show, or None when there is no show with that id."""
        rows = self._query(f"SELECT {SHOW_COLUMNS} FROM shows WHERE shows.id = ?", (show_id,))
        return rows[0] if rows else None

    def episodes(self, show_id=None):
        """Returns episodes newest first, optionally only those of one show."""
        sql = f"SELECT {EPISODE_COLUMNS} FROM episodes"
        params = []
        if show_id is not None:
            sql += " WHERE episodes.show_id = ?"
            params.append(show_id)
        sql += " ORDER BY episodes.published DESC, episodes.id DESC"
        return self._query(sql, params)

    def episode(self, episode_id):
        """Returns the episode, or None when there is no episode with that id."""
        rows = self._query(
            f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE episodes.id = ?", (episode_id,)
        )
        return rows[0] if rows else None
