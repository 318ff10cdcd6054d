"""Errors a delivery can end in, classified once so the dispatcher knows what to retry.

    GatewayError
    └── ProviderError            a provider (or our check of its rules) refused a push
        ├── TransientError       worth retrying: timeouts, connection errors, 408, 429, 5xx
        └── PermanentError       retrying cannot help: other 4xx
            └── LocalValidationError   refused locally before any request was made

Messages carry the provider's own error text and never a request URL or header, so a
secret can't leak through ``str(error)``.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error this project raises on purpose."""


class ProviderError(GatewayError):
    def __init__(self, provider: str, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.message = message
        self.status_code = status_code

    def __str__(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.provider}{status}: {self.message}"


class TransientError(ProviderError):
    def __init__(
        self,
        provider: str,
        message: str,
        status_code: int | None = None,
        retry_after: float | None = None,
        *,
        unanswered: bool = False,
    ) -> None:
        super().__init__(provider, message, status_code)
        self.retry_after = retry_after
        self.unanswered = unanswered  # the request may have reached the provider: it may still land, later


class PermanentError(ProviderError):
    pass


class LocalValidationError(PermanentError):
    """The provider's documented rules reject this push; nothing was sent."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(provider, message, None)
