"""One error type for everything a user can fix, formatted in one place (the CLI)."""


class CompError(Exception):
    """A problem the user can fix: the message names the file, key or value and the fix."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"
