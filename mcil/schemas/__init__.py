"""JSON schemas of the files mcil writes (result.json)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["result_schema", "validate_result", "ResultSchemaError"]


class ResultSchemaError(ValueError):
    """A result does not match mcil/schemas/result.schema.json (a bug: nothing is written)."""


@lru_cache(maxsize=1)
def result_schema() -> dict[str, Any]:
    return json.loads(resources.files(__name__).joinpath("result.schema.json").read_text())


def validate_result(result: dict[str, Any]) -> None:
    """Raise :class:`ResultSchemaError` naming the first offending path."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(result_schema())
    errors = sorted(validator.iter_errors(result), key=lambda e: [str(p) for p in e.path])
    if errors:
        e = errors[0]
        path = "/".join(str(p) for p in e.path) or "<root>"
        raise ResultSchemaError(f"result.json invalid at {path}: {e.message}")
