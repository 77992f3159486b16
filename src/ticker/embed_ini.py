#!/usr/bin/env python3
"""Write a C file defining `const char ticker_sample_ini[]` from conf/pgqd-ev.ini."""
import sys

src, dst = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f:
    text = f.read()
lines = ["/* Generated from conf/pgqd-ev.ini by embed_ini.py; do not edit. */",
         '#include "ticker_config.h"', "", "const char ticker_sample_ini[] ="]
for line in text.splitlines(keepends=True):
    esc = line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    lines.append('\t"' + esc + '"')
lines.append("\t;")
with open(dst, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
