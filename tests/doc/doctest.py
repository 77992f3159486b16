#!/usr/bin/env python3
"""Run the shell examples of README.md and docs/*.md against a private server.

Every fenced block whose language is sh, bash, shell or console is either
marked as tested (```sh doctest) and run here, or listed in SKIP below with the
reason it cannot run in a test; an unmarked, unlisted block fails, so no new
example escapes. A tested block must be self-contained: it runs with bash -e
-o pipefail in a fresh working directory whose build/, conf/ and examples/ are
this build and source tree, with the built pgqd-ev and pgqctl first on PATH,
PGHOST/PGUSER pointing at a private server (a copy of the tests' template
cluster), and fresh empty databases app and mydb. Processes it leaves in the
background are killed with its process group when it ends. TAP output.

    doctest.py SRCDIR BUILDDIR     (env PGQD_TEST_TEMPLATE, from meson test)
"""
import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile

# (file, first line of the block) -> why it is not run
SKIP = {
    ("README.md", "scripts/quickstart        # a private PostgreSQL, the queue, the ticker, a producer and a consumer; Ctrl-C stops and cleans up"):
        "runs until Ctrl-C and scripts/test is this test suite itself; CI runs scripts/test",
    ("README.md", "meson setup build                       # --prefix=/usr/local is the default"):
        "builds and installs into the system; this runner checks the installed paths the README lists against meson install --destdir",
    ("README.md", "scripts/package                          # packages in build-package/; lintian must be clean"):
        "installs into the system with apt and systemd; tests/package builds the same packages and runs them from a throwaway root",
    ("README.md", "createdb app"):
        "starts the system's service with systemctl; tests/package checks the unit with systemd-analyze verify and runs the packaged daemon",
    ("docs/consumer.md", "cc app.c $(pkg-config --cflags --libs libpgqev)"):
        "compiles the reader's own app.c; tests/package builds a consumer with the same pkg-config command against the packaged library",
    ("docs/cascade.md", 'pgqctl -d "host=db1 dbname=orders user=pgq" node create-root n1 --queue orders'):
        "needs three database hosts; tests/pgqctl/check_pgqctl_node.c runs the same node commands on one server",
    ("docs/cascade.md", 'pgqctl -d "host=db9 dbname=all user=pgq" node create-root all --queue orders_all'):
        "needs three database hosts; tests/pgqctl/check_pgqctl_node.c builds a merge leaf with create-leaf --merge on one server",
}
LANGS = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^```(\S*)(.*)$")


def blocks(src):
    files = ["README.md"] + sorted(os.path.relpath(p, src) for p in glob.glob(os.path.join(src, "docs", "*.md")))
    for rel in files:
        with open(os.path.join(src, rel), encoding="utf-8") as f:
            lines = f.read().split("\n")
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            lang, info = m.group(1), m.group(2).split()
            start = i + 1
            j = start
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if lang in LANGS:
                body = lines[start:j]
                first = next((ln for ln in body if ln.strip()), "")
                yield rel, start, "doctest" in info, first, "\n".join(body) + "\n"
            i = j + 1


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def main():
    src, build = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    tpl = os.environ.get("PGQD_TEST_TEMPLATE", "")
    pgbin = tpl + "-pg/bin"
    # made by the setup suite; made here when this test runs alone (idempotent, locked)
    mk, bindir = os.environ.get("PGQD_TEST_MKTEMPLATE"), os.environ.get("PGQD_TEST_PG_BINDIR", "")
    if mk and tpl and os.path.exists(os.path.join(bindir, "postgres")):
        subprocess.run([mk, tpl, bindir] + os.environ.get("PGQD_TEST_SQL", "").split(":"),
                       stdout=subprocess.DEVNULL)
    if not os.path.exists(os.path.join(tpl, "data")) or not os.path.exists(pgbin + "/postgres"):
        msg = "no template cluster at '%s' (the setup suite makes it)" % tpl
        if os.environ.get("CI") or os.environ.get("PGQD_TEST_REQUIRE_PG"):
            print("1..1\nnot ok 1 - " + msg)
            return 1
        print("1..0 # SKIP " + msg)
        return 0
    found = list(blocks(src))
    tested = [b for b in found if b[2]]
    skipped = [b for b in found if not b[2] and (b[0], b[3]) in SKIP]
    unlisted = [b for b in found if not b[2] and (b[0], b[3]) not in SKIP]
    stale = [k for k in SKIP if not any((b[0], b[3]) == k for b in found)]

    tmp = tempfile.mkdtemp(prefix="pgqd-ev-doctest.")
    os.chmod(tmp, 0o755)
    root = os.getuid() == 0
    as_pg = ["runuser", "-u", "postgres", "--"] if root else []
    data, sock = os.path.join(tmp, "data"), os.path.join(tmp, "sock")
    shutil.copytree(os.path.join(tpl, "data"), data, symlinks=True)
    os.mkdir(sock)
    if root:
        pg = pwd.getpwnam("postgres")
        for d in (data, sock):
            for dirpath, _, names in os.walk(d):
                os.chown(dirpath, pg.pw_uid, pg.pw_gid)
                for n in names:
                    os.lchown(os.path.join(dirpath, n), pg.pw_uid, pg.pw_gid)
    n, failed = 0, 0
    try:
        run(as_pg + [pgbin + "/pg_ctl", "-D", data, "-l", os.path.join(sock, "log"), "-w", "-t", "60",
                     "-o", "-k %s -c listen_addresses='' -p 5432" % sock, "start"])
        env = dict(os.environ, PGHOST=sock, PGPORT="5432", PGUSER="postgres",
                   PATH="%s/src/ticker:%s/src/pgqctl:%s" % (build, build, os.environ["PATH"]),
                   PGQCTL_SQLDIR=os.path.join(build, "sql"),
                   PKG_CONFIG_PATH=os.path.join(build, "meson-uninstalled"))
        for k in ("PGDATABASE", "PGQCTL_DB", "PGQD_EV_CONNSTR"):
            env.pop(k, None)
        plan = len(tested) + 2
        print("1..%d" % plan)
        n += 1
        if unlisted or stale:
            failed += 1
            print("not ok %d - every shell block is tested or in the skip list" % n)
            for b in unlisted:
                print("# %s:%d: neither ```sh doctest nor in SKIP: %s" % (b[0], b[1], b[3]))
            for k in stale:
                print("# SKIP entry matches no block: %s: %s" % k)
        else:
            print("ok %d - every shell block is tested (%d) or in the skip list (%d)" % (n, len(tested), len(skipped)))
        for b in skipped:
            print("# not run, %s:%d: %s" % (b[0], b[1], SKIP[(b[0], b[3])]))
        n += 1
        why = check_install_paths(src, build, tmp)
        if why:
            failed += 1
            print("not ok %d - README's installed paths are what meson install installs\n# %s" % (n, why.replace("\n", "\n# ")))
        else:
            print("ok %d - README's installed paths are what meson install --destdir installs" % n)
        for rel, line, _, first, body in tested:
            n += 1
            psql = ["psql", "-X", "-q", "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
            for db in ("app", "mydb"):
                run(psql + ["-c", "drop database if exists %s with (force)" % db, "-c",
                            "create database %s template template0" % db], env=env)
            work = tempfile.mkdtemp(dir=tmp)
            for name, target in (("build", build), ("conf", src + "/conf"), ("examples", src + "/examples")):
                os.symlink(target, os.path.join(work, name))
            # output to a file, not a pipe: a daemon the block left in the
            # background keeps its stdout open
            logpath = os.path.join(work, ".output")
            with open(logpath, "w") as log:
                p = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", body], cwd=work, env=env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    rc = p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    rc = "timeout (60 s)"
            try:
                os.killpg(p.pid, signal.SIGKILL if rc != 0 else signal.SIGTERM)  # what it left running
            except ProcessLookupError:
                pass
            p.wait()
            with open(logpath) as f:
                out = f.read()
            if rc == 0:
                print("ok %d - %s:%d: %s" % (n, rel, line, first.strip()))
            else:
                failed += 1
                print("not ok %d - %s:%d: %s (exit %s)" % (n, rel, line, first.strip(), rc))
                print("# " + out.rstrip().replace("\n", "\n# "))
    finally:
        subprocess.run(as_pg + [pgbin + "/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print("# doc examples: %d run, %d not run (listed), %d failed" % (len(tested), len(skipped), failed))
    return 1 if failed else 0


def check_install_paths(src, build, tmp):
    """Every path README's install table names is installed, and every installed
    file is under one of them."""
    with open(os.path.join(src, "README.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"<!-- installed paths -->\n(.*?)<!-- /installed paths -->", text, re.S)
    if not m:
        return "no '<!-- installed paths -->' table in README.md"
    named = re.findall(r"^\| `([^`]+)`", m.group(1), re.M)
    dest = os.path.join(tmp, "destdir")
    r = subprocess.run(["meson", "install", "-C", build, "--no-rebuild", "--destdir", dest],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return "meson install --destdir failed:\n" + r.stdout[-2000:] + r.stderr[-2000:]
    opts = {o["name"]: o["value"] for o in json.loads(run(["meson", "introspect", "--buildoptions", build]).stdout)}
    pfx = opts["prefix"]

    def sysdir(option, query):
        v = opts.get(option, "auto")
        return v if v != "auto" else run(query).stdout.strip()
    subst = {
        "LIBDIR": os.path.join(pfx, opts["libdir"]),
        "PGSHAREDIR": sysdir("pg_extdir", ["pg_config", "--sharedir"]),
        "SYSTEMDUNITDIR": sysdir("systemdsystemunitdir", ["pkg-config", "--variable=systemdsystemunitdir", "systemd"]),
        "SYSUSERSDIR": sysdir("sysusersdir", ["pkg-config", "--variable=sysusersdir", "systemd"]),
        "PREFIX": pfx,
    }
    if opts.get("pg_extdir", "auto") != "auto":
        subst["PGSHAREDIR"] = os.path.dirname(subst["PGSHAREDIR"])
    installed = []
    for dirpath, _, names in os.walk(dest):
        for nm in names:
            installed.append("/" + os.path.relpath(os.path.join(dirpath, nm), dest))
    resolved = []
    for p in named:
        for k, v in subst.items():
            p = p.replace(k, v)
        resolved.append(p)
    problems = []
    for p, r_ in zip(named, resolved):
        if not any(f == r_ or f.startswith(r_.rstrip("/") + "/") or re.fullmatch(r_.replace(".", r"\.").replace("*", "[^/]*"), f)
                   for f in installed):
            problems.append("named but not installed: " + p)
    for f in installed:
        if not any(f == r_ or f.startswith(r_.rstrip("/") + "/") or re.fullmatch(r_.replace(".", r"\.").replace("*", "[^/]*"), f)
                   for r_ in resolved):
            problems.append("installed but not in README's table: " + f)
    return "\n".join(problems)


if __name__ == "__main__":
    sys.exit(main())
