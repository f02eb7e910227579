"""The base of every spec model and the field types the spec and the catalog share.

Field names are camelCase on the wire; unknown fields are refused rather than ignored; a model
is frozen once validated.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from sandboxd.core.naming import DNS_LABEL, is_dns_label

MAX_STRING = 4096
MAX_INT = 2**31 - 1  # counts and codes: what every router and JSON reader holds exactly


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def as_json(self) -> dict[str, Any]:
        """The wire form, as stored and shown: camelCase, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _dns_label(value: str) -> str:
    if not is_dns_label(value):
        raise ValueError(
            f"{value!r} is not a DNS label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return value


# The validator gives the message; the JSON schema documents the same rule (for the OpenAPI
# document, which clients and fuzzers read).
DnsLabel = Annotated[
    str, AfterValidator(_dns_label), Field(json_schema_extra={"pattern": DNS_LABEL.pattern})
]
ShortText = Annotated[str, Field(min_length=1, max_length=256)]
