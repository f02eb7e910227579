"""The one column type for typed JSON: a pydantic model (or a list of them) in a JSON column.

Writing takes only the declared type and stores its JSON form (camelCase); reading validates the
JSON back into that type, so no layer above the store sees a `dict`. A row that does not
validate is an error where it is read, never a dict passed on to fail somewhere else. The JSON
shape is the model's: a change to it that old rows cannot load needs a migration.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter
from sqlalchemy import JSON, Dialect
from sqlalchemy.types import TypeDecorator

T = TypeVar("T")


class TypedJSON(TypeDecorator[T], Generic[T]):
    impl = JSON
    cache_ok = True  # the cache key is (shape, exclude_none), both hashable

    def __init__(self, shape: type[T], *, exclude_none: bool = False) -> None:
        """`shape`: `SandboxSpec`, or `list[ForkRecord]`. `exclude_none` leaves unset optional
        fields out of the JSON (a spec's canonical form) instead of writing them as null."""
        super().__init__()
        self.shape = shape
        self.exclude_none = exclude_none
        self._adapter: TypeAdapter[T] = TypeAdapter(shape)

    def process_bind_param(self, value: T | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self._adapter.dump_python(
            value, mode="json", by_alias=True, exclude_none=self.exclude_none, warnings="error"
        )

    def process_result_value(self, value: Any, dialect: Dialect) -> T | None:
        if value is None:
            return None
        return self._adapter.validate_python(value)
