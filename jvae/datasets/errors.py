"""The error every data source raises (re-exported as :class:`jvae.data.DataError`)."""

from jvae.base import JvaeError

__all__ = ["DataError"]


class DataError(JvaeError, RuntimeError):
    """Data that cannot be found, read or prepared; the message says how to fix it."""
