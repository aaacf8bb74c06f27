#!/usr/bin/env python3
"""check-openapi.py SPEC [RESPONSES.jsonl]

1. Validates SPEC (docs/api/openapi.yaml) as an OpenAPI document with
   openapi-spec-validator.
2. For each line of RESPONSES.jsonl -- {"method": "get", "path": "/v1/vms/{name}",
   "status": 200, "body": <parsed JSON>} -- checks that the path, method and status are
   in the spec, and that the body matches the response's schema (openapi-schema-validator,
   with $refs resolved against the spec).

Prints one line per problem and exits 1 if there was any.
"""
import json
import sys

import yaml
from openapi_spec_validator import validate
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012


def main():
    spec_path = sys.argv[1]
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    validate(spec)
    print(f"{spec_path}: valid OpenAPI {spec['openapi']}")
    if len(sys.argv) < 3:
        return 0
    registry = Registry().with_resource("urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012))
    problems = 0
    checked = 0
    with open(sys.argv[2]) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            where = f"{r['method'].upper()} {r['path']} -> {r['status']}"
            op = spec["paths"].get(r["path"], {}).get(r["method"])
            if op is None:
                print(f"{where}: not in the spec"); problems += 1; continue
            resp = op["responses"].get(str(r["status"]))
            if resp is None:
                print(f"{where}: status not documented"); problems += 1; continue
            if "$ref" in resp:
                resp = spec["components"]["responses"][resp["$ref"].split("/")[-1]]
            content = resp.get("content", {})
            if "application/json" not in content:
                if r.get("body") not in (None, ""):
                    print(f"{where}: body where the spec has no JSON"); problems += 1
                continue
            schema = {"$ref": "urn:spec#" + content["application/json"]["schema"]["$ref"][1:]} \
                if "$ref" in content["application/json"]["schema"] else content["application/json"]["schema"]
            validator = OAS31Validator(schema, registry=registry)
            errors = list(validator.iter_errors(r["body"]))
            for e in errors:
                print(f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
            problems += len(errors)
            checked += 1
    print(f"{checked} responses checked against the schema, {problems} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
