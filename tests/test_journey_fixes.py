"""Issue 17, the places people stumbled: copying a share link and no developer banner for its visitors,
people's words that wrap on a phone, @mentions as links, the current version's summary, the gallery
still being made, one reason box per moderation item, and budgets that say "No limit" in words."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings as conf
from django.utils import timezone

from prototypes.models import Build, Prototype, Revision, Target
from store.markdown import render_markdown
from store.models import Budget, Comment, Flag
from store.sharing import create_link
from tests.test_pages import succeed

pytestmark = pytest.mark.django_db


@pytest.fixture
def target():
    return Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")


def built(owner, target, *, slug="sleep-timer", summary="", **fields):
    """A company prototype whose version 1 was built, with the agent's summary of it."""
    fields = {"visibility": "company", "listing": "listed", **fields}
    prototype = Prototype.objects.create(slug=slug, title="Sleep timer", owner=owner, target=target,
                                         summary=summary, **fields)  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add a sleep timer", author=owner,
                                       summary=summary)  # fmt: skip
    build = Build.objects.create(revision=revision, summary=summary)
    succeed(build, {"index.html": b"<h1>Sleep timer</h1>"})
    Revision.objects.filter(pk=revision.pk).update(kept_build=build)
    prototype.refresh_from_db()
    return prototype, revision, build


# --- 3. sharing --------------------------------------------------------------------------------------------


def test_the_share_link_page_offers_a_copy_button_for_the_link(client, alice, target):
    prototype, _revision, _build = built(alice, target)
    client.force_login(alice)
    page = client.post(f"/p/{prototype.slug}/share/", {"expires": "7"}).content.decode()
    url = re.search(r'id="share-url" class="share-url" value="([^"]+)"', page).group(1)
    assert "/s/" in url
    button = re.search(r"<button[^>]*data-copy=\"share-url\"[^>]*>([^<]*)</button>", page)
    assert button and button.group(1) == "Copy link" and 'type="button"' in button.group(0)
    assert 'id="copy-status" role="status"' in page  # where "Copied" is said, read out by screen readers


def test_a_share_link_visitor_without_an_account_sees_no_developer_banner(client, alice, target, settings):
    settings.AGENT_PROVIDER = "replay"
    prototype, _revision, _build = built(alice, target)
    _link, token = create_link(prototype, by=alice, days=7)
    page = client.get(f"/s/{token}/").content.decode()
    assert "Sleep timer" in page
    assert "ANTHROPIC_API_KEY" not in page and "Offline demo" not in page
    client.force_login(alice)  # a maker, who builds, still learns why only the sample ideas build
    assert "ANTHROPIC_API_KEY" in client.get("/").content.decode()


# --- 4. phones ---------------------------------------------------------------------------------------------


def test_a_long_unbroken_comment_is_marked_to_wrap_anywhere(client, alice, bob, target):
    prototype, revision, _build = built(alice, target)
    Comment.objects.create(prototype=prototype, revision=revision, author=bob, body="a" * 5000)
    client.force_login(bob)
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert re.search(r'<div class="comment-body user-text"><p>a{5000}</p></div>', page)
    css = (conf.BASE_DIR / "static" / "store.css").read_text()
    rule = next(line for line in css.splitlines() if line.startswith(".user-text"))
    assert "overflow-wrap: anywhere" in rule


# --- 5. feedback -------------------------------------------------------------------------------------------


def test_mentions_of_real_people_are_links_and_unknown_names_stay_text(bob, carol):
    html = render_markdown("Nice, @carol look. And @nobody_here, `@carol` in code, mail me at x@carol.")
    assert '<a class="mention" href="/?owner=carol" title="Prototypes by carol">@carol</a> look.' in html
    assert "@nobody_here" in html and "owner=nobody_here" not in html
    assert "<code>@carol</code>" in html  # code is shown as written
    assert html.count('class="mention"') == 1  # not the e-mail address either


def test_a_mention_is_shown_as_a_link_on_the_prototype_page(client, alice, bob, carol, target):
    prototype, revision, _build = built(alice, target)
    Comment.objects.create(prototype=prototype, revision=revision, author=bob, body="@carol <b>see</b> this")
    client.force_login(bob)
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert '<a class="mention" href="/?owner=carol" title="Prototypes by carol">@carol</a>' in page
    assert "<b>see</b>" not in page


