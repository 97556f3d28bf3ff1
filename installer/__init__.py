"""Underpaint's installer: a server environment, model files, the Krita plugin and a launcher.

Standard library only: `python installer/install.py` runs before anything else is installed.
"""

from shared.paths import APP_NAME  # noqa: F401  (the installer's modules take it from here)


class InstallError(Exception):
    """A step that failed, with what the user can do about it (`hint`)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  what to do: {self.hint}" if self.hint else self.message
