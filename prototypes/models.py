"""Making prototypes: targets, prototypes, revisions, builds, their events, model calls and artifacts."""

from __future__ import annotations

import base64
import secrets
from dataclasses import asdict
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, models, transaction
from django.db.models import Max, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from prototypes import access
from prototypes.live import broadcast


def not_a_git_option(value: str) -> None:
    """A target's git URL and branch reach git's command line on the workers and the web host (fetching,
    `ls-remote`): one starting with "-" would be read as an option — `--upload-pack=<program>` runs that
    program — and control characters have no place in either. Whoever registers targets may only name
    a repository, never make git run something."""
    if value.startswith("-"):
        raise ValidationError("This cannot start with “-” (git would read it as an option).")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValidationError("This cannot hold line breaks or other control characters.")


class TargetQuerySet(models.QuerySet):
    def offered(self):
        """The one rule for which targets makers are offered — the new-prototype page and its API, remixes,
        the catalog's filter, the API's target list for everyone but admins: switched on by an admin, and
        its recipe check has run and passed. A target whose check failed, or never ran, is nowhere offered.
        `Target.state` and `Target.refusal` say the same of one target."""
        return self.filter(enabled=True, recipe_checked_at__isnull=False, recipe_error="")


class Target(models.Model):
    """A real app or backend that prototypes are built against.

    Two things keep a target from makers, and they stay apart: `enabled`, the admin's switch (only an
    admin turns it back on), and the recipe check's result (`recipe_error`, `recipe_checked_at`): a check
    that passes again makes the target offered again by itself, unless an admin switched it off."""

    class Kind(models.TextChoices):
        WEB = "web", "Web app"
        BACKEND = "backend", "Backend"
        ANDROID = "android", "Android app"
        IOS = "ios", "iOS app"

    class State(models.TextChoices):
        READY = "ready", "Ready: makers can build on it"
        DISABLED = "disabled", "Switched off by an admin"
        CHECK_FAILED = "check_failed", "Its check failed"
        NOT_CHECKED = "not_checked", "Not checked yet"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.WEB)
    description = models.TextField(blank=True)
    git_url = models.CharField(
        "git URL",
        max_length=500,
        validators=[not_a_git_option],
        help_text="A URL git can fetch, or a path on the workers.",
    )
    default_branch = models.CharField(max_length=200, default="main", validators=[not_a_git_option])
    enabled = models.BooleanField(default=True)
    concurrency_limit = models.PositiveIntegerField(default=2, help_text="Builds of this target at the same time.")
    egress_hosts = models.JSONField(default=list, blank=True, help_text="Hosts setup commands may reach.")
    model = models.CharField(max_length=100, blank=True, help_text="Model for this target; blank for the default.")
    recipe = models.TextField(blank=True, help_text="prototype.toml as last read from the repository (display only).")
    recipe_error = models.TextField(blank=True, help_text="What was wrong with the recipe when it was last read.")
    recipe_checked_at = models.DateTimeField(null=True, blank=True)
    recipe_override = models.TextField(blank=True, help_text="A recipe used when the repository has no prototype.toml.")
    github_repo = models.CharField(
        "GitHub repository", max_length=200, blank=True, help_text="owner/name, to open pull requests."
    )
    github_api_url = models.URLField("GitHub API URL", default="https://api.github.com")
    default_attempts = models.PositiveSmallIntegerField(
        default=1, help_text="How many attempts of each idea run side by side unless the maker asks otherwise."
    )
    github_token_env = models.CharField(
        "GitHub token variable",
        max_length=100,
        blank=True,
        help_text="The environment variable (or NAME_FILE) on the workers holding this target's GitHub token.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = TargetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("target", args=[self.slug])  # the admins' page of the target (store/targets_views.py)

    @property
    def state(self) -> str:
        """Where the target stands, as `TargetQuerySet.offered` decides (READY exactly when it is offered).
        The admin's switch comes first: a switched-off target says so whatever its check found."""
        if not self.enabled:
            return self.State.DISABLED
        if self.recipe_error:
            return self.State.CHECK_FAILED
        if self.recipe_checked_at is None:
            return self.State.NOT_CHECKED
        return self.State.READY

    def get_state_display(self) -> str:
        return self.State(self.state).label

    def refusal(self) -> str:
        """Why a maker may not start a prototype on it, in plain words; "" when it is offered."""
        if self.state == self.State.DISABLED:
            return f"{self.name} is not taking new prototypes right now."
        if self.state == self.State.NOT_CHECKED:
            return f"{self.name} cannot be built yet: an admin has not checked its setup."
        return self.build_refusal()

    def build_refusal(self) -> str:
        """Why no build of it may run at all (new, a change, a retry, or one already queued): its last
        check failed, so its recipe or repository cannot be read. "" otherwise. Switching a target off
        only stops new prototypes (`refusal`): existing ones may still ask for changes."""
        if self.recipe_error:
            return f"{self.name} cannot be built right now: its setup has a problem an admin needs to fix."
        return ""


class Tag(models.Model):
    name = models.SlugField(unique=True, max_length=40)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class PrototypeQuerySet(models.QuerySet):
    def visible_to(self, user, *, by_link: bool = False):
        """The one place that decides which prototypes a person may see.

        - the owner and invited collaborators always see it;
        - `company` prototypes are seen by everyone signed in once listed;
        - `link` prototypes too, but only when opened by their address (`by_link`), never in lists;
        - `private` ones by nobody else, moderators included;
        - moderators see every prototype that is not private, whatever its listing state (pending,
          hidden, removed), so they can work the queue; admins see everything.
        Everything else in the store (builds, artifacts, previews, comments, share links) follows it,
        through `reachable_by` when it is addressed by an id.
        """
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        mine = Q(owner=user) | Q(pk__in=Prototype.collaborators.through.objects.filter(user=user).values("prototype"))
        if user.has_perm("prototypes.moderate_prototype"):
            return self.filter(mine | ~Q(visibility=Prototype.Visibility.PRIVATE))
        shown = [Prototype.Visibility.COMPANY, Prototype.Visibility.LINK] if by_link else [Prototype.Visibility.COMPANY]
        return self.filter(mine | Q(listing=Prototype.Listing.LISTED, visibility__in=shown))

    def reachable_by(self, user, *, slug: str = ""):
        """The prototypes whose builds, versions, files, pictures and comments a person may reach by id.

        Ids are sequential, so knowing one is never having the link: without a slug only what
        `visible_to(user)` shows counts (owner, collaborators, moderators, admins, and company work).
        The link of a link-only prototype is its slug, so an address that also names the slug
        (/p/<slug>/builds/<id>/, ?prototype=<slug> in the API, a preview URL issued from that page)
        reaches that one prototype as its page does, and no other."""
        if slug:
            return self.visible_to(user, by_link=True).filter(slug=slug)
        return self.visible_to(user)


class InPrototypeQuerySet(models.QuerySet):
    """Things inside a prototype (revisions, builds, artifacts, pictures), reached by their ids."""

    prototype_lookup = "prototype"  # the path from the model to its prototype

    def visible_to(self, user, *, slug: str = ""):
        """Those the person may reach: see `PrototypeQuerySet.reachable_by` (an id alone never
        reveals a link-only prototype; `slug` is the link the address carries, if any)."""
        prototypes = Prototype.objects.reachable_by(user, slug=slug)
        return self.filter(**{f"{self.prototype_lookup}__in": prototypes})


class Prototype(models.Model):
    class Visibility(models.TextChoices):
        PRIVATE = "private", "Only me"
        LINK = "link", "Anyone with the link"
        COMPANY = "company", "Everyone in the company"

    class Listing(models.TextChoices):
        DRAFT = "draft", "Draft"
        PENDING = "pending", "Waiting for review"
        LISTED = "listed", "Listed"
        HIDDEN = "hidden", "Hidden"
        REMOVED = "removed", "Removed"

    slug = models.SlugField(unique=True, max_length=80)
    title = models.CharField(max_length=120)
    summary = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="prototypes")
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="prototypes")
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.COMPANY)
    listing = models.CharField(max_length=16, choices=Listing.choices, default=Listing.DRAFT)
    forked_from = models.ForeignKey(
        "Revision", null=True, blank=True, on_delete=models.SET_NULL, related_name="remixes"
    )
    current_revision = models.ForeignKey("Revision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    description = models.TextField(blank=True, help_text="Markdown, written by the owner.")
    tags = models.ManyToManyField(Tag, blank=True, related_name="prototypes")
    collaborators = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="shared_prototypes",
        help_text="People invited to see a private prototype.",
    )  # fmt: skip
    comments_locked = models.BooleanField(default=False, help_text="Locked by a moderator: no new comments.")
    pairings = models.JSONField(
        default=dict, blank=True,
        help_text="The backend versions its live previews talk to, chosen by the owner: {ENV: artifact id}. "
        "A backend not named here gets its target's default branch (prototypes/pairing.py).",
    )  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    # What the catalog sorts and shows, kept here so a page never counts rows per prototype. The store
    # keeps them in step with comments, reactions and visits (store/counts.py says how and when).
    reaction_count = models.PositiveIntegerField(default=0, editable=False)
    comment_count = models.PositiveIntegerField(default=0, editable=False, help_text="Not hidden by a moderator.")
    view_count = models.PositiveIntegerField(default=0, editable=False)
    trending_score = models.PositiveIntegerField(default=0, editable=False, help_text="Recent activity.")

    objects = PrototypeQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        permissions = access.MODEL_PERMISSIONS  # the role table's actions (prototypes/access.py)
        # One index per catalog sort, led by what every catalog page filters on (listed, company-wide), so
        # a page reads its 24 rows in index order and stops: the same work with 1,000 or 100,000 rows.
        # The pk ends each one because it breaks ties in the catalog's order. Full-text search on
        # PostgreSQL has its own index (migration 0016).
        indexes = [
            models.Index(fields=["listing", "visibility", "-created_at", "-id"], name="catalog_newest"),
            models.Index(fields=["listing", "visibility", "-trending_score", "-created_at", "-id"],
                         name="catalog_trending"),
            models.Index(fields=["listing", "visibility", "-reaction_count", "-created_at", "-id"],
                         name="catalog_liked"),
            models.Index(fields=["listing", "visibility", "-comment_count", "-created_at", "-id"],
                         name="catalog_discussed"),
            models.Index(fields=["owner", "-created_at", "-id"], name="catalog_mine"),
        ]  # fmt: skip

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("prototype", args=[self.slug])

    def set_visibility(self, visibility: str) -> None:
        """Change who may see it; the caller saves `visibility` and `slug`. Becoming link-only gives
        the prototype a new unguessable slug, and the old address stops working: the slug is the link,
        and the old one may have been read in the catalog or guessed from the title. Share links
        (their own tokens) keep working; everyone else needs the new address from the owner."""
        if visibility == self.Visibility.LINK and self.visibility != self.Visibility.LINK:
            self.slug = unique_slug(self.title, unguessable=True)
        self.visibility = visibility


