#!/usr/bin/env python3
"""Renders deploy/helm/mesh with real Helm (the Go library shipped in the
PyPI package helm-python-sdk, offline) and prints every object, CRDs
included, as one JSON list.

usage: helm_render.py CHART PROFILE NAMESPACE
PROFILE is default, minimal or demo (values-PROFILE.yaml over values.yaml).
Exit 3 when helm-python-sdk is not installed.
"""
import json
import os
import sys

import yaml

try:
    import helm_python
except ImportError as e:  # the caller decides whether that is a skip
    print(f"helm-python-sdk not installed: {e}", file=sys.stderr)
    sys.exit(3)


def main():
    chart_dir, profile, namespace = sys.argv[1:4]
    chart = helm_python.Chart.load(chart_dir)
    values = {}
    if profile != "default":
        with open(os.path.join(chart_dir, f"values-{profile}.yaml")) as f:
            values = yaml.safe_load(f) or {}
    rendered = chart.render(values, name="mesh", namespace=namespace, is_install=True)
    objects = []
    for crd in chart.crds:
        objects.extend(d for d in yaml.safe_load_all(crd["data"]) if d)
    for path in sorted(rendered):
        objects.extend(d for d in yaml.safe_load_all(rendered[path]) if d)
    json.dump(objects, sys.stdout)


main()
