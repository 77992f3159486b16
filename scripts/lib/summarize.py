"""Print one closing line for a meson test run: TAP subtests counted across
every test program, then "N passed, N failed, N skipped". Exits non-zero if
anything failed, or if anything was skipped while CI is set (a skip in CI is a
failure: the harness there must find its server)."""
import json
import os
import re
import sys

passed = failed = skipped = 0
bad = []
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        t = json.loads(line)
        out = t.get("stdout") or ""
        oks = len(re.findall(r"^ok \d+(?! *# *SKIP)", out, re.M))
        sk = len(re.findall(r"^ok \d+.*# *SKIP", out, re.M | re.I))
        nok = len(re.findall(r"^not ok \d+", out, re.M))
        if t["result"] == "SKIP" or re.search(r"^1\.\.0 # SKIP", out, re.M):
            skipped += max(1, sk)
            bad.append(f"{t['name']}: skipped")
        elif oks + nok + sk == 0:
            # not a TAP program: count the program itself
            if t["result"] == "OK":
                passed += 1
            else:
                failed += 1
                bad.append(f"{t['name']}: {t['result']}")
        else:
            passed += oks
            failed += nok
            skipped += sk
            if t["result"] not in ("OK", "EXPECTEDFAIL"):
                bad.append(f"{t['name']}: {t['result']}")
                if nok == 0:
                    failed += 1
for b in bad:
    print("  " + b)
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
if failed or bad and (skipped == 0 or os.environ.get("CI")):
    sys.exit(1)
if skipped and os.environ.get("CI"):
    sys.exit(1)
