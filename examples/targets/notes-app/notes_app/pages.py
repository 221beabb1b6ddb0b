"""The HTML pages. Every value from a person or the database goes through `escape`.

Links and form actions are relative ("sign-in", "notes"), never "/sign-in": the app then works
wherever it is mounted, at the root of a host or under a path behind a proxy.
"""

from html import escape

from notes_app import __version__, seed


def layout(title, body, user=None):
    account = (
        f'<form method="post" action="sign-out" class="account">'
        f"<span>Signed in as <strong>{escape(user['username'])}</strong></span> "
        f'<button type="submit">Sign out</button></form>'
        if user
        else ""
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · Notes</title>
<link rel="stylesheet" href="static/style.css">
<link rel="icon" href="data:,">
</head>
<body>
<header><a href="./" class="brand">Notes</a>{account}</header>
<main>
{body}
</main>
<footer>Notes {__version__}</footer>
<script src="static/app.js"></script>
</body>
</html>
"""


def error_box(error):
    return f'<p class="error" role="alert">{escape(error)}</p>' if error else ""


def account_form(action, title, button, error="", username="", other=""):
    return layout(
        title,
        f"""<h1>{escape(title)}</h1>
{error_box(error)}
<form method="post" action="{action}" class="card">
<label>Username <input name="username" value="{escape(username)}" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="{"new-password" if action == "sign-up" else "current-password"}" required></label>
<button type="submit">{escape(button)}</button>
</form>
<p>{other}</p>""",
    )


def sign_in_page(error="", username="", demo=False):
    other = 'New here? <a href="sign-up">Create an account</a>.'
    if demo:
        other += (
            f" Just looking? Sign in as <code>{seed.DEMO_USERNAME}</code> with the password"
            f" <code>{seed.DEMO_PASSWORD}</code>."
        )
    return account_form("sign-in", "Sign in", "Sign in", error, username, other)


def sign_up_page(error="", username=""):
    return account_form(
        "sign-up",
        "Create an account",
        "Sign up",
        error,
        username,
        'Have an account? <a href="sign-in">Sign in</a>.',
    )


def note_item(note):
    return f"""<li class="note" id="note-{note["id"]}">
<p>{escape(note["text"])}</p>
<div class="meta"><time datetime="{escape(note["created"])}">{escape(note["created"][:10])}</time>
<form method="post" action="notes/{note["id"]}/delete" data-confirm="Delete this note?">
<button type="submit" class="link">Delete</button></form></div>
</li>"""


def notes_page(user, notes, error="", text=""):
    items = "\n".join(note_item(note) for note in notes) or '<li class="empty">No notes yet.</li>'
    return layout(
        "Your notes",
        f"""<h1>Your notes</h1>
{error_box(error)}
<form method="post" action="notes" class="card new-note">
<label for="text">New note</label>
<textarea id="text" name="text" rows="3" maxlength="2000" required>{escape(text)}</textarea>
<div class="row"><span class="counter" aria-live="polite"></span><button type="submit">Add note</button></div>
</form>
<ul class="notes">
{items}
</ul>""",
        user,
    )


def not_found_page(user=None):
    return layout("Not found", '<h1>Not found</h1><p><a href="./">Back to your notes</a></p>', user)