def unique_slug(title: str, *, unguessable: bool = False) -> str:
    """A slug no prototype has yet, made from the title. An unguessable one (for link-only prototypes,
    whose slug is their link) ends in 16 random letters and digits, 80 bits that no title predicts."""
    base = slugify(title)[:60].strip("-") or "prototype"
    if unguessable:
        while True:
            secret = base64.b32encode(secrets.token_bytes(10)).decode().lower()
            slug = f"{base[:50].strip('-')}-{secret}"
            if not Prototype.objects.filter(slug=slug).exists():
                return slug
    slug, n = base, 1
    while Prototype.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


class Revision(models.Model):
    """One step of a prototype: the words asked and, once built, what changed."""

    prototype = models.ForeignKey(Prototype, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    prompt = models.TextField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="revisions")
    base_commit = models.CharField(max_length=64, blank=True)
    result_commit = models.CharField(max_length=64, blank=True)
    diffstat = models.JSONField(default=dict, blank=True)
    summary = models.TextField(blank=True)
    branch = models.CharField(max_length=200, blank=True, help_text="The branch pushed to the target's remote.")
    pull_request_url = models.URLField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=1, help_text="Attempts of this idea built side by side.")
    kept_build = models.ForeignKey(
        "Build", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The attempt whose result is this version (several attempts: the one the judge or the maker chose).",
    )  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now)

    objects = InPrototypeQuerySet.as_manager()

    class Meta:
        ordering = ["prototype", "number"]
        constraints = [models.UniqueConstraint(fields=["prototype", "number"], name="unique_revision_number")]

    def __str__(self):
        return f"{self.prototype} #{self.number}"

    @property
    def result_ref(self) -> str:
        return f"refs/prototypes/{self.prototype.slug}/{self.number}"

    def latest_build(self):
        return self.builds.order_by("-attempt").first()


