"""Exceptions raised by ``vault``: one class per kind of failure, all under VaultError."""

from __future__ import annotations

import json
from typing import Any


class VaultError(Exception):
    """A Vault operation failed.

    Attributes:
        code: a stable snake_case identifier, e.g. ``key_not_found``.
        status: the HTTP status the API would answer with.
        message: a sentence for humans.
        details: more about the failure, e.g. ``{"suggestion": ...}``, or None.
    """

    def __init__(self, message: str, code: str = "internal_error", status: int = 500, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        # The native side hands details over as JSON text.
        self.details = json.loads(details) if isinstance(details, str) else details


class InvalidInput(VaultError):
    """A value failed validation; the message names the field."""


class Unauthorized(VaultError):
    """No key, or an unknown, revoked or deactivated one."""


class Forbidden(VaultError):
    """The key lacks the scope the operation needs."""


class NotFound(VaultError):
    """The thing asked for does not exist (or belongs to someone else)."""


class Conflict(VaultError):
    """The request conflicts with the current state (e.g. a duplicate email)."""


class UpstreamUnavailable(VaultError):
    """The inference service could not be reached."""


class UpstreamTimeout(VaultError):
    """The inference service did not answer in time."""


class UpstreamError(VaultError):
    """The inference service answered with an error of its own."""


class Unavailable(VaultError):
    """Vault cannot do this now (e.g. its audit trail cannot take rows); retry later."""
