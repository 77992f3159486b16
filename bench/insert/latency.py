#!/usr/bin/python3
"""End-to-end latency of a low_latency queue through the SQL wake-up path only:
producer commit -> NOTIFY "pgq.wake" -> a stand-in ticker runs pgq.ticker() ->
NOTIFY on the queue's tick channel -> a consumer takes the batch. Prints p50/p90/p99
in milliseconds. The ticker and consumer are tiny loops here (not pgqd-ev), so this
measures what the SQL side adds.

    latency.py "host=... port=... dbname=..." [EVENTS]
"""
import os, select, sys, threading, time

import psycopg2
import psycopg2.extensions

dsn = sys.argv[1]
n_events = int(sys.argv[2]) if len(sys.argv) > 2 else 200


def connect():
    c = psycopg2.connect(dsn)
    c.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    return c


setup = connect()
cur = setup.cursor()
cur.execute("select pgq.create_queue('lat')")
cur.execute("select pgq.set_queue_config('lat', 'low_latency', 'on')")
cur.execute("select pgq.register_consumer('lat', 'c')")
cur.execute("select pgq.queue_notify_channel('lat')")
channel = cur.fetchone()[0]
stop = False
received = {}


def ticker():
    c = connect()
    k = c.cursor()
    k.execute('listen "pgq.wake"')
    while not stop:
        if select.select([c], [], [], 0.2)[0]:
            c.poll()
            if c.notifies:
                c.notifies.clear()
                k.execute("select pgq.ticker()")


def consumer():
    c = connect()
    k = c.cursor()
    k.execute("listen %s" % psycopg2.extensions.quote_ident(channel, k))
    while not stop:
        if select.select([c], [], [], 0.2)[0]:
            c.poll()
            c.notifies.clear()
            while True:
                k.execute("select pgq.next_batch('lat', 'c')")
                b = k.fetchone()[0]
                if b is None:
                    break
                k.execute("select ev_data from pgq.get_batch_events(%s)", (b,))
                now = time.monotonic()
                for (d,) in k.fetchall():
                    received[d] = now
                k.execute("select pgq.finish_batch(%s)", (b,))


threads = [threading.Thread(target=ticker), threading.Thread(target=consumer)]
for t in threads:
    t.start()
time.sleep(0.5)
prod = connect()
pk = prod.cursor()
sent = {}
for i in range(n_events):
    key = str(i)
    sent[key] = time.monotonic()
    pk.execute("select pgq.insert_event('lat', 't', %s)", (key,))
    time.sleep(0.02)
deadline = time.monotonic() + 10
while len(received) < n_events and time.monotonic() < deadline:
    time.sleep(0.05)
stop = True
for t in threads:
    t.join()
lat = sorted((received[k] - sent[k]) * 1000 for k in sent if k in received)
if not lat:
    sys.exit("no events arrived")
pick = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print("low_latency end to end over %d events (%d arrived): p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms"
      % (n_events, len(lat), pick(0.5), pick(0.9), pick(0.99), lat[-1]))
