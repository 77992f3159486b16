#!/usr/bin/env python3
"""Render docs/pgqd-ev.8.md, the one source of pgqd-ev's reference, as:

  man VERSION SRC OUT   the man page pgqd-ev(8) in man(7) roff
  md SRC OUT            docs/configuration.md: the CONFIGURATION and OPERATIONS
                        sections as GitHub Markdown, for the README to link

The source is a small Markdown subset: '% TITLE SECTION' first, '#'/'##'
headings, paragraphs, '- ' bullets, ``` blocks, and definition lists written
as a term line followed by lines starting with ':   ' (continued by lines
indented four spaces). Inline: `code`, **bold**, *italic*.
"""
import re
import sys

MD_SECTIONS = ("CONFIGURATION", "OPERATIONS", "EXIT STATUS", "DIFFERENCES FROM PGQD 3.5")


def parse(lines):
    """Yield blocks: (kind, data)."""
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i].rstrip("\n")
        if not line.strip():
            i += 1
            continue
        if line.startswith("% "):
            yield ("title", line[2:].split())
            i += 1
        elif line.startswith("```"):
            body = []
            i += 1
            while i < n and not lines[i].startswith("```"):
                body.append(lines[i].rstrip("\n"))
                i += 1
            i += 1
            yield ("code", body)
        elif line.startswith("## "):
            yield ("h2", line[3:])
            i += 1
        elif line.startswith("# "):
            yield ("h1", line[2:])
            i += 1
        elif line.startswith("- "):
            items = []
            while i < n and lines[i].startswith("- "):
                item = [lines[i][2:].rstrip("\n")]
                i += 1
                while i < n and lines[i].startswith("  ") and lines[i].strip():
                    item.append(lines[i].strip())
                    i += 1
                items.append(" ".join(item))
            yield ("bullets", items)
        elif i + 1 < n and lines[i + 1].startswith(":   "):
            term = line
            body = []
            i += 1
            while i < n and (lines[i].startswith(":   ") or lines[i].startswith("    ")):
                body.append(lines[i][4:].rstrip("\n"))
                i += 1
            yield ("def", (term, " ".join(body)))
        else:
            para = []
            while i < n and lines[i].strip() and not lines[i].startswith(("#", "```", "- ")):
                if i + 1 < n and lines[i + 1].startswith(":   "):
                    break
                para.append(lines[i].strip())
                i += 1
            yield ("para", " ".join(para))


def roff_escape(s):
    s = s.replace("\\", "\\e")
    s = s.replace("-", "\\-")
    return s


def roff_inline(s):
    out = []
    pos = 0
    pat = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*]+)\*")
    for m in pat.finditer(s):
        out.append(roff_escape(s[pos:m.start()]))
        if m.group(1) is not None:
            out.append("\\fB" + roff_escape(m.group(1)) + "\\fR")
        elif m.group(2) is not None:
            out.append("\\fB" + roff_escape(m.group(2)) + "\\fR")
        else:
            out.append("\\fI" + roff_escape(m.group(3)) + "\\fR")
        pos = m.end()
    out.append(roff_escape(s[pos:]))
    text = "".join(out)
    # a line starting with . or ' would be a request
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def to_man(blocks, version):
    out = []
    for kind, data in blocks:
        if kind == "title":
            out.append('.TH %s %s "" "pgqd-ev %s" "pgqd-ev manual"' % (data[0], data[1], version))
        elif kind == "h1":
            out.append(".SH " + roff_escape(data))
        elif kind == "h2":
            out.append(".SS " + roff_escape(data))
        elif kind == "para":
            out.append(".PP")
            out.append(roff_inline(data))
        elif kind == "bullets":
            for item in data:
                out.append(".IP \\(bu 2")
                out.append(roff_inline(item))
        elif kind == "def":
            out.append(".TP")
            out.append(roff_inline(data[0]))
            out.append(roff_inline(data[1]))
        elif kind == "code":
            out.append(".PP")
            out.append(".RS 4")
            out.append(".nf")
            for line in data:
                out.append("\\&" + roff_escape(line))
            out.append(".fi")
            out.append(".RE")
    return "\n".join(out) + "\n"


def to_md(blocks):
    out = ["<!-- Generated from docs/pgqd-ev.8.md by docs/pgqd-ev.8-render.py;"
           " edit the source, then run `meson compile -C BUILD ticker-docs`. -->", "",
           "# pgqd-ev: configuration and operations", "",
           "This is the reference part of the man page pgqd-ev(8).", ""]
    keep = False
    for kind, data in blocks:
        if kind == "h1":
            keep = data in MD_SECTIONS
            if keep:
                out.append("## " + data.capitalize() if data != "DIFFERENCES FROM PGQD 3.5"
                           else "## Differences from pgqd 3.5")
                out.append("")
            continue
        if not keep:
            continue
        if kind == "h2":
            out.append("### " + data)
        elif kind == "para":
            out.append(data)
        elif kind == "bullets":
            out.extend("- " + item for item in data)
        elif kind == "def":
            out.append("- %s: %s" % (data[0], data[1]))
        elif kind == "code":
            out.append("```ini" if any(l.startswith("[") for l in data) else "```")
            out.extend(data)
            out.append("```")
        out.append("")
    # consecutive definition items form one list
    text = "\n".join(out)
    text = re.sub(r"\n(- [^\n]*)\n\n(?=- )", r"\n\1\n", text)
    while True:
        new = re.sub(r"\n(- [^\n]*)\n\n(?=- )", r"\n\1\n", text)
        if new == text:
            break
        text = new
    return text.rstrip("\n") + "\n"


README_BEGIN = "<!-- BEGIN configuration reference (generated; edit docs/pgqd-ev.8.md) -->"
README_END = "<!-- END configuration reference -->"


def to_readme(blocks, readme):
    """README with the reference between its markers, headings one level down."""
    body = []
    for line in to_md(blocks).splitlines():
        if line.startswith("<!--") or line.startswith("# "):
            continue
        body.append("#" + line if line.startswith("##") else line)
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    inner = "\n".join(body).strip("\n")
    return head + README_BEGIN + "\n" + inner + "\n" + README_END + tail


def main():
    mode = sys.argv[1]
    if mode == "man":
        version, src, dst = sys.argv[2:5]
    else:
        src, dst = sys.argv[2:4]
    with open(src, encoding="utf-8") as f:
        blocks = list(parse(f.readlines()))
    if mode == "man":
        text = to_man(blocks, version)
    elif mode == "readme":
        # dst is the README to read and the file to write (may differ, for the check)
        readme_in = sys.argv[4] if len(sys.argv) > 4 else dst
        with open(readme_in, encoding="utf-8") as f:
            text = to_readme(blocks, f.read())
    else:
        text = to_md(blocks)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
