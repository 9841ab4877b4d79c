#!/usr/bin/env python3
"""Validates custom resources against the mesh's CRD schemas, as the API
server would with strict field validation (unknown fields are errors).

usage: validate_resources.py CRDS.yaml FILE_OR_DIR...
Prints one line per problem and exits 1 if any; prints a summary otherwise.
"""
import copy
import pathlib
import sys

import jsonschema
import yaml


def strict(schema):
    """OpenAPI -> JSON Schema for validation: unknown fields rejected, and
    `nullable` honoured."""
    s = copy.deepcopy(schema)
    if isinstance(s, dict):
        if "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
        if s.pop("nullable", False) and "type" in s:
            s["type"] = [s["type"], "null"]
        if s.pop("x-kubernetes-int-or-string", False):
            s["type"] = ["integer", "string"]
        for key in ("properties",):
            if key in s:
                s[key] = {k: strict(v) for k, v in s[key].items()}
        for key in ("items", "additionalProperties"):
            if isinstance(s.get(key), dict):
                s[key] = strict(s[key])
    return s


def stringify_keys(v):
    """YAML allows `8080:` as an integer key; JSON (what kubectl sends) does not."""
    if isinstance(v, dict):
        return {str(k): stringify_keys(x) for k, x in v.items()}
    if isinstance(v, list):
        return [stringify_keys(x) for x in v]
    return v


def main():
    crds = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    schemas = {}
    for crd in crds:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            schema = strict(v["schema"]["openAPIV3Schema"])
            # metadata is the API server's, not the CRD's, to validate.
            schema["properties"]["apiVersion"] = {"type": "string"}
            schema["properties"]["kind"] = {"type": "string"}
            schema["properties"]["metadata"] = {"type": "object"}
            schemas[(f"{group}/{v['name']}", kind)] = schema
    files = []
    for arg in sys.argv[2:]:
        p = pathlib.Path(arg)
        files += sorted(p.rglob("*.yaml")) if p.is_dir() else [p]
    problems, checked = [], 0
    for f in files:
        for i, doc in enumerate(yaml.safe_load_all(open(f)), start=1):
            if not doc:
                continue
            doc = stringify_keys(doc)
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in schemas:
                problems.append(f"{f}#{i}: no CRD serves {key[0]} {key[1]}")
                continue
            checked += 1
            for err in jsonschema.Draft7Validator(schemas[key]).iter_errors(doc):
                path = ".".join(str(p) for p in err.absolute_path)
                problems.append(f"{f}#{i} {key[1]} {doc['metadata'].get('name')}: {path}: {err.message}")
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"{checked} resources valid against their CRDs")


if __name__ == "__main__":
    main()
