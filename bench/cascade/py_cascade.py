#!/usr/bin/python3
"""python3-pgq's CascadedWorker as the anchor for bench/cascade/run.

  py_cascade.py CONNSTR QUEUE WORKER TARGET_TICK

Runs the worker of a branch node until its completed tick reaches TARGET_TICK
and prints "events=N seconds=S rate=R". The branch connection is put in
replica role (as Londiste's connection hook does): a branch queue refuses
inserts otherwise.
"""
import os
import shutil
import sys
import tempfile
import time

from pgq.cascade.worker import CascadedWorker


class Bench(CascadedWorker):
    def __init__(self, args, target):
        super().__init__('pgqev_cascade_bench', 'db', args)
        self.target = target
        self.done = False
        self.n = 0

    def connection_hook(self, dbname, conn):
        if dbname == 'db':
            curs = conn.cursor()
            curs.execute("set session_replication_role = 'replica'")
            conn.commit()

    def process_remote_event(self, src_curs, dst_curs, ev):
        # data events: copied by the worker itself, no handler work (as ours)
        self.n += 1
        if ev.ev_type[:4] == 'pgq.':
            super().process_remote_event(src_curs, dst_curs, ev)

    def finish_remote_batch(self, src_db, dst_db, tick_id):
        super().finish_remote_batch(src_db, dst_db, tick_id)
        if tick_id >= self.target:
            self.done = True


def main():
    connstr, queue, worker, target = sys.argv[1:5]
    tmp = tempfile.mkdtemp(prefix='pgqev-pyc-')
    try:
        ini = os.path.join(tmp, 'bench.ini')
        with open(ini, 'w') as f:
            f.write('[pgqev_cascade_bench]\njob_name = %s\ndb = %s\nqueue_name = %s\n'
                    'logfile = %s/log\npidfile = %s/pid\nloop_delay = 0.01\n'
                    % (worker, connstr, queue, tmp, tmp))
        w = Bench(['-q', ini], int(target))
        t0 = time.time()
        while not w.done:
            if not w.work():
                time.sleep(0.01)
        secs = time.time() - t0
        print('events=%d seconds=%.3f rate=%.0f' % (w.n, secs, w.n / secs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
