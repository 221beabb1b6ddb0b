"""How the API reads JSON bodies (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES).

Python's json module recurses once per nested array or object, so a body of 5,000 `[` raised
RecursionError deep inside json.loads: a server error, for a request that is simply not valid. No
request of this API nests more than a few levels, so bodies nested deeper than MAX_DEPTH are refused
with a 400 before they are decoded at all. Like Django's form bodies, a JSON body may hold at most
DATA_UPLOAD_MAX_MEMORY_SIZE bytes (2.5 MB): that also bounds the time the depth check takes."""

from __future__ import annotations

import re

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json

MAX_DEPTH = 32
# A JSON string with its escapes, or one bracket (brackets inside strings nest nothing). An unterminated
# string runs to the end of the text, so that no match is ever retried from a later quote: one pass.
TOKENS = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


class TooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request is too large."
    default_code = "too_large"


def nesting_depth(text: str, *, limit: int = MAX_DEPTH) -> int:
    """How deeply arrays and objects nest in JSON `text`, counting no further than limit + 1. Works on
    text that is not valid JSON too (json.loads then says what is wrong with it)."""
    depth = deepest = 0
    for match in TOKENS.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif token == "]" or token == "}":
            depth -= 1
    return deepest


class ShallowJSONParser(JSONParser):
    """REST framework's JSON parser, refusing bodies too large or nested deeper than MAX_DEPTH before
    decoding them."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        data = stream.read(limit + 1) if limit is not None else stream.read()
        if limit is not None and len(data) > limit:
            raise TooLarge(f"A JSON body may hold at most {limit // 1024} KB.")
        try:
            text = data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - the body is not {encoding} text.") from exc
        if nesting_depth(text) > MAX_DEPTH:
            raise ParseError(f"JSON parse error - arrays or objects nested more than {MAX_DEPTH} deep.")
        try:
            return json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