class InRevisionQuerySet(InPrototypeQuerySet):
    prototype_lookup = "revision__prototype"


def attachment_path(instance: Attachment, filename: str) -> str:
    return f"attachments/{instance.revision.prototype_id}/{instance.revision_id}/{filename}"


class Attachment(models.Model):
    """An image attached to the words asked (a mockup, a screenshot), passed to the agent."""

    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="attachments")
    image = models.ImageField(upload_to=attachment_path, width_field="width", height_field="height", max_length=300)
    media_type = models.CharField(max_length=40)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    size = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    objects = InRevisionQuerySet.as_manager()

    class Meta:
        ordering = ["revision", "pk"]

    def __str__(self):
        return f"Image {self.pk} of {self.revision}"


def screenshot_path(instance: Screenshot, filename: str) -> str:
    return f"screenshots/{instance.revision.prototype_id}/{instance.revision_id}/{filename}"


class ScreenshotQuerySet(InRevisionQuerySet):
    def gallery(self):
        """The pictures that show a version in the store (its page, cards, share page), not the evidence
        of a build's browser check (the version page shows those, before and after)."""
        return self.filter(build__isnull=True)


class Screenshot(models.Model):
    """A picture of a web prototype, taken by headless Chromium. Without a build: the store's gallery of the
    version. With one: evidence from that build's browser check, before or after the change, of one page."""

    class Size(models.TextChoices):
        DESKTOP = "desktop", "Desktop"
        PHONE = "phone", "Phone"

    class Moment(models.TextChoices):
        GALLERY = "", "Gallery"
        BEFORE = "before", "Before the change"
        AFTER = "after", "After the change"

    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="screenshots")
    build = models.ForeignKey("Build", null=True, blank=True, on_delete=models.CASCADE, related_name="evidence")
    moment = models.CharField(max_length=8, choices=Moment.choices, default=Moment.GALLERY, blank=True)
    page = models.CharField(max_length=300, blank=True, help_text="The page's path, for evidence.")
    size = models.CharField(max_length=16, choices=Size.choices)
    image = models.ImageField(upload_to=screenshot_path, width_field="width", height_field="height", max_length=300)
    thumbnail = models.ImageField(upload_to=screenshot_path, max_length=300)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ScreenshotQuerySet.as_manager()

    class Meta:
        ordering = ["revision", "build", "moment", "page", "size"]
        constraints = [
            models.UniqueConstraint(
                fields=["revision", "size"], condition=models.Q(build__isnull=True), name="unique_screenshot_size"
            ),
            models.UniqueConstraint(
                fields=["build", "moment", "page", "size"], condition=models.Q(build__isnull=False),
                name="unique_evidence_shot",
            ),
        ]  # fmt: skip

    def __str__(self):
        return f"{self.get_size_display()} screenshot of {self.revision}"


