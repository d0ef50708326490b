"""Exceptions raised when data does not meet its contract.

Every message names where the fault is (file, row, key, field) so that a person can find
it in a corpus of millions of items without a debugger.
"""

from __future__ import annotations


class SchemaError(ValueError):
    """Data that does not follow a `losatok_data` contract (base of every error here)."""


class SchemaVersionError(SchemaError):
    """An artifact written under a schema major version this software cannot read."""


class ManifestError(SchemaError):
    """A manifest row that cannot become an input item; names the file, row and field."""

    def __init__(self, source: str, row: int, field: str | None, message: str) -> None:
        self.source = source
        self.row = row  # 1-based data row (header lines not counted)
        self.field = field
        where = f"{source} row {row}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")


class SampleValidationError(SchemaError):
    """A sample whose fields disagree with the field specs; names the key and field."""

    def __init__(self, key: str | None, field: str | None, message: str) -> None:
        self.key = key
        self.field = field
        where = f"sample {key!r}" if key is not None else "sample"
        if field:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
