#!/usr/bin/env python3
"""Python oslo.messaging peer for the Rust-vs-Python performance comparison.

Rust tooling spawns this script (venv from requirements.txt, oslo.messaging
18.3.1) to run a Python RPC/notification server or load client against
RabbitMQ.  stdout carries JSON lines only, flushed after each; logging goes
to stderr at WARNING (DEBUG with --debug), minus oslo's per-publish
"Connection pool limit exceeded" warning (shown only with --debug).

Message shapes follow oslo.messaging's tools/simulator.py, so Rust and Python
clients and servers can be mixed freely:
  RPC:    ctxt {}, method "info",
          kwargs {"message": [seq, cargo, client_ts, null, null]};
          the server returns the list with index 3 set to its time.time().
  Notify: Notifier(publisher_id="publisher-<thread>", topics=[topic])
          .info({}, "compute.start", [seq, cargo, client_ts, null, null])
cargo is ONE random lowercase string of --payload-size bytes, reused.

Common options (after the command): --url URL (default
rabbit://guest:guest@127.0.0.1:5672/; rabbitrs://... for the Rust engine
driver), --exchange NAME (control_exchange, default openstack), --topic T
(default profiler_topic), --debug, --eventlet (monkey-patch, as eventlet
services do: client threads are green threads, servers use the eventlet
executor),
--rabbit KEY=VALUE ([oslo_messaging_rabbit] option, repeatable).

rpc-server [--server S (profiler_server)] [--count N] [--executor threading]
notify-server [--count N] [--pool P]
  Print {"event":"ready","pid":..}.  Every handled message is counted (RPC
  warmup messages too); after the N-th, print once
  {"event":"done","received":N,"first_ts":..,"last_ts":..} and keep serving.
  On SIGTERM/SIGINT/stdin EOF: stop()+wait(), print the same object with
  "event":"stopped", exit 0.  first_ts/last_ts: time.time() at the
  first/last handled message.

rpc-client [--server S] --calls N --concurrency C --payload-size B
           [--cast [--fanout]] [--timeout SECS (60)] [--warmup K (0)]
notify-client --count N --concurrency C --payload-size B
              [--driver messaging|messagingv2 (messaging)]
  K sequential uncounted warmup ops (rpc-client), then C threads take seqs
  from a shared counter until N ops are taken.  Latency: call() round trip
  or time spent in cast()/notifier.info().  Errors are counted by exception
  class name.  Prints one line, then exits 0:
  {"mode":"rpc-client","impl":"python","cast":..,"fanout":..,"calls":N,
   "ok":..,"errors":..,"error_kinds":{name:count},"concurrency":C,
   "payload_size":B,"start_ts":..,"end_ts":..,"duration_s":..,
   "throughput":ok/duration_s,"latency_ms":{"p50","p90","p99","max","mean"}}
  notify-client: "mode":"notify-client", "driver" instead of cast/fanout,
  "sent" instead of "calls".  Nearest-rank percentiles over successful ops,
  all null if none.
"""
import sys
import warnings

# oslo.service imports eventlet, which warns loudly on import; keep stderr quiet.
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
warnings.filterwarnings('ignore', message=r"Using the 'executor' argument")

# --eventlet: run as monkey-patched services (and oslo's functional tests) do, everything in
# green threads on one OS thread. The patching must come before anything else is imported.
GREEN = '--eventlet' in sys.argv[1:]
if GREEN:
    import eventlet
    eventlet.monkey_patch()

import argparse  # noqa: E402
import json
import logging
import math
import os
import random
import signal
import string
import threading
import time

from oslo_config import cfg
import oslo_messaging
from oslo_messaging import _metrics
from oslo_messaging import _tracing
from oslo_messaging import opts as msg_opts

DEFAULT_URL = 'rabbit://guest:guest@127.0.0.1:5672/'
PRIORITIES = ('audit', 'debug', 'info', 'warn', 'error', 'critical', 'sample')
LOG = logging.getLogger('bench_peer')
_out_lock = threading.Lock()


def emit(obj):
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + '\n')
        sys.stdout.flush()


def build_conf(args):
    """Fresh ConfigOpts with the oslo.messaging options registered (18.3.1
    registers the metrics/tracing groups on the global cfg.CONF only, yet
    reads them from the transport's conf)."""
    conf = cfg.ConfigOpts()
    conf(args=[], project='bench_peer')
    for group, opts in msg_opts.list_opts():
        conf.register_opts(opts, group=group)
    conf.register_opts(_metrics.client.oslo_messaging_metrics,
                       group='oslo_messaging_metrics')
    conf.register_opts(_tracing.client.oslo_messaging_tracing,
                       group='oslo_messaging_tracing')
    conf.set_override('control_exchange', args.exchange)
    for pair in args.rabbit:
        key, sep, value = pair.partition('=')
        if not sep:
            raise SystemExit(f'--rabbit expects KEY=VALUE, got {pair!r}')
        conf.set_override(key.strip(), value, group='oslo_messaging_rabbit')
    return conf