class BuildQuerySet(InPrototypeQuerySet):
    prototype_lookup = "revision__prototype"

    def spent(self):
        """The builds that spent money on the model: all but those that replayed a sample conversation
        (its token counts were written by hand and nothing was called). The one rule for what counts as
        spent: budgets, the cost page and its chart all ask it (with ModelCallQuerySet.spent)."""
        return self.filter(replayed=False)


class Build(models.Model):
    """One attempt at building a revision. Its state changes only through `move`."""

    class State(models.TextChoices):
        QUEUED = "queued", "Waiting to start"
        PREPARING = "preparing", "Preparing"
        RUNNING = "running", "Claude is working"
        VERIFYING = "verifying", "Checking"
        PACKAGING = "packaging", "Packaging"
        SUCCEEDED = "succeeded", "Ready"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINAL_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)
    # The happy path in order; any non-final state may also go to failed or cancelled.
    FORWARD = {
        State.QUEUED: State.PREPARING,
        State.PREPARING: State.RUNNING,
        State.RUNNING: State.VERIFYING,
        State.VERIFYING: State.PACKAGING,
        State.PACKAGING: State.SUCCEEDED,
    }

    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="builds")
    attempt = models.PositiveIntegerField(default=1)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    error_detail = models.TextField(blank=True)
    charged = models.BooleanField(default=True, help_text="False when the build failed through no fault of the user.")
    replayed = models.BooleanField(
        default=False,
        help_text="Built by replaying a sample conversation (written by hand, not recorded from Claude): it cost "
        "nothing, and its token counts are the sample's, not measured.",
    )
    task_id = models.CharField(max_length=255, blank=True)
    worker_host = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    turns = models.PositiveIntegerField(default=0)
    verify = models.JSONField(default=dict, blank=True, help_text="The final build-and-test report.")
    smoke = models.JSONField(default=dict, blank=True, help_text="The browser check of the final change.")
    checklist = models.JSONField(default=list, blank=True, help_text="The judge's items: item, passed, note.")
    judge = models.JSONField(default=dict, blank=True, help_text="The judge's verdict: accepted, rounds, score.")
    # What this attempt made; copied to its revision when it is the kept attempt (Revision.kept_build).
    base_commit = models.CharField(max_length=64, blank=True)
    result_commit = models.CharField(max_length=64, blank=True)
    summary = models.TextField(blank=True)
    diffstat = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)

    objects = BuildQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["revision", "attempt"], name="unique_build_attempt")]

    def __str__(self):
        return f"Build {self.pk} ({self.state})"

    def get_absolute_url(self):
        # Inside its prototype's address, so the page opens for whoever may open the prototype's
        # (for a link-only one, that is having its link); /builds/<id>/ alone does not.
        return reverse("build", args=[self.revision.prototype.slug, self.pk])

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens

    @property
    def cache_share(self) -> float:
        total = self.total_input_tokens
        return self.cache_read_tokens / total if total else 0.0

    def can_move(self, new: str) -> bool:
        if self.state in self.FINAL_STATES:
            return False
        return new in (self.State.FAILED, self.State.CANCELLED) or self.FORWARD.get(self.state) == new

    def move(self, new: str, **fields) -> bool:
        """Move the build to `new` and record a status event. Returns False, changing nothing, when the
        move is not allowed from the state this object holds or when another worker (or a cancel) moved
        the build first; the object is then refreshed from the database."""
        old = self.state
        if not self.can_move(new):
            return False
        if new in self.FINAL_STATES:
            fields.setdefault("finished_at", timezone.now())
        with transaction.atomic():
            updated = Build.objects.filter(pk=self.pk, state=old).update(state=new, **fields)
            if updated:
                append_events(self.pk, [("status", {"from": old, "to": new})])
                if new in (self.State.SUCCEEDED, self.State.FAILED):
                    from prototypes import notifications  # imports models: loaded late

                    transaction.on_commit(partial(notifications.build_finished, self.pk))
        if not updated:
            self.refresh_from_db()
            return False
        self.state = new
        for name, value in fields.items():
            setattr(self, name, value)
        return True


