"""The one error the data layer raises: the message names the file, shard, column or field, and the reason."""

from __future__ import annotations


class DataError(ValueError):
    """Data that cannot be trained on (or reached); raised before any job starts where it can be found then."""
