"""Filters for showing what people wrote about themselves and their prototypes, loaded into every
template (TEMPLATES "builtins" in settings).

`{{ user|person }}` is how a person is named (prototypes.inputs.display_name: their full name when it
shows something, else their username). `{{ prototype.title|no_bidi }}` drops bidi embedding, override
and isolate controls, so that a title cannot reverse the text drawn after it ("Invoice‮fdp.exe" showing as
"Invoiceexe.pdf") or the page around it. Both still go through autoescaping like any other text.

Why remove them instead of isolating each value with <bdi> or dir="auto": isolation keeps an override
from spilling out of the value, but inside it the reversed text still reads as the attacker wanted, and
titles are also shown in attributes (aria-label, title) where no element can isolate anything. Letters
of right-to-left scripts keep their direction without these controls, so nothing legitimate is lost."""

from django import template

from prototypes.inputs import display_name, without_bidi_controls

register = template.Library()


@register.filter
def person(user) -> str:
    return display_name(user) if user else ""


@register.filter
def no_bidi(text) -> str:
    return without_bidi_controls(str(text)) if text is not None else ""