class BuildEvent(models.Model):
    """Append-only: the source of truth for a build's log and progress."""

    build = models.ForeignKey(Build, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["build", "seq"]
        constraints = [models.UniqueConstraint(fields=["build", "seq"], name="unique_event_seq")]

    def __str__(self):
        return f"{self.build_id}#{self.seq} {self.kind}"


def append_events(build_id: int, items: list[tuple[str, dict]]) -> list[BuildEvent]:
    """Append events to a build with consecutive sequence numbers. Writers of one build are rare
    (its worker, a cancel, the stale-build check), so a clash on `seq` is simply retried."""
    for _attempt in range(5):
        try:
            with transaction.atomic():
                last = BuildEvent.objects.filter(build_id=build_id).aggregate(m=Max("seq"))["m"] or 0
                now = timezone.now()
                events = [
                    BuildEvent(build_id=build_id, seq=last + i, kind=kind, data=data, created_at=now)
                    for i, (kind, data) in enumerate(items, 1)
                ]
                created = BuildEvent.objects.bulk_create(events)
                transaction.on_commit(partial(broadcast, build_id, created))
                return created
        except IntegrityError:
            continue
    raise RuntimeError(f"could not append events to build {build_id}")


class ModelCallQuerySet(models.QuerySet):
    def spent(self):
        """The calls that cost money: those of builds that did not replay a sample (see BuildQuerySet.spent)."""
        return self.filter(build__replayed=False)


class ModelCall(models.Model):
    """One request to the model, with what it cost. A replayed build's calls carry the sample's token counts,
    cost 0 and price version "sample"."""

    class Purpose(models.TextChoices):
        AGENT = "agent", "Agent"
        JUDGE = "judge", "Reviewer"

    build = models.ForeignKey(Build, on_delete=models.CASCADE, related_name="model_calls")
    turn = models.PositiveIntegerField()
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.AGENT)
    model = models.CharField(max_length=100)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    latency_ms = models.PositiveIntegerField(default=0)
    stop_reason = models.CharField(max_length=40, blank=True)
    price_version = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ModelCallQuerySet.as_manager()

    class Meta:
        ordering = ["build", "turn"]

    def __str__(self):
        return f"{self.build_id} turn {self.turn}"


