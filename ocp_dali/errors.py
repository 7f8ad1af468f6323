"""Errors that name what was bad: the file, and the annotation where there is one."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data: carries the file (and annotation id) so a user can find it."""

    def __init__(self, file: str, message: str, ann_id: int | None = None) -> None:
        self.file = str(file)
        self.ann_id = ann_id
        self.message = message
        where = self.file if ann_id is None else f"{self.file} (annotation {ann_id})"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # pickles (to and from worker processes) with its fields, not just the text
        return DataError, (self.file, self.message, self.ann_id)