# ------------------------------------------------------------------ servers

class Counter:
    """Thread-safe count of handled messages; emits "done" at the target."""

    def __init__(self, target):
        self.target, self.n, self.lock = target, 0, threading.Lock()
        self.first_ts = self.last_ts = None

    def hit(self):
        now = time.time()
        with self.lock:
            self.n += 1
            if self.first_ts is None:
                self.first_ts = now
            self.last_ts = now
            if self.n == self.target:
                emit(self.summary('done'))
        return now

    def summary(self, event):
        return {'event': event, 'received': self.n,
                'first_ts': self.first_ts, 'last_ts': self.last_ts}


class RpcEndpoint:
    def __init__(self, counter):
        self.counter = counter

    def info(self, ctxt, message):
        now = self.counter.hit()
        if isinstance(message, list) and len(message) >= 4:
            message[3] = now
        return message


class NotifyEndpoint:
    def __init__(self, counter):
        def handler(ctxt, publisher_id, event_type, payload, metadata):
            counter.hit()
        for prio in PRIORITIES:
            setattr(self, prio, handler)


def serve(transport, server, counter):
    """Run server until SIGTERM/SIGINT or stdin EOF."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def drain_stdin():
        if GREEN:
            # A plain read would block the hub: wait for the pipe through it.
            from eventlet import hubs
            fd = sys.stdin.fileno()
            try:
                while True:
                    hubs.trampoline(fd, read=True)
                    if not os.read(fd, 65536):
                        break
            except OSError:
                return  # not a pipe (/dev/null): signals stop the server
        else:
            for _ in sys.stdin:
                pass
        stop.set()

    threading.Thread(target=drain_stdin, daemon=True).start()
    server.start()
    emit({'event': 'ready', 'pid': os.getpid()})
    while not stop.wait(0.2):
        pass
    server.stop()
    server.wait()
    emit(counter.summary('stopped'))
    transport.cleanup()


def cmd_rpc_server(args, conf):
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    counter = Counter(args.count)
    target = oslo_messaging.Target(topic=args.topic, server=args.server)
    serve(transport, oslo_messaging.get_rpc_server(
        transport, target, [RpcEndpoint(counter)], executor=args.executor),
        counter)


def cmd_notify_server(args, conf):
    transport = oslo_messaging.get_notification_transport(conf, url=args.url)
    counter = Counter(args.count)
    targets = [oslo_messaging.Target(topic=args.topic)]
    serve(transport, oslo_messaging.get_notification_listener(
        transport, targets, [NotifyEndpoint(counter)],
        executor='eventlet' if GREEN else 'threading',
        pool=args.pool), counter)


# ------------------------------------------------------------------ clients

def run_load(total, concurrency, op_for_thread):
    """C threads share `total` ops; thread i runs op_for_thread(i)(seq).
    Returns (t0, t1, latencies in seconds, {error class name: count})."""
    seqs, lock = iter(range(total)), threading.Lock()
    latencies, errors = [], {}

    def worker(i):
        op = op_for_thread(i)
        mine, my_errors = [], {}
        while True:
            with lock:
                seq = next(seqs, None)
            if seq is None:
                break
            start = time.perf_counter()
            try:
                op(seq)
            except Exception as exc:
                LOG.debug('op %d failed', seq, exc_info=True)
                name = type(exc).__name__
                my_errors[name] = my_errors.get(name, 0) + 1
                continue
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)
            for name, n in my_errors.items():
                errors[name] = errors.get(name, 0) + n

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(concurrency)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return t0, time.time(), latencies, errors


def report(args, fields, t0, t1, latencies, errors):
    lat = sorted(x * 1000.0 for x in latencies)

    def pct(p):  # nearest rank
        return lat[max(1, math.ceil(p / 100.0 * len(lat))) - 1]

    stats = dict.fromkeys(('p50', 'p90', 'p99', 'max', 'mean'))
    if lat:
        stats = {'p50': pct(50), 'p90': pct(90), 'p99': pct(99),
                 'max': lat[-1], 'mean': sum(lat) / len(lat)}
    duration = t1 - t0
    emit({**fields, 'ok': len(lat), 'errors': sum(errors.values()),
          'error_kinds': errors, 'concurrency': args.concurrency,
          'payload_size': args.payload_size, 'start_ts': t0, 'end_ts': t1,
          'duration_s': duration,
          'throughput': len(lat) / duration if duration > 0 else None,
          'latency_ms': stats})


def make_cargo(size):
    return ''.join(random.choices(string.ascii_lowercase, k=size))


def cmd_rpc_client(args, conf):
    cargo = make_cargo(args.payload_size)
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    target = oslo_messaging.Target(topic=args.topic, server=args.server)
    client = oslo_messaging.get_rpc_client(transport, target,
                                           timeout=args.timeout)
    if args.fanout:
        client = client.prepare(fanout=True)
    send = client.cast if args.cast else client.call

    def op(seq):
        send({}, 'info', message=[seq, cargo, time.time(), None, None])

    for i in range(args.warmup):
        try:
            op(-1 - i)
        except Exception as exc:
            LOG.warning('warmup op failed: %r', exc)
    t0, t1, lat, errors = run_load(args.calls, args.concurrency,
                                   lambda i: op)
    report(args, {'mode': 'rpc-client', 'impl': 'python', 'cast': args.cast,
                  'fanout': args.fanout, 'calls': args.calls},
           t0, t1, lat, errors)
    transport.cleanup()


def cmd_notify_client(args, conf):
    cargo = make_cargo(args.payload_size)
    transport = oslo_messaging.get_notification_transport(conf, url=args.url)
    notifiers = [oslo_messaging.Notifier(
        transport, publisher_id=f'publisher-{i}', driver=args.driver,
        topics=[args.topic]) for i in range(args.concurrency)]

    def op_for_thread(i):
        info = notifiers[i].info
        return lambda seq: info({}, 'compute.start',
                                [seq, cargo, time.time(), None, None])

    t0, t1, lat, errors = run_load(args.count, args.concurrency,
                                   op_for_thread)
    report(args, {'mode': 'notify-client', 'impl': 'python',
                  'driver': args.driver, 'sent': args.count},
           t0, t1, lat, errors)
    transport.cleanup()


# --------------------------------------------------------------------- main

def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--url', default=DEFAULT_URL)
    common.add_argument('--exchange', default='openstack')
    common.add_argument('--topic', default='profiler_topic')
    common.add_argument('--debug', action='store_true')
    common.add_argument('--eventlet', action='store_true',
                        help='monkey-patch with eventlet; servers use its executor')
    common.add_argument('--rabbit', action='append', default=[],
                        metavar='KEY=VALUE',
                        help='[oslo_messaging_rabbit] option (repeatable)')
    load = argparse.ArgumentParser(add_help=False)
    load.add_argument('--concurrency', type=int, required=True)
    load.add_argument('--payload-size', type=int, required=True)

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('rpc-server', parents=[common])
    p.add_argument('--server', default='profiler_server')
    p.add_argument('--count', type=int, default=0)
    p.add_argument('--executor', default='eventlet' if GREEN else 'threading',
                   choices=['threading', 'eventlet'])
    p.set_defaults(func=cmd_rpc_server)

    p = sub.add_parser('notify-server', parents=[common])
    p.add_argument('--count', type=int, default=0)
    p.add_argument('--pool')
    p.set_defaults(func=cmd_notify_server)

    p = sub.add_parser('rpc-client', parents=[common, load])
    p.add_argument('--server')
    p.add_argument('--calls', type=int, required=True)
    p.add_argument('--cast', action='store_true')
    p.add_argument('--fanout', action='store_true')
    p.add_argument('--timeout', type=float, default=60.0)
    p.add_argument('--warmup', type=int, default=0)
    p.set_defaults(func=cmd_rpc_client)

    p = sub.add_parser('notify-client', parents=[common, load])
    p.add_argument('--count', type=int, required=True)
    p.add_argument('--driver', default='messaging',
                   choices=['messaging', 'messagingv2'])
    p.set_defaults(func=cmd_notify_client)
    args = parser.parse_args(argv)
    if getattr(args, 'fanout', False) and not args.cast:
        parser.error('--fanout requires --cast')
    return args


def main():
    args = parse_args(sys.argv[1:])
    logging.basicConfig(stream=sys.stderr,
                        level=logging.DEBUG if args.debug else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    if not args.debug:
        # With more than rpc_conn_pool_size (30) sending threads, oslo logs
        # one WARNING per publish that waits for a pooled connection: MBs of
        # stderr that would cost CPU and could fill an undrained pipe.
        logging.getLogger('oslo.messaging._drivers.pool').setLevel(
            logging.ERROR)
    args.func(args, build_conf(args))
    return 0


if __name__ == '__main__':
    sys.exit(main())
