"""The OpenAPI document the scoring service serves at /docs.json, corrected so clients generated
from it can read every answer the API gives.

BentoML 1.4 documents a 400's ``detail`` as a string but returns pydantic's list of field errors
(schemathesis: "response violates schema"), does not know the errors fraudflow's middleware
answers (401, 413, 415, 503), and inlines the request and response schemas in each path with
``anyOf`` alternatives dropped (``transaction_id`` documented as an integer only, though
printable string ids are accepted), and leaves the request body optional, though a POST without
one is a 400. :func:`document_errors` fixes all three on BentoML's own
document; ``scoring_http.Guard`` applies it to the /docs.json response.
"""

from __future__ import annotations

import copy
from typing import Any

FIELD_ERROR = {
    "type": "object",
    "title": "FieldError",
    "required": ["type", "loc", "msg"],
    "properties": {
        "type": {"type": "string", "description": "pydantic's error type, e.g. missing, greater_than_equal"},
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "url": {"type": "string"},
        "input": {},
        "ctx": {"type": "object"},
    },
}
GUARD_ERROR = {
    "type": "object",
    "title": "GuardError",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "field": {"type": "string", "description": "what is wrong: body, content-type"},
        "limit": {"type": "integer", "description": "the limit exceeded (bytes, or requests in flight)"},
    },
}
GUARD_ANSWERS = {
    "401": "Missing or invalid bearer token (when FRAUDFLOW_API_TOKEN is set).",
    "413": "Body larger than FRAUDFLOW_SERVING_MAX_BODY_BYTES; not read.",
    "415": "Content-Type is not application/json.",
    "503": "More than FRAUDFLOW_SERVING_MAX_IN_FLIGHT requests in flight on this worker; retry after Retry-After.",
}


def document_errors(spec: dict[str, Any], api_paths: tuple[str, ...], *, amount_ceiling: float) -> dict[str, Any]:
    """A copy of BentoML's OpenAPI ``spec`` with the error bodies and schemas the API really uses,
    and ``tx_amount``'s maximum: the amount_ceiling setting, known only when the service runs."""
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for schema in schemas.values():
        if "tx_amount" in schema.get("properties", {}):
            schema["properties"]["tx_amount"]["maximum"] = amount_ceiling
    schemas["FieldError"], schemas["GuardError"] = FIELD_ERROR, GUARD_ERROR
    if "InvalidArgument" in schemas:
        schemas["InvalidArgument"]["properties"]["detail"] = {
            "title": "Error Detail",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}],
        }
    guard = {"application/json": {"schema": {"$ref": "#/components/schemas/GuardError"}}}
    for path in api_paths:
        operation = spec.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        operation.setdefault("requestBody", {})["required"] = True  # BentoML leaves it optional; it is not
        bodies = [operation["requestBody"].get("content", {}).get("application/json", {})]
        bodies.append(operation["responses"].get("200", {}).get("content", {}).get("application/json", {}))
        for body in bodies:
            title = body.get("schema", {}).get("title")
            if title in schemas:  # the component keeps the anyOf alternatives the inline copy lost
                body["schema"] = {"$ref": f"#/components/schemas/{title}"}
        for status, description in GUARD_ANSWERS.items():
            operation["responses"][status] = {"description": description, "content": guard}
        retry = {"description": "seconds to wait", "schema": {"type": "integer"}}
        operation["responses"]["503"]["headers"] = {"Retry-After": retry}
    return spec
