#!/usr/bin/python3
"""A plain PgQ consumer loop for bench/heldxmin/run (the same on both SQLs).

  consumer.py CONNSTR QUEUE CONSUMER COUNTFILE SECONDS

next_batch / get_batch_events / finish_batch in autocommit-per-batch
transactions through psycopg2 (python3-pgq's driver), 0.1 s idle sleep when no
batch is ready; rewrites COUNTFILE with the number of events consumed so far
about every 0.5 s, and exits after SECONDS.
"""
import os
import sys
import time

import psycopg2


def main():
    connstr, queue, consumer, countfile, seconds = sys.argv[1:6]
    end = time.time() + float(seconds)
    db = psycopg2.connect(connstr)
    cur = db.cursor()
    n = 0
    last = 0.0
    while time.time() < end:
        cur.execute("select pgq.next_batch(%s, %s)", (queue, consumer))
        bid = cur.fetchone()[0]
        if bid is None:
            db.commit()
            time.sleep(0.1)
        else:
            cur.execute("select count(*) from pgq.get_batch_events(%s)", (bid,))
            n += cur.fetchone()[0]
            cur.execute("select pgq.finish_batch(%s)", (bid,))
            db.commit()
        if time.time() - last > 0.5:
            last = time.time()
            with open(countfile + ".tmp", "w") as f:
                f.write("%d\n" % n)
            os.replace(countfile + ".tmp", countfile)
    with open(countfile, "w") as f:
        f.write("%d\n" % n)


if __name__ == "__main__":
    main()
