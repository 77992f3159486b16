"""Print one closing line for a meson test run: TAP subtests counted across
every test program, then "N passed, N failed, N skipped". Exits non-zero if
anything failed, or if anything was skipped while CI is set (a skip in CI is a
failure: the harness there must find its server).

With --why, each failing program is followed by its failing subtests and the
lines around the failure, so a log that keeps only its tail (CI's) still
says what broke."""
import json
import os
import re
import sys

WHY_LINES = 12


def failure_excerpt(out, err):
    """The 'not ok' lines and Check's failure lines, else the output's tail."""
    lines = [l for l in out.splitlines() if re.match(r"^not ok \d+", l)]
    lines += [l for l in (out + "\n" + err).splitlines()
              if re.search(r":[FE]:[^:]*:[^:]*:", l) or "AddressSanitizer" in l
              or "runtime error:" in l or "Timeout" in l]
    if not lines:
        lines = (out + "\n" + err).strip().splitlines()[-WHY_LINES:]
    return lines[:WHY_LINES]


def main():
    why = "--why" in sys.argv[1:]
    path = [a for a in sys.argv[1:] if a != "--why"][0]
    passed = failed = skipped = 0
    bad = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            t = json.loads(line)
            out = t.get("stdout") or ""
            err = t.get("stderr") or ""
            oks = len(re.findall(r"^ok \d+(?! *# *SKIP)", out, re.M))
            sk = len(re.findall(r"^ok \d+.*# *SKIP", out, re.M | re.I))
            nok = len(re.findall(r"^not ok \d+", out, re.M))
            if t["result"] == "SKIP" or re.search(r"^1\.\.0 # SKIP", out, re.M):
                skipped += max(1, sk)
                bad.append((f"{t['name']}: skipped", []))
            elif oks + nok + sk == 0:
                # not a TAP program: count the program itself
                if t["result"] == "OK":
                    passed += 1
                else:
                    failed += 1
                    bad.append((f"{t['name']}: {t['result']}", failure_excerpt(out, err)))
            else:
                passed += oks
                failed += nok
                skipped += sk
                if t["result"] not in ("OK", "EXPECTEDFAIL"):
                    bad.append((f"{t['name']}: {t['result']}", failure_excerpt(out, err)))
                    if nok == 0:
                        failed += 1
    for name, excerpt in bad:
        print("  " + name)
        if why:
            for l in excerpt:
                print("      " + l[:300])
    print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
    if failed or bad and (skipped == 0 or os.environ.get("CI")):
        sys.exit(1)
    if skipped and os.environ.get("CI"):
        sys.exit(1)


main()