def artifact_path(instance: Artifact, filename: str) -> str:
    if instance.build_id is None:
        return f"baselines/{instance.baseline_id}/{filename}"
    return f"artifacts/{instance.build_id}/{filename}"


class Baseline(models.Model):
    """A target's default branch at one commit, built by its recipe's [build] alone (no agent, no model) and
    packaged like a prototype's artifact, so it can run live as the backend a frontend preview talks to
    (prototypes/pairing.py). One per (target, commit): built once and reused until the branch moves."""

    class State(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="baselines")
    commit = models.CharField(max_length=40)
    state = models.CharField(max_length=16, choices=State.choices, default=State.BUILDING)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["target", "commit"], name="unique_baseline_commit")]

    def __str__(self):
        return f"{self.target.slug} at {self.commit[:10]} ({self.state})"


class ArtifactQuerySet(InPrototypeQuerySet):
    prototype_lookup = "build__revision__prototype"

    def available(self):
        """Files that can be handed out: their build succeeded and retention has not removed them."""
        return self.filter(build__state=Build.State.SUCCEEDED, expired_at__isnull=True)

    def runnable(self):
        """What a live preview may start: an available prototype version, or a ready baseline (a target's
        default branch, which is never handed out as a file: it belongs to no prototype, so no visibility
        rule above ever lets it through)."""
        baseline = Q(build__isnull=True, baseline__state=Baseline.State.READY)
        return self.filter(Q(build__state=Build.State.SUCCEEDED) | baseline, expired_at__isnull=True)

    def available_to(self, user, *, slug: str = ""):
        """The one rule for every page, preview, install route and API answer that hands out a file
        to a signed-in person: visible (by id, or through the slug the address carries) and available.
        Share links have no person: they use `available()` on their one prototype."""
        return self.visible_to(user, slug=slug).available()


