#!/usr/bin/python3
"""Producer for bench/cascade/switchover: RATE events/s into the cascade's root.

  switch_producer.py QUEUE SECONDS RATE CONNSTR...

Writes 10 events per transaction to the first node that takes them (the
application's part of a switchover: on "Insert into queue disallowed" or a lost
connection it tries the next node), for SECONDS seconds, then prints
"events=N max_gap=S" where max_gap is the longest time between two committed
transactions (the write pause a producer saw) and, per node, how many it took.
"""
import sys
import time

import psycopg2

queue, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
nodes = sys.argv[4:]
per_tx = 10
period = per_tx / rate
conns = [None] * len(nodes)
cur, seq, last_ok, max_gap = 0, 0, None, 0.0
taken = [0] * len(nodes)
end = time.monotonic() + seconds
next_at = time.monotonic()
while time.monotonic() < end:
    for k in range(len(nodes)):
        i = (cur + k) % len(nodes)
        try:
            if conns[i] is None:
                conns[i] = psycopg2.connect(nodes[i], connect_timeout=2)
            c = conns[i].cursor()
            c.execute("select count(pgq.insert_event(%s, 'data', s::text))"
                      " from generate_series(%s, %s) s", (queue, seq, seq + per_tx - 1))
            conns[i].commit()
        except psycopg2.Error:
            try:
                conns[i].rollback()
            except Exception:
                conns[i] = None
            continue
        now = time.monotonic()
        if last_ok is not None:
            max_gap = max(max_gap, now - last_ok)
        last_ok, cur = now, i
        seq += per_tx
        taken[i] += per_tx
        break
    next_at += period
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        next_at = time.monotonic()
print("events=%d max_gap=%.3f taken=%s" % (seq, max_gap, ",".join(str(t) for t in taken)))
