#!/usr/bin/env python3
"""One line per configuration of `cdi-harness scenario nixos-eval --json` (.ci/nix-check).

Usage: ci-summary.py RESULTS.json EXIT_CODE. Exits 1 if any configuration failed (nixpkgs
rejected it, an assertion fails, or it disagrees with the sim backend), if the command's
exit code was not 0, or if there were no results at all.
"""
import json
import sys

results, rc = json.load(open(sys.argv[1])), int(sys.argv[2])
bad = 0
for r in results:
    name = r["target"].split(", kit ")[0].split(", nixpkgs ")[0]
    if not r["ok"]:
        bad += 1
        print(f"FAIL {name}:")
        if "error" in r:
            print("    " + r["error"].replace("\n", "\n    "))
        for a in r.get("summary", {}).get("failedAssertions", []):
            print(f"    failed assertion: {a.strip()}")
        for d in (r.get("sim") or {}).get("differences", []):
            print(f"    disagrees with the sim backend: {d}")
        continue
    s = r["summary"]
    notes = [f"features.cdi = {json.dumps(s['docker']['settings'].get('features', {}).get('cdi'))}"]
    g = s["generator"]
    if g["exists"]:
        notes.append("generator required by " + (", ".join(g["requiredBy"]) or "nothing"))
    if r.get("sim") is not None:
        notes.append("daemon.json = sim's")
    if s.get("nightly"):
        svc = s["nightly"]["service"]
        notes.append(
            f"HOME {svc['environment']['HOME']}, StateDirectory {svc.get('StateDirectory', '(tmpfiles)')}"
        )
    print(f"ok   {name}: {', '.join(notes)}")
if bad or rc != 0 or not results:
    print(f"cdi-harness scenario nixos-eval exited {rc}; {bad} of {len(results)} configuration(s) failed")
    sys.exit(1)
