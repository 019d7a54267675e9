"""Meta's error codes: what each means for a message, in words for the person who sent it.

One table serves everyone who meets these codes: the Graph client sorting a
refused send (bot/whatsapp/graph_errors.py), the intake telling a sender that a
message failed later (a `failed` status carries the same codes), and Slack's
rendering of that notice. `Handling` says what a sender does next; the sentence
says it to a person, with what to change when it can be changed.
"""

from __future__ import annotations

from enum import StrEnum


class Handling(StrEnum):
    RETRY = "retry"
    """Transient: the same request may succeed later."""
    WAIT_A_DAY = "wait_a_day"
    """Meta's per-user marketing limit: retrying within hours fails again."""
    PERMANENT = "permanent"
    """The message will never go as it is: tell its sender what to change."""
    PAUSE_NUMBER = "pause_number"
    """The number itself is limited or restricted: stop it and alert."""
    TOKEN = "token"
    """The access token is expired or lacks a permission: nothing sends."""


_PERMISSIONS = (
    "the access token lacks a permission this call needs; grant whatsapp_business_messaging "
    "(and whatsapp_business_management) to the system user and refresh WHATSAPP_ACCESS_TOKEN"
)

CODES: dict[int, tuple[Handling, str]] = {
    # Transient.
    1: (Handling.RETRY, "Meta's API had an unexpected problem; the message is retried shortly"),
    2: (Handling.RETRY, "Meta's service was briefly unavailable; the message is retried shortly"),
    4: (
        Handling.RETRY,
        "the app hit Meta's API call limit; sending slows down and retries by itself",
    ),
    613: (Handling.RETRY, "the app called Meta's API too often; sending slows down and retries"),
    80007: (
        Handling.RETRY,
        "the business account hit Meta's rate limit; sending slows down and retries",
    ),
    130429: (
        Handling.RETRY,
        "the number reached its messages-per-second limit; the message is queued",
    ),
    131056: (
        Handling.RETRY,
        "too many messages to this customer in a short time (about one per 6 seconds); "
        "the message waits and is retried",
    ),
    131057: (
        Handling.RETRY,
        "the business account is in maintenance; the message is retried later",
    ),
    131016: (
        Handling.RETRY,
        "a WhatsApp service is temporarily unavailable; the message is retried",
    ),
    133004: (
        Handling.RETRY,
        "WhatsApp's server is temporarily unavailable; the message is retried",
    ),
    131000: (Handling.RETRY, "something went wrong on Meta's side; the message is retried once"),
    135000: (Handling.RETRY, "Meta reported a generic error; the message is retried once"),
    # Wait a day.
    131049: (
        Handling.WAIT_A_DAY,
        "Meta held back this marketing message to protect the customer's experience "
        "(per-user marketing limit); try again in a day",
    ),
    # Permanent: tell the person who sent it.
    100: (
        Handling.PERMANENT,
        "Meta found a parameter of the message invalid; check it and send again",
    ),
    33: (
        Handling.PERMANENT,
        "the phone number id is unknown to Meta or not usable with this token",
    ),
    131008: (
        Handling.PERMANENT,
        "a required part of the message is missing; fix it and send again",
    ),
    131009: (Handling.PERMANENT, "a value in the message is not valid; check it and send again"),
    131021: (
        Handling.PERMANENT,
        "the recipient is the sending number itself; choose another recipient",
    ),
    131026: (
        Handling.PERMANENT,
        "WhatsApp could not deliver it: the number may not use WhatsApp, may run an old "
        "version, or may have blocked the business; check the number",
    ),
    131030: (
        Handling.PERMANENT,
        "the recipient is not in the test number's allowed list; add them first",
    ),
    131042: (
        Handling.PERMANENT,
        "the business account has a payment problem; an admin must fix billing",
    ),
    131047: (
        Handling.PERMANENT,
        "the customer's 24-hour window is closed; send a template instead",
    ),
    131050: (
        Handling.PERMANENT,
        "the customer stopped marketing messages from this business; do not send",
    ),
    131051: (
        Handling.PERMANENT,
        "this message type is not supported; send text, media or a template",
    ),
    131052: (Handling.PERMANENT, "the media could not be downloaded; ask for it to be sent again"),
    131053: (Handling.PERMANENT, "the media could not be uploaded (type or size); check the file"),
    131062: (
        Handling.PERMANENT,
        "authentication templates cannot go to a user id; use the phone number",
    ),
    130497: (Handling.PERMANENT, "the business may not message customers in this country"),
    132000: (
        Handling.PERMANENT,
        "the number of template variables does not match; fill each one once",
    ),
    132001: (
        Handling.PERMANENT,
        "the template does not exist in that language or is not approved yet",
    ),
    132005: (
        Handling.PERMANENT,
        "the template's text is too long once filled in; shorten the values",
    ),
    132007: (
        Handling.PERMANENT,
        "the filled-in template breaks WhatsApp's policy; change the values",
    ),
    132008: (Handling.PERMANENT, "a template parameter has the wrong format; check each variable"),
    132012: (Handling.PERMANENT, "a template parameter does not match the template's format"),
    132015: (
        Handling.PERMANENT,
        "the template is paused for low quality; edit it or use another one",
    ),
    132016: (
        Handling.PERMANENT,
        "the template was disabled for low quality; create a new template",
    ),
    # The number itself is limited: pause it and alert.
    131048: (
        Handling.PAUSE_NUMBER,
        "the number hit WhatsApp's spam limit (too many customers blocked or reported it); "
        "sending is paused until someone reviews the messages' quality",
    ),
    368: (
        Handling.PAUSE_NUMBER,
        "the account is temporarily blocked for policy violations; sending is paused: "
        "check Account Quality in WhatsApp Manager",
    ),
    131031: (
        Handling.PAUSE_NUMBER,
        "the business account is locked or restricted; sending is paused: see Account "
        "Quality in WhatsApp Manager and appeal if needed",
    ),
    133010: (
        Handling.PAUSE_NUMBER,
        "the number is not registered with the Cloud API; register it first",
    ),
    # The token.
    190: (Handling.TOKEN, "the access token expired or is invalid; rotate WHATSAPP_ACCESS_TOKEN"),
    0: (Handling.TOKEN, "Meta could not authenticate the token; rotate WHATSAPP_ACCESS_TOKEN"),
    3: (Handling.TOKEN, "the app lacks the capability for this call; check its WhatsApp setup"),
    10: (Handling.TOKEN, _PERMISSIONS),
    131005: (Handling.TOKEN, _PERMISSIONS),
}


def handling_of(code: int | None) -> tuple[Handling, str] | None:
    """What to do about Meta's `code`, and the sentence for it; None for a code not known."""
    if code is None:
        return None
    if code in CODES:
        return CODES[code]
    if 200 <= code <= 299:
        return Handling.TOKEN, _PERMISSIONS
    return None


def explain(code: int | None) -> str:
    """The plain-language sentence for Meta's `code`, generic when it is not known."""
    found = handling_of(code)
    if found is not None:
        return found[1]
    if code is None:
        return "Meta did not accept the request; if it keeps happening, ask an admin to look"
    return f"Meta refused it with error {code}; if it keeps happening, ask an admin to look"
