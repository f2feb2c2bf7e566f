"""Checks each /sale request (and, on demand, the simulator's answer) against the part of
Allegro's OpenAPI file that the simulator serves (`allegro_spec_subset.json`, cut by
scripts/extract_spec_subset.py).

OpenAPI 3.0 schemas are JSON Schema Draft 4 plus `nullable`; the subset is rewritten once
so a stock Draft4Validator understands it, and `$ref`s resolve through a referencing
Registry holding the whole subset document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote

from jsonschema import Draft4Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4

SUBSET_PATH = Path(__file__).with_name("allegro_spec_subset.json")
SPEC_URI = "urn:stock-pipeline:allegro-spec-subset"

# Allegro answers `"external": null` for offers that have no signature although the spec
# does not mark ExternalId nullable. The simulator sends it as Allegro does (clients must
# cope), so response checks accept it.
NULLABLE_IN_PRACTICE = ("ExternalId",)

MAX_REPORTED_SCHEMA_ERRORS = 5


@dataclass(frozen=True)
class Problem:
    """One way a request departs from the spec, with the answer Allegro gives for it."""

    status: int
    code: str
    message: str


@dataclass
class RequestCheck:
    route: str | None  # path template of the matched operation, None when none matched
    path_params: dict[str, str] = field(default_factory=dict)
    body: Any = None  # the parsed JSON body, None when absent or unreadable
    problems: list[Problem] = field(default_factory=list)


def _json_pointer(*segments: str | int) -> str:
    return "".join("/" + str(s).replace("~", "~0").replace("/", "~1") for s in segments)


def _openapi_to_draft4(node: Any) -> Any:
    """`nullable: true` is OpenAPI-only: express it as Draft 4 `anyOf` with null."""
    if isinstance(node, list):
        return [_openapi_to_draft4(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _openapi_to_draft4(value) for key, value in node.items()}
    if converted.pop("nullable", None) is True:
        return {"anyOf": [{"type": "null"}, converted]}
    return converted


def _media_type(header_value: str) -> str:
    return header_value.split(";", 1)[0].strip().lower()


def _route_regex(template: str) -> re.Pattern:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(pattern + "$")


class SpecValidator:
    def __init__(self, subset_path: Path = SUBSET_PATH):
        document = json.loads(subset_path.read_text(encoding="utf-8"))
        for name in NULLABLE_IN_PRACTICE:
            document["components"]["schemas"][name]["nullable"] = True
        self._document = _openapi_to_draft4(document)
        self._registry = Registry().with_resource(SPEC_URI, DRAFT4.create_resource(self._document))
        self._routes = [(template, _route_regex(template)) for template in self._document["paths"]]
        self._validators: dict[str, Draft4Validator] = {}

    # ---- requests --------------------------------------------------------------------

    def check_request(
        self, method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> RequestCheck:
        """`headers` with lower-case names. Problems are listed in the order Allegro
        reports them: the first one decides the answer."""
        label = f"{method} {path}"
        template, path_params = self._match(path)
        if template is None:
            return RequestCheck(
                None,
                problems=[
                    Problem(
                        404, "NotFoundException", f"{label}: no such operation in the spec subset the simulator serves"
                    )
                ],
            )
        method_key = method.lower()
        if method_key not in self._document["paths"][template]:
            return RequestCheck(
                template,
                path_params,
                problems=[Problem(405, "MethodNotAllowedException", f"{label}: {template} does not support {method}")],
            )

        operation = self._document["paths"][template][method_key]
        base = ("paths", template, method_key)
        check = RequestCheck(template, path_params)
        check.problems += self._header_problems(label, operation, base, headers)
        check.problems += self._query_problems(label, template, method_key, query)
        body_problems, check.body = self._body_problems(label, operation, base, headers, body)
        check.problems += body_problems
        # Allegro answers 406 before 415 before anything about the content.
        check.problems.sort(key=lambda p: {406: 0, 415: 1}.get(p.status, 2))
        return check

    def _match(self, path: str) -> tuple[str | None, dict[str, str]]:
        for template, regex in self._routes:
            found = regex.match(path)
            if found:
                return template, {name: unquote(value) for name, value in found.groupdict().items()}
        return None, {}

    def _header_problems(
        self, label: str, operation: dict, base: tuple[str, ...], headers: Mapping[str, str]
    ) -> list[Problem]:
        problems = []
        answer_types = {media for response in operation["responses"].values() for media in response.get("content", {})}
        accepted = {_media_type(part) for part in headers.get("accept", "").split(",") if part.strip()}
        if answer_types and not accepted & answer_types:
            problems.append(
                Problem(
                    406,
                    "NotAcceptableException",
                    f"{label}: Accept header must name {' or '.join(sorted(answer_types))} "
                    f"(got {headers.get('accept', 'none')!r})",
                )
            )
        if not headers.get("user-agent"):
            problems.append(
                Problem(
                    400,
                    "VALIDATION_ERROR",
                    f"{label}: no User-Agent header (Allegro asks for the application name and version)",
                )
            )
        for index, parameter in enumerate(operation.get("parameters", [])):
            name = parameter["name"].lower()
            if parameter["in"] == "header" and name in headers:
                pointer = _json_pointer(*base, "parameters", index, "schema")
                problems += self._schema_problems(pointer, headers[name], f"{label}: header {parameter['name']}")
        return problems

    def _parameters(self, template: str, method: str) -> dict[str, tuple[dict, str]]:
        """Query parameters by name with the pointer to their schema; an operation's own
        declaration overrides a path-level one."""
        found = {}
        item = self._document["paths"][template]
        for owner, segments in ((item, ("paths", template)), (item[method], ("paths", template, method))):
            for index, parameter in enumerate(owner.get("parameters", [])):
                if parameter["in"] == "query":
                    found[parameter["name"]] = (parameter, _json_pointer(*segments, "parameters", index, "schema"))
        return found

    def _query_problems(self, label: str, template: str, method: str, query: Mapping[str, list[str]]) -> list[Problem]:
        problems = []
        known = self._parameters(template, method)
        for name, values in query.items():
            if name not in known:
                problems.append(Problem(400, "VALIDATION_ERROR", f"{label}: unknown query parameter {name!r}"))
                continue
            parameter, pointer = known[name]
            schema = self._resolve(parameter["schema"])
            where = f"{label}: query parameter {name!r}"
            if schema.get("type") == "array":
                item_schema = self._resolve(schema.get("items", {}))
                coerced = [self._coerce(value, item_schema) for value in values]
            elif len(values) > 1:
                problems.append(
                    Problem(400, "VALIDATION_ERROR", f"{where} given {len(values)} times; it takes one value")
                )
                continue
            else:
                coerced = self._coerce(values[0], schema)
            problems += self._schema_problems(pointer, coerced, where)
        for name, (parameter, _) in known.items():
            if parameter.get("required") and name not in query:
                problems.append(Problem(400, "VALIDATION_ERROR", f"{label}: required query parameter {name!r} missing"))
        return problems

    def _resolve(self, schema: dict) -> dict:
        """Follows a local `$ref` (enough to learn a parameter's type for coercion)."""
        while "$ref" in schema:
            node: Any = self._document
            for segment in schema["$ref"].lstrip("#/").split("/"):
                node = node[segment.replace("~1", "/").replace("~0", "~")]
            schema = node
        return schema

    @staticmethod
    def _coerce(raw: str, schema: dict) -> Any:
        """A query string value as the JSON value its schema describes; left as the raw
        string when it does not parse, so the schema check reports the wrong type."""
        kind = schema.get("type")
        try:
            if kind == "integer":
                return int(raw)
            if kind == "number":
                return float(raw)
        except ValueError:
            return raw
        if kind == "boolean" and raw in ("true", "false"):
            return raw == "true"
        return raw

    def _body_problems(
        self, label: str, operation: dict, base: tuple[str, ...], headers: Mapping[str, str], body: bytes
    ) -> tuple[list[Problem], Any]:
        declared = operation.get("requestBody")
        if declared is None:
            if body:
                return [Problem(400, "VALIDATION_ERROR", f"{label}: this operation takes no request body")], None
            return [], None
        if not body:
            if declared.get("required"):
                return [Problem(400, "VALIDATION_ERROR", f"{label}: request body required")], None
            return [], None
        content_type = _media_type(headers.get("content-type", ""))
        if content_type not in declared["content"]:
            return [
                Problem(
                    415,
                    "UnsupportedMediaTypeException",
                    f"{label}: Content-Type {headers.get('content-type')!r} is not "
                    f"{' or '.join(sorted(declared['content']))}",
                )
            ], None
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            return [Problem(400, "VALIDATION_ERROR", f"{label}: request body is not JSON ({exc})")], None
        pointer = _json_pointer(*base, "requestBody", "content", content_type, "schema")
        return self._schema_problems(pointer, parsed, f"{label}: request body"), parsed

    def _schema_problems(self, pointer: str, instance: Any, where: str) -> list[Problem]:
        errors = sorted(self._validator(pointer).iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [
            Problem(400, "VALIDATION_ERROR", f"{where}: {error.message} at {error.json_path}")
            for error in errors[:MAX_REPORTED_SCHEMA_ERRORS]
        ]

    def _validator(self, pointer: str) -> Draft4Validator:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = Draft4Validator({"$ref": f"{SPEC_URI}#{pointer}"}, registry=self._registry)
            self._validators[pointer] = validator
        return validator

    def schema_enum(self, name: str) -> list[str]:
        """The values of the spec's enumeration schema `name`."""
        return list(self._document["components"]["schemas"][name]["enum"])

    # ---- responses -------------------------------------------------------------------

    def answer_media_type(self, method: str, route: str | None, status: int) -> str | None:
        """The media type the spec gives the operation's `status` answer (GET
        /sale/offer-events answers 400 as application/json), None when it gives none."""
        operation = self._document["paths"].get(route or "", {}).get(method.lower())
        content = (operation or {}).get("responses", {}).get(str(status), {}).get("content")
        return next(iter(content), None) if content else None

    def check_response(self, method: str, route: str, status: int, content_type: str, body: Any) -> list[str]:
        """How an answer departs from the spec. Statuses the spec leaves undocumented for
        the operation (429, 5xx, 406 …) are not checked: Allegro sends them anyway."""
        operation = self._document["paths"].get(route, {}).get(method.lower())
        if operation is None:
            return []
        responses = operation["responses"]
        key = str(status) if str(status) in responses else "default"
        content = responses.get(key, {}).get("content")
        if not content:
            return []
        label = f"{method} {route} -> {status}"
        media = _media_type(content_type)
        if media not in content:
            return [f"{label}: answer Content-Type {content_type!r} is not {' or '.join(sorted(content))}"]
        pointer = _json_pointer("paths", route, method.lower(), "responses", key, "content", media, "schema")
        return [problem.message for problem in self._schema_problems(pointer, body, f"{label}: answer")]