def test_the_summary_at_the_top_describes_the_current_version(client, alice, bob, target):
    prototype, first, _build = built(alice, target, summary="Adds a sleep timer.")
    second = Revision.objects.create(prototype=prototype, number=2, parent=first, prompt="Make it 90 minutes",
                                     author=alice, summary="Lets the timer run up to 90 minutes.")  # fmt: skip
    build = Build.objects.create(revision=second)
    succeed(build, {"index.html": b"<h1>90</h1>"})
    client.force_login(bob)
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    lead = re.search(r'<p class="lead user-text" id="summary">([^<]*)</p>', page).group(1)
    assert lead == "Lets the timer run up to 90 minutes."


def test_the_page_says_a_new_versions_pictures_are_being_taken(client, alice, bob, target):
    prototype, _revision, build = built(alice, target)
    client.force_login(bob)
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert 'id="pictures-pending"' in page and "reload the page in a minute" in page
    Build.objects.filter(pk=build.pk).update(finished_at=timezone.now() - timedelta(hours=1))
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert 'id="pictures-pending"' not in page  # long after the build, none are coming: nothing is promised


# --- 6. moderation and editing -----------------------------------------------------------------------------


def test_each_queue_item_has_one_reason_box_shared_by_its_actions(client, alice, bob, mo, target):
    pending, _revision, _build = built(alice, target, slug="waiting", listing="pending")
    listed, _revision, _build = built(bob, target, slug="flagged")
    flag = Flag.objects.create(prototype=listed, reporter=alice, reason="Spam")
    client.force_login(mo)
    page = client.get("/moderation/").content.decode()
    for item in (f'id="pending-{pending.pk}"', f'id="flag-{flag.pk}"'):
        block = page[page.index(item) : page.index("</li>", page.index(item))]
        assert block.count('name="reason"') == 1 and block.count("<form") == 1
        assert block.count("formaction=") >= 2  # Hide, Remove (and more) post the same box
    block = page[page.index(f'id="pending-{pending.pk}"') :]
    assert 'placeholder="A few words on why"' in block
    assert "One reason for whichever" not in page  # the template's note stays out of the page
    # The shared box works for the action a button names.
    response = client.post(f"/moderation/p/{pending.slug}/hide/", {"reason": "Not ready", "from": "queue"})
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.listing == "hidden"


def test_the_prototype_pages_moderation_panel_has_one_reason_box_too(client, alice, mo, target):
    prototype, _revision, _build = built(alice, target, listing="pending")
    client.force_login(mo)
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    panel = page[page.index('id="moderate"') : page.index("</details>", page.index('id="moderate"'))]
    assert panel.count('name="reason"') == 1 and panel.count("<form") == 1
    for action in ("approve", "hide", "remove", "lock-comments"):
        assert f'formaction="/moderation/p/{prototype.slug}/{action}/"' in panel


def test_the_edit_pages_save_button_sits_apart_from_the_select(client, alice, target):
    prototype, _revision, _build = built(alice, target)
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/edit/").content.decode()
    assert '<p class="form-actions"><button class="button primary" type="submit">Save</button></p>' in page


# --- 7. budgets --------------------------------------------------------------------------------------------


def test_budgets_say_no_limit_in_words(client, ada, alice, target, settings):
    settings.BUDGET_DAILY_DOLLARS = 0
    Budget.objects.create(target=target, daily_builds=0, monthly_dollars=Decimal("50"))
    Budget.objects.create(user=alice, daily_builds=None, monthly_builds=3)
    client.force_login(ada)
    page = client.get("/costs/").content.decode()
    rows = page[page.index('id="budget-rows"') : page.index('id="budget-form"')]
    assert "<td>No limit <span" in rows  # the app's 0, still accepted, in words
    assert "0 means no limit" not in page and "<td>0</td>" not in rows
    assert "spend any amount a day" in page  # the settings' 0, in the sentence
    assert "Leave a limit empty for no limit" in page
