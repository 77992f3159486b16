#!/usr/bin/python3
"""python3-pgq's pgq.Consumer as the anchor for bench/consumer/run.

  py_consumer.py drain   CONNSTR QUEUE CONSUMER EXPECT
  py_consumer.py latency CONNSTR QUEUE CONSUMER SECONDS

drain: consume until EXPECT events were handled (no-op handler) and print
"events=N seconds=S rate=R". latency: events carry their send time (wall-clock
microseconds) as data; print "received=N p50_ms=.. p99_ms=.. max_ms=..".
Runs the Consumer's own work() loop, idling loop_delay (skytools default) when
there is no batch, exactly as a deployed pgq.Consumer would.
"""
import os
import shutil
import sys
import tempfile
import time

import pgq


class Bench(pgq.Consumer):
    def __init__(self, args):
        super().__init__('pgqev_bench', 'db', args)
        self.n = 0
        self.lat = []
        self.latency = False

    def process_batch(self, db, batch_id, ev_list):
        if self.latency:
            for ev in ev_list:
                self.lat.append(time.time() * 1e6 - int(ev.ev_data))
                self.n += 1
        else:
            for ev in ev_list:
                self.n += 1


def main():
    mode, connstr, queue, consumer, arg = sys.argv[1:6]
    tmp = tempfile.mkdtemp(prefix='pgqev-py-')
    try:
        run(mode, connstr, queue, consumer, arg, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(mode, connstr, queue, consumer, arg, tmp):
    ini = os.path.join(tmp, 'bench.ini')
    with open(ini, 'w') as f:
        f.write('[pgqev_bench]\njob_name = pgqev_bench\ndb = %s\nqueue_name = %s\n'
                'consumer_name = %s\nlogfile = %s/log\npidfile = %s/pid\n'
                % (connstr, queue, consumer, tmp, tmp))
    c = Bench(['-q', ini])
    if mode == 'drain':
        expect = int(arg)
        t0 = time.time()
        while c.n < expect:
            if not c.work():
                time.sleep(c.loop_delay)
        secs = time.time() - t0
        print('events=%d seconds=%.3f rate=%.0f' % (c.n, secs, c.n / secs))
    else:
        c.latency = True
        end = time.time() + float(arg)
        while time.time() < end:
            if not c.work():
                time.sleep(c.loop_delay)
        lat = sorted(c.lat)
        def pct(p):
            return lat[min(len(lat) - 1, int(len(lat) * p))] / 1000.0 if lat else -1
        print('received=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f'
              % (len(lat), pct(0.5), pct(0.99), pct(1.0) if lat else -1))


if __name__ == '__main__':
    main()
