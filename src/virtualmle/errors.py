"""The exception hierarchy. Every error a user can cause is a `VirtualMLEError`.

The CLI turns these into one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class VirtualMLEError(Exception):
    """Base class: a problem with the user's input, environment or configuration."""


class DataError(VirtualMLEError):
    """A dataset that is missing, malformed or unusable. The message names file and line."""


class ConfigError(VirtualMLEError):
    """An unknown parameter, an out-of-range value or an invalid search space."""


class StorageError(VirtualMLEError):
    """A storage URL that cannot be opened, or a study that does not exist."""


class LLMError(VirtualMLEError):
    """Base for LLM-layer failures the caller is expected to handle."""


class LLMOutputError(LLMError):
    """The model kept returning output that does not validate against the requested schema."""


class LLMUnavailableError(LLMError):
    """The backend cannot be reached or died (after retries on transient errors)."""


class LLMAuthError(LLMError):
    """The endpoint refused the API key (HTTP 401 / 403): never retried, no resume can fix it."""


class LLMBudgetExceeded(LLMError):
    """The study's `--max-llm-tokens` budget is spent."""


class ObserveIncomplete(VirtualMLEError):
    """A method could not finish observing a trial (e.g. its memory cannot be written): the loop
    stores ``attrs`` (what it did observe) on the trial, tells it, and stops the study."""

    def __init__(self, message: str, attrs: dict | None = None) -> None:
        super().__init__(message)
        self.attrs = dict(attrs or {})


class TrialError(VirtualMLEError):
    """Raised inside a trial; the executor classifies and records it, the search goes on."""


class DivergedError(TrialError):
    """The training loss became NaN or infinite."""
