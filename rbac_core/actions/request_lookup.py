"""Finding an access request by the id a button or a person gave."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from ..errors import NotFound
from ..store.models import AccessRequest

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def find_request(session: Session, request_id: str, *, lock: bool = False) -> AccessRequest:
    """The request named by a button or a person, or NotFound (an id of the wrong shape
    is not looked up: a NUL or a lone surrogate would be a database error)."""
    request = None
    if _REQUEST_ID.fullmatch(request_id):
        request = session.get(
            AccessRequest, request_id, with_for_update=lock, populate_existing=lock
        )
    if request is None:
        raise NotFound("That access request does not exist.")
    return request
