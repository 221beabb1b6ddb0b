"""One error format for the whole API, whatever went wrong:

    {"error": {"code": "not_found", "message": "Plain words for a person.", "fields": {"idea": ["…"]}}}

`code` is stable (scripts branch on it), `message` is for people, `fields` names the inputs that were
wrong (empty unless the request was invalid). The schema documents it on every operation
(`document_errors`)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from prototypes.builds import NotAllowed
from store.api_policies import TooMany
from store.ratelimit import describe_wait

log = logging.getLogger(__name__)

NOT_FOUND = "There is nothing here, or you are not allowed to see it."
SIGN_IN = "Sign in first, or send your API token as “Authorization: Token <token>” (get one at /api/token/)."
SERVER_ERROR = "Something went wrong on our side. It was logged; please try again later."


class Refused(exceptions.PermissionDenied):
    """The store's rules refuse the request (a `NotAllowed` from prototypes.builds and friends)."""

    default_code = "not_allowed"


def flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested validation errors as {"field": [...], "tags.0": [...]}."""
    if isinstance(detail, dict):
        fields: dict[str, list[str]] = {}
        for key, value in detail.items():
            fields.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return fields
    if isinstance(detail, list) and any(isinstance(item, (dict, list)) for item in detail):
        fields = {}
        for index, value in enumerate(detail):
            if value:
                fields.update(flatten(value, f"{prefix}.{index}" if prefix else str(index)))
        return fields
    items = detail if isinstance(detail, list) else [detail]
    return {prefix: [str(item) for item in items]}


def _validation(exc: exceptions.ValidationError) -> tuple[str, dict]:
    fields = flatten(exc.detail)
    general = fields.pop("non_field_errors", []) + fields.pop("", [])
    if general:
        return " ".join(general), fields
    if fields:
        return f"Some fields are not valid: {', '.join(sorted(fields))}.", fields
    return "The request is not valid.", {}


def _message(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.NotAuthenticated):
        return SIGN_IN
    if isinstance(exc, exceptions.AuthenticationFailed):
        return f"{exc.detail} Get a new token at /api/token/."
    if isinstance(exc, exceptions.Throttled):
        again = f"Try again in {describe_wait(exc.wait)}." if exc.wait else "Try again in a little while."
        return f"{exc.detail} {again}" if isinstance(exc, TooMany) else f"Too many requests. {again}"
    detail = exc.detail
    if isinstance(detail, (list, dict)):
        return " ".join(sum(flatten(detail).values(), []))
    return str(detail)


def handle(exc, context):
    """REST framework's EXCEPTION_HANDLER: every error as {"error": {code, message, fields}}."""
    message = None
    if isinstance(exc, NotAllowed):
        exc = Refused(str(exc))
    elif isinstance(exc, Http404):
        # Lookups by slug or id answer the same whether the thing is missing or hidden from this person.
        exc, message = exceptions.NotFound(), NOT_FOUND
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = exception_handler(exc, context)
    if response is None:
        if settings.DEBUG:
            return None  # let Django show the traceback
        log.error("API error", exc_info=exc)
        set_rollback()
        return Response(
            {"error": {"code": "server_error", "message": SERVER_ERROR, "fields": {}}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    fields: dict = {}
    if isinstance(exc, exceptions.ValidationError):
        message, fields = _validation(exc)
        code = "invalid"
    else:
        code = exc.get_codes() if isinstance(exc.detail, str) else exc.default_code
        code = code if isinstance(code, str) else exc.default_code
        message = message or _message(exc)
    response.data = {"error": {"code": code, "message": message, "fields": fields}}
    return response


ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error of the API has this shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Stable, for scripts: invalid, not_found, …"},
                "message": {"type": "string", "description": "What went wrong, in plain words."},
                "fields": {
                    "type": "object",
                    "description": "The inputs that were not valid, each with what was wrong.",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
            },
            "required": ["code", "message", "fields"],
        }
    },
    "required": ["error"],
}
ERRORS = {
    "400": "The request is not valid; `fields` says which inputs.",
    "401": "Not signed in: send “Authorization: Token <token>”.",
    "403": "Not allowed; the message says why.",
    "404": "Nothing here, or you are not allowed to see it.",
    "429": "Too many requests; try again later.",
}


def document_errors(result, generator, request, public):
    """drf-spectacular postprocessing hook: the error format on every operation of the API."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/") or path.startswith("/api/schema"):
            continue
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for code, description in ERRORS.items():
                if code == "400" and method == "get" and not operation.get("parameters"):
                    continue
                responses.setdefault(code, {"content": {"application/json": {"schema": ref}},
                                            "description": description})  # fmt: skip
    return result
