"""Domain errors: each carries the HTTP status and stable code the API reports."""

from __future__ import annotations

from typing import TypedDict


class FieldError(TypedDict):
    """One invalid field of a request."""

    field: str
    message: str


class DomainError(Exception):
    """An error the API reports as-is: status, stable kebab-case code, human message."""

    status = 400
    code = "invalid-request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.errors: list[FieldError] = errors or []


class ValidationFailed(DomainError):
    """The request body or query had invalid fields."""

    status = 400
    code = "invalid-request"


class NotFound(DomainError):
    """The resource does not exist or belongs to another user."""

    status = 404
    code = "not-found"


class Conflict(DomainError):
    """The resource is in a state that forbids the operation."""

    status = 409
    code = "conflict"


class Gone(DomainError):
    """The resource existed but can no longer be used."""

    status = 410
    code = "gone"


class ConfigError(Exception):
    """The environment does not describe a runnable service."""
