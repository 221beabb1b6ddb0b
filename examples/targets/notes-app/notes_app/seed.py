"""Demo data: one account with a few notes, so a fresh instance has something to show."""

from notes_app.database import Invalid

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-notes"

DEMO_NOTES = [
    ("Welcome! Sign up for your own account, or keep using this demo one.", "2026-01-05T09:00:00Z"),
    ("Groceries: oat milk, lemons, coffee beans, basil.", "2026-01-04T18:30:00Z"),
    (
        "Ideas for the team offsite: a walk by the river, the board game café.",
        "2026-01-03T12:15:00Z",
    ),
    ("Call the dentist on Monday before 10.", "2026-01-02T08:45:00Z"),
]


def fill(database):
    """Adds the demo account and its notes. Running it again changes nothing."""
    try:
        user = database.create_user(DEMO_USERNAME, DEMO_PASSWORD)
    except Invalid:
        return False  # already seeded
    for text, created in DEMO_NOTES:
        database.add_note(user["id"], text, created=created)
    return True
