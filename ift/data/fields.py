"""Type checks of a record's fields when the data is loaded, before anything is encoded.

A field of the wrong type is never converted (``str(None)`` trained on the text "None"):
it stops with :class:`~ift.data.records.DataFormatError` naming the record's location
(``file:line``), the field and the data module argument that maps it, the type found (in
JSON's words: null, number, list, ...) and what is expected. Types are checked here; what
a well-typed value contains (an empty response, a conversation without an assistant turn)
is the encoder's business, which skips and counts such examples.
"""

from __future__ import annotations

from typing import Any, List, Optional

from ift.data.records import DataFormatError

TEXT = "a string"
MESSAGES = "a list of {\"role\": ..., \"content\": ...} messages"
TEXT_OR_MESSAGES = f"{TEXT} or {MESSAGES}"
ANSWER = "a string or a number"


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type (``null``, ``boolean``, ``number``, ``string``, ``list``, ``object``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _field(key: str, argument: Optional[str]) -> str:
    return f"field {key!r}" + (f" (the data module's {argument})" if argument else "")


def wrong_type(location: str, key: str, value: Any, expected: str, argument: Optional[str] = None,
               hint: str = "") -> DataFormatError:
    """The error for a field of the wrong type."""
    shown = "" if value is None else f" ({repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + '...'})"
    return DataFormatError(
        f"{location}: {_field(key, argument)} is {json_type(value)}{shown}; expected {expected}."
        + (f" {hint}" if hint else "")
    )


def expect_text(location: str, key: str, value: Any, argument: Optional[str] = None, hint: str = "") -> str:
    """``value`` if it is a string, else :func:`wrong_type`."""
    if not isinstance(value, str):
        raise wrong_type(location, key, value, TEXT, argument, hint)
    return value


def expect_answer(location: str, key: str, value: Any, argument: Optional[str] = None) -> str:
    """A reference answer as text: a non-empty string or a number (``42`` and ``"42"`` alike)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise wrong_type(location, key, value, ANSWER, argument, "Give every example its reference answer, or none.")
    text = str(value)
    if not text.strip():
        raise DataFormatError(f"{location}: {_field(key, argument)} is an empty string; expected the reference answer")
    return text


def expect_messages(location: str, key: str, value: Any, argument: Optional[str] = None) -> List[Any]:
    """``value`` if it is a list of ``{role, content}`` objects whose role is a string, else an
    error naming the message. Content types and roles are left to the encoder: non-text
    content (images) and unknown roles are skipped and counted, since real datasets mix them in."""
    if not isinstance(value, (list, tuple)):
        raise wrong_type(location, key, value, MESSAGES, argument)
    for index, message in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(message, dict):
            raise wrong_type(location, where, message, "a {\"role\": ..., \"content\": ...} object", argument)
        missing = [name for name in ("role", "content") if name not in message]
        if missing:
            raise DataFormatError(
                f"{location}: {_field(where, argument)} has no {' or '.join(map(repr, missing))}; keys found: "
                f"{sorted(message)}; expected {MESSAGES} (rename the keys, e.g. from/value to role/content)"
            )
        if not isinstance(message["role"], str):
            raise wrong_type(location, f"{where}.role", message["role"], TEXT, argument)
    return list(value)


def expect_text_or_messages(location: str, key: str, value: Any, argument: Optional[str] = None) -> Any:
    """A string, or a message list checked by :func:`expect_messages`."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return expect_messages(location, key, value, argument)
    raise wrong_type(location, key, value, TEXT_OR_MESSAGES, argument)
