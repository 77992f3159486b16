#!/usr/bin/python3
"""Where a branch batch's time goes (bench/cascade/latency with STATLOG=1).

Reads the server log written with log_min_duration_statement = 0 and
log_line_prefix '%m [%p] %d %a ' and prints, for the branch worker's two
sessions (its local node `br`: the backend that runs pgq_node.get_node_info
there; its provider `root`: the pgqev-cascade backend there), each statement
kind with its count per branch batch and its mean server time, plus the
transactions per batch (each autocommit statement counts as one). Load-independent figures: the
statements and commits per batch; the times move with the load.

    statlog.py LOG
"""
import re
import sys
from collections import defaultdict

log = sys.argv[1]
line_re = re.compile(r'^\S+ \S+ \S+ \[(\d+)\] (\S*) (\S*) LOG:  duration: ([0-9.]+) ms  '
                     r'(statement|execute|bind|parse)[^:]*: (.*)$')
stmts = defaultdict(list)  # pid -> [(ms, sql)]
dbof, appof = {}, {}
cur = None
with open(log, errors='replace') as f:
    for line in f:
        m = line_re.match(line)
        if m:
            pid, db, app, ms, phase, sql = m.groups()
            dbof[pid], appof[pid] = db, app
            # parse and bind are counted in the time of the statement they
            # belong to, not as statements
            stmts[pid].append([float(ms), sql, phase in ('statement', 'execute')])
            cur = stmts[pid][-1]
        elif cur is not None and (line.startswith('\t') or line.startswith(' ')):
            cur[1] += ' ' + line.strip()
        else:
            cur = None


def role(pid):
    if appof[pid] != 'pgqev-cascade':
        return None
    if dbof[pid] == 'root':
        return 'provider (root)'
    if dbof[pid] == 'br' and any('get_node_info' in s for _, s, _ in stmts[pid]):
        return 'local (br)'
    return None


def kind(sql):
    s = re.sub(r'\s+', ' ', sql.strip().lower())
    for key in ('get_node_info', 'get_consumer_state', 'next_batch_info', 'get_batch_cursor',
                'batch_event_sql', 'set_consumer_completed', 'finish_batch', 'set_subscriber_watermark',
                'current_event_table', 'pgq.ticker', 'set_global_watermark', 'queue_notify_channel'):
        if key in s:
            return key
    if s.startswith('copy'):
        return 'copy'
    if s.startswith('fetch'):
        return 'fetch'
    return s[:40]


rows = defaultdict(lambda: [0, 0.0])
xacts = defaultdict(int)
for pid in stmts:
    r = role(pid)
    if not r:
        continue
    in_tx = False
    for ms, sql, counted in stmts[pid]:
        k = (r, kind(sql))
        rows[k][0] += counted
        rows[k][1] += ms
        if not counted:
            continue
        s = sql.strip().lower()
        if s.startswith('begin'):
            in_tx = True
        if s.startswith('commit') or s.startswith('rollback') or not in_tx:
            xacts[r] += 1
            in_tx = False
# a batch: one set_consumer_completed of the branch worker
batches = max(rows[('local (br)', 'set_consumer_completed')][0], 1)
print(f"Branch worker statements per branch batch ({batches} batches):")
print("| session | statement | per batch | mean ms |")
print("| --- | --- | ---: | ---: |")
tot = defaultdict(lambda: [0, 0.0])
for (r, k), (n, ms) in sorted(rows.items()):
    print(f"| {r} | {k} | {n / batches:.2f} | {ms / max(n, 1):.3f} |")
    tot[r][0] += n
    tot[r][1] += ms
for r, (n, ms) in sorted(tot.items()):
    print(f"| {r} | all | {n / batches:.2f} | {ms / batches:.3f} per batch |")
for r, n in sorted(xacts.items()):
    print(f"{r}: {n / batches:.2f} transactions per batch")
