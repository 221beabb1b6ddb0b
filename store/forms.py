from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from prototypes.builds import MAX_IDEA_CHARS
from prototypes.images import MAX_IMAGES, check_image
from prototypes.inputs import INT_MAX, require_visible_text
from prototypes.models import Prototype, Target


class WholeNumberField(forms.IntegerField):
    """Every whole number a form takes: bounded to what the database's integer columns hold (Django's
    own IntegerField has no bounds, and 10**30 reached the database as an OverflowError)."""

    def __init__(self, *, min_value: int = 0, max_value: int = INT_MAX, **kwargs):
        super().__init__(min_value=min_value, max_value=max_value, **kwargs)


class MultipleImageInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class ImagesField(forms.FileField):
    """Up to MAX_IMAGES images, each checked with Pillow."""

    def __init__(self, **kwargs):
        kwargs.setdefault("widget", MultipleImageInput(attrs={"accept": "image/png,image/jpeg,image/gif,image/webp"}))
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "Images (optional)")
        kwargs.setdefault(
            "help_text", f"Mockups or screenshots, up to {MAX_IMAGES}, PNG, JPEG, GIF or WebP, 5 MB each."
        )
        super().__init__(**kwargs)

    def clean(self, data, initial=None):
        uploads = [d for d in (data if isinstance(data, list | tuple) else [data]) if d]
        if len(uploads) > MAX_IMAGES:
            raise ValidationError(f"Attach at most {MAX_IMAGES} images.")
        errors = []
        for upload in uploads:
            super().clean(upload, initial)
            try:
                check_image(upload)
            except ValidationError as exc:
                errors.extend(exc.messages)
        if errors:
            raise ValidationError(errors + ["Your text was kept; choose the images again."])
        return uploads


def idea_field(label: str = "What should it do?", placeholder: str = "") -> forms.CharField:
    return forms.CharField(
        label=label,
        max_length=MAX_IDEA_CHARS,
        validators=[require_visible_text],
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": placeholder}),
    )


class AttemptsForm(forms.Form):
    """A form that starts builds: how many attempts of the idea run side by side. Blank means the app's
    default (Target.default_attempts), which is also what the field starts with; the highest number is
    read from settings.MAX_ATTEMPTS when the form is made, so a changed setting applies at once."""

    def __init__(self, *args, target: Target | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["attempts"] = WholeNumberField(
            min_value=1, max_value=settings.MAX_ATTEMPTS, required=False, label="Attempts",
            initial=target.default_attempts if target else 1,
            help_text="How many times Claude builds the idea side by side; you keep the best one. "
                      "Each attempt costs as much as one build.",
        )  # fmt: skip


class NewPrototypeForm(AttemptsForm):
    target = forms.ModelChoiceField(queryset=Target.objects.offered(), empty_label=None, label="Which app?")
    idea = idea_field(placeholder="Describe the change in plain words, e.g. “Add a sleep timer to the player”.")
    title = forms.CharField(label="Name (optional)", max_length=120, required=False)
    visibility = forms.ChoiceField(
        label="Who can see it", choices=Prototype.Visibility.choices, initial=Prototype.Visibility.COMPANY
    )
    images = ImagesField()

    def __init__(self, *args, **kwargs):
        # The attempts start at the default of the app shown first: the one the address named, else the
        # first in the list (store.js follows the choice of app, see data-attempts in new.html).
        chosen = (kwargs.get("initial") or {}).get("target")
        offered = Target.objects.offered()
        target = offered.filter(slug=chosen).first() if chosen else None
        super().__init__(*args, target=target or offered.first(), **kwargs)


class ChangeForm(AttemptsForm):
    idea = idea_field("Ask for a change", "What should be different? e.g. “Make the button bigger”.")
    images = ImagesField()


class RemixForm(AttemptsForm):
    idea = idea_field("What should your version do differently?")
    title = forms.CharField(label="Name (optional)", max_length=120, required=False)
    images = ImagesField()


class DescriptionForm(forms.Form):
    title = forms.CharField(max_length=120, validators=[require_visible_text])
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 8}), help_text="Markdown: **bold**, lists, links."
    )
    tags = forms.CharField(required=False, max_length=300, help_text="Words separated by spaces, e.g. player audio.")
    visibility = forms.ChoiceField(
        label="Who can see it", choices=Prototype.Visibility.choices,
        help_text="Switching to “Anyone with the link” gives the prototype a new address: send people the new one.",
    )  # fmt: skip

    def clean_tags(self):
        from django.utils.text import slugify

        names = {slugify(word)[:40] for word in self.cleaned_data["tags"].replace(",", " ").split()}
        names.discard("")
        if len(names) > 10:
            raise ValidationError("Use at most 10 tags.")
        return sorted(names)
