from django import forms

from prototypes.builds import MAX_IDEA_CHARS
from prototypes.models import Prototype, Target


class NewPrototypeForm(forms.Form):
    target = forms.ModelChoiceField(queryset=Target.objects.filter(enabled=True), empty_label=None, label="Which app?")
    idea = forms.CharField(
        label="What should it do?",
        max_length=MAX_IDEA_CHARS,
        widget=forms.Textarea(
            attrs={
                "rows": 5,
                "placeholder": "Describe the change in plain words, e.g. “Add a sleep timer to the player”.",
            }
        ),
    )
    title = forms.CharField(label="Name (optional)", max_length=120, required=False)
    visibility = forms.ChoiceField(
        label="Who can see it", choices=Prototype.Visibility.choices, initial=Prototype.Visibility.COMPANY
    )
