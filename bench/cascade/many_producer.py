#!/usr/bin/python3
"""Producer for bench/cascade/many: one persistent session per root database,
RATE events/s in total spread over the roots, 10 events per transaction, until
killed. Persistent sessions, so the producer opens no connection in steady state.

  many_producer.py CONNSTR_PREFIX QUEUE RATE COUNT_FILE DB...

COUNT_FILE gets the number of events committed so far, once a second.
"""
import os
import sys
import time

import psycopg2


def main():
    prefix, queue, rate, count_file = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    dbs = sys.argv[5:]
    conns = []
    for db in dbs:
        c = psycopg2.connect('%s dbname=%s application_name=bench-producer' % (prefix, db))
        c.autocommit = False
        conns.append(c)
    with open(count_file, 'w') as f:  # every session open: the script may go on
        f.write('0\n')
    per_tx = 10
    period = per_tx / rate  # seconds between two transactions (over all roots)
    nxt = last_report = time.monotonic()
    i = 0
    while True:
        c = conns[i % len(conns)]
        cur = c.cursor()
        cur.execute("select pgq.insert_event(%s, 'bench', 'payload ' || g::text)"
                    " from generate_series(1, %s) g", (queue, per_tx))
        c.commit()
        i += 1
        now = time.monotonic()
        if now - last_report >= 1:
            with open(count_file + '.tmp', 'w') as f:
                f.write('%d\n' % (i * per_tx))
            os.replace(count_file + '.tmp', count_file)
            last_report = now
        nxt += period
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)


if __name__ == '__main__':
    main()