class Artifact(models.Model):
    class Kind(models.TextChoices):
        WEB = "web", "Web preview"
        APK = "apk", "Android app"
        IPA = "ipa", "iOS app"
        PYZ = "pyz", "Runnable Python app"
        WHEEL = "wheel", "Python wheel"
        ARCHIVE = "archive", "Archive"
        PATCH = "patch", "Patch"

    # Exactly one of the two: a prototype version's build, or a target's baseline (its default branch).
    build = models.ForeignKey(Build, null=True, blank=True, on_delete=models.CASCADE, related_name="artifacts")
    baseline = models.ForeignKey(Baseline, null=True, blank=True, on_delete=models.CASCADE, related_name="artifacts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    file = models.FileField(upload_to=artifact_path, max_length=500)
    filename = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=100)
    metadata = models.JSONField(default=dict, blank=True)
    pinned = models.BooleanField(default=False, help_text="Kept whatever the retention rules say.")
    expired_at = models.DateTimeField(null=True, blank=True, help_text="When retention removed the file.")
    created_at = models.DateTimeField(default=timezone.now)

    objects = ArtifactQuerySet.as_manager()

    class Meta:
        ordering = ["build", "kind"]
        constraints = [
            models.CheckConstraint(
                condition=Q(build__isnull=False, baseline__isnull=True) | Q(build__isnull=True, baseline__isnull=False),
                name="artifact_of_build_or_baseline",
            )
        ]

    def __str__(self):
        if self.build_id is None:
            return f"{self.get_kind_display()} of baseline {self.baseline_id}"
        return f"{self.get_kind_display()} of build {self.build_id}"

    @property
    def previewable(self) -> bool:
        return self.kind == self.Kind.WEB

    @classmethod
    def store(cls, item, *, serve=None, services=None, **owner) -> Artifact:
        """Save one of the engine's packaged files (agents.spec artifact) for `owner` (build= or baseline=),
        recording how the version runs live: the recipe's [serve] and [services] it was built with, as
        plain JSON (prototypes.instances.serve_spec and serve_services read them back; a later recipe may
        differ)."""
        metadata = dict(item.metadata)
        if serve is not None:
            metadata["serve"] = asdict(serve)
            if services:
                metadata["services"] = list(services.names)
        artifact = cls(kind=item.kind, filename=item.filename, size=item.size, sha256=item.sha256,
                       content_type=item.content_type, metadata=metadata, **owner)  # fmt: skip
        with open(item.path, "rb") as handle:
            artifact.file.save(item.path.name, File(handle), save=False)
        artifact.save()
        return artifact


class PreviewInstance(models.Model):
    """A live preview of one served version for one viewer key: a registry row telling the web tier whether
    the app runs, where (host, run folder, socket), and when it was last used. Instances are cattle: the
    process may be gone whatever the row says, so readers check (prototypes/instances.py) before trusting
    `running`. The state changes only through conditional updates there."""

    class State(models.TextChoices):
        STOPPED = "stopped", "Stopped"
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        FAILED = "failed", "Could not start"

    # Not final: a stopped or failed instance starts again on a visit (failed ones after a pause).
    RESTARTABLE_STATES = (State.STOPPED, State.FAILED)

    artifact = models.ForeignKey(Artifact, on_delete=models.CASCADE, related_name="instances")
    viewer = models.CharField(max_length=40, help_text='"shared", "u<user id>" or "s<share link id>".')
    label = models.CharField(max_length=20, unique=True, help_text="The host label of the instance's origin.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.STOPPED, db_index=True)
    host = models.CharField(max_length=255, blank=True, help_text="The preview worker that claimed or runs it.")
    run_dir = models.CharField(max_length=500, blank=True)
    socket_path = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    seeded = models.BooleanField(default=False, help_text="Its data folder holds the recipe's seed.")
    paired = models.JSONField(default=dict, blank=True, help_text="Backends: {ENV: artifact id}.")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When its latest start was asked for.")
    last_used_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_used_at"]
        constraints = [models.UniqueConstraint(fields=["artifact", "viewer"], name="unique_instance_viewer")]

    def __str__(self):
        return f"Instance {self.label} of artifact {self.artifact_id} ({self.state})"


class PreviewHost(models.Model):
    """A previews worker that runs live instances (one row per PREVIEW_HOST_NAME): the address of its
    authenticated internal route, and its heartbeat. The web tier cannot see another machine's processes,
    so a host whose heartbeat stopped is taken as lost, with every instance on it (prototypes/preview_hosts.py)."""

    name = models.CharField(max_length=255, unique=True, help_text="PREVIEW_HOST_NAME, as instances record it.")
    address = models.CharField(max_length=300, help_text="host:port of its internal route.")
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"Preview host {self.name} at {self.address}"


# Build runners live in their own module; importing them here registers their models with the app.
from prototypes.runners import Runner, RunnerJob  # noqa: E402, F401
