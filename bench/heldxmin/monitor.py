#!/usr/bin/python3
"""Phases and samples of bench/heldxmin/run, over connections kept open.

  monitor.py CONNSTR WARMUP HOLD AFTER SAMPLE NCONS COUNTDIR CSV DB...

Warm-up for WARMUP s; then in every DB a REPEATABLE READ transaction takes a
transaction id and stays open HOLD s; then samples go on until every DB's event
tables are back to the largest size seen in the warm-up, or AFTER s passed.
Every SAMPLE s one CSV line per DB: t,db,phase,ev_bytes,tick_rows,tick_dead,
sub_dead,produced,consumed (consumed: events per consumer, from COUNTDIR).
Prints "normal_DB=SECONDS" (or "normal_DB=none") and "base_DB=BYTES" at the end.
"""
import glob
import sys
import time

import psycopg2

SAMPLE_SQL = """
select (select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c
          join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'pgq' and c.relkind = 'r' and c.relname ~ '^event_[0-9]+_[0-9]+$'),
       (select count(*) from pgq.tick),
       (select n_dead_tup from pg_stat_user_tables where schemaname = 'pgq' and relname = 'tick'),
       (select n_dead_tup from pg_stat_user_tables where schemaname = 'pgq' and relname = 'subscription'),
       (select last_value from pgq.event_1_id_seq)
"""


def consumed(countdir, db, ncons):
    n = 0
    for f in glob.glob("%s/cons.%s.*" % (countdir, db)):
        try:
            n += int(open(f).read().strip() or 0)
        except (OSError, ValueError):
            pass
    return n // ncons


def main():
    connstr = sys.argv[1]
    warmup, hold, after, sample = (float(x) for x in sys.argv[2:6])
    ncons = int(sys.argv[6])
    countdir, csv = sys.argv[7:9]
    dbs = sys.argv[9:]
    mon = {}
    for db in dbs:
        mon[db] = psycopg2.connect("%s dbname=%s" % (connstr, db))
        mon[db].autocommit = True
    held = {}
    base = {db: 0 for db in dbs}
    normal = {}
    out = open(csv, "w")
    out.write("t,db,phase,ev_bytes,tick_rows,tick_dead,sub_dead,produced,consumed\n")
    t0 = time.time()
    phase = "warmup"
    t_release = None
    while True:
        t = time.time() - t0
        if phase == "warmup" and t >= warmup:
            for db in dbs:
                h = psycopg2.connect("%s dbname=%s" % (connstr, db))
                h.set_session(isolation_level="REPEATABLE READ")
                cur = h.cursor()
                cur.execute("select txid_current()")
                cur.execute("select count(*) from pgq.queue")
                held[db] = h
            phase = "held"
            print("  %.0f s: transaction opened" % t, file=sys.stderr, flush=True)
        elif phase == "held" and t >= warmup + hold:
            for h in held.values():
                h.commit()
                h.close()
            t_release = time.time() - t0
            phase = "after"
            print("  %.0f s: transaction ended" % t_release, file=sys.stderr, flush=True)
        for db in dbs:
            cur = mon[db].cursor()
            cur.execute(SAMPLE_SQL)
            evb, ticks, tdead, sdead, seq = (v or 0 for v in cur.fetchone())
            out.write("%.1f,%s,%s,%d,%d,%d,%d,%d,%d\n" % (
                t, db, phase, evb, ticks, tdead, sdead, seq, consumed(countdir, db, ncons)))
            if phase == "warmup":
                base[db] = max(base[db], evb)
            elif phase == "after" and db not in normal and evb <= base[db]:
                normal[db] = t - t_release
        out.flush()
        if phase == "after" and (len(normal) == len(dbs) or t >= warmup + hold + after):
            break
        time.sleep(max(0.0, sample - (time.time() - t0 - t)))
    for db in dbs:
        print("normal_%s=%s" % (db, "%.0f" % normal[db] if db in normal else "none"))
        print("base_%s=%d" % (db, base[db]))


if __name__ == "__main__":
    main()
