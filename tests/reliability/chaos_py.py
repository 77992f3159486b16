#!/usr/bin/python3
"""python3-pgq's pgq.Consumer as an outside witness for the fault-injection test.

  chaos_py.py CONNSTR QUEUE CONSUMER OUTFILE

Runs the Consumer's own work() loop; each batch is recorded ("B queue batch",
then "G queue uid batch retry_count" per event) in one append before the batch
is finished, the same format as chaos_worker. On a database error the
connections are reset and the loop goes on, as a supervised deployment would.
Ends on SIGTERM after the batch in progress.
"""
import os
import shutil
import signal
import sys
import tempfile
import time

import pgq

stop = False


def on_term(signo, frame):
    global stop
    stop = True


class Witness(pgq.Consumer):
    def __init__(self, args, out):
        super().__init__('chaos_witness', 'db', args)
        self.out = out

    def process_batch(self, db, batch_id, ev_list):
        lines = ['B %s %d\n' % (self.queue_name, batch_id)]
        for ev in ev_list:
            lines.append('G %s %s %d %d\n' % (self.queue_name, ev.ev_data, batch_id,
                                              ev.ev_retry or 0))
        os.write(self.out, ''.join(lines).encode())


def main():
    connstr, queue, consumer, outfile = sys.argv[1:5]
    signal.signal(signal.SIGTERM, on_term)
    # beside outfile, in the test's own directory: the chaos kills this process
    # with SIGKILL too, and then the finally below does not run
    tmp = tempfile.mkdtemp(prefix='witness-', dir=os.path.dirname(os.path.abspath(outfile)))
    out = os.open(outfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        ini = os.path.join(tmp, 'witness.ini')
        with open(ini, 'w') as f:
            f.write('[chaos_witness]\njob_name = chaos_witness\ndb = %s\nqueue_name = %s\n'
                    'consumer_name = %s\nlogfile = %s/log\npidfile = %s/pid\n'
                    'loop_delay = 0.2\n' % (connstr, queue, consumer, tmp, tmp))
        c = Witness(['-q', ini], out)
        while not stop:
            try:
                if not c.work():
                    time.sleep(c.loop_delay)
            except Exception as e:  # the server went away, a backend was terminated
                sys.stderr.write('%.3f error: %s\n' % (time.time(), str(e).strip()))
                sys.stderr.flush()
                try:
                    c.reset()
                except Exception:  # closing a connection that is already gone
                    pass
                time.sleep(0.1)
    finally:
        os.close(out)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
