#!/usr/bin/env python3
"""Compares two JSON documents as parsed values and explains any difference.

    compare-json.py LABEL LEFT_NAME LEFT_FILE RIGHT_NAME RIGHT_FILE

Exit 0 when equal; 1 with the differing paths and a unified diff otherwise; 2 when a
file cannot be read or parsed. A file ending in `.snap` is an insta snapshot: its
YAML header (between the first two `---` lines) is skipped.

Used by .ci/nix-check and the flake's `scenario-export` check to hold Nix's reading
of a scenario (nixos-tests/lib/scenario.nix) to the harness's
(`cdi-harness scenario export`), and the simulated spec of lib/sim.nix to the sim
backend's stored snapshot.
"""

import difflib
import json
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".snap") and text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end >= 0:
            text = text[end + 5 :]
    return json.loads(text)


def differences(left, right, path="$"):
    """Yields (path, left, right) for every leaf that differs."""
    missing = object()
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right)):
            yield from differences(left.get(key, missing), right.get(key, missing), f"{path}.{key}")
    elif isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for i, (a, b) in enumerate(zip(left, right)):
            yield from differences(a, b, f"{path}[{i}]")
    elif left != right or type(left) is not type(right):
        yield (
            path,
            "(absent)" if left is missing else json.dumps(left),
            "(absent)" if right is missing else json.dumps(right),
        )


def main(argv):
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    label, left_name, left_file, right_name, right_file = argv[1:]
    try:
        left = load(left_file)
        right = load(right_file)
    except (OSError, ValueError) as e:
        print(f"{label}: cannot compare: {e}", file=sys.stderr)
        return 2
    diffs = list(differences(left, right))
    if not diffs:
        return 0
    width = max(len(left_name), len(right_name))
    print(f"{label}: {left_name} and {right_name} differ:")
    for path, a, b in diffs:
        print(f"  {path}")
        print(f"    {left_name:<{width}} : {a}")
        print(f"    {right_name:<{width}} : {b}")
    pretty = lambda v: json.dumps(v, indent=2, sort_keys=True).splitlines(keepends=True)  # noqa: E731
    sys.stdout.writelines(difflib.unified_diff(pretty(left), pretty(right), left_name, right_name))
    print()
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
