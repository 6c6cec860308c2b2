"""One exception hierarchy for embedkit.

Every error a user can cause derives from :class:`EmbedkitError`; the CLI turns
any of them into a single ``error: ...`` line and a non-zero exit. Messages say
what was given, what is valid and how to fix it.
"""

from __future__ import annotations


class EmbedkitError(Exception):
    """Base class of every error embedkit raises on purpose."""


class ConfigError(EmbedkitError, ValueError):
    """A bad argument or option value (unknown name, out-of-range number...)."""


class DataError(EmbedkitError, ValueError):
    """Input data that cannot be used (no images, one class, NaN codes...)."""


class WeightsError(EmbedkitError):
    """Weights that cannot be found, downloaded or loaded."""


class MismatchError(EmbedkitError):
    """Artifacts that do not belong together (other backbone, layer or dim)."""


class MissingDependencyError(EmbedkitError, ImportError):
    """An optional dependency is needed for what was asked and is not installed."""


class NotFittedError(EmbedkitError, AttributeError):
    """An estimator was used before ``fit``."""


class StoreError(EmbedkitError):
    """A code store that is missing, incomplete or corrupt."""


class DiskFullError(EmbedkitError, OSError):
    """A write that failed for lack of space or quota; what was written before it stays intact.

    An ``OSError`` with ``errno.ENOSPC`` too, so code that handles a full disk by its errno sees it.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def invalid(what: str, given, valid, fix: str | None = None) -> ConfigError:
    """The one shape of a "not valid" message: what was given, what is valid, how to fix it.

    ``raise invalid("kernel", "rfb", KERNELS)`` ->
    ``ConfigError("kernel 'rfb' is not valid; use one of rbf, sigmoid, linear, poly")``.
    ``valid`` is a sequence of choices or a sentence (e.g. ``"a positive integer"``).
    """
    choices = valid if isinstance(valid, str) else "one of " + ", ".join(map(str, valid))
    return ConfigError(f"{what} {given!r} is not valid; use {choices}" + (f" ({fix})" if fix else ""))
