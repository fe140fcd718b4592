#!/usr/bin/env python3
"""Python oslo.messaging peer for the Rust interop test suite.

The Rust integration tests spawn this script (with the venv built from
requirements.txt, oslo.messaging 18.3.1) to play a real Python RPC server,
RPC client, notifier or notification listener against a RabbitMQ broker.

Protocol: JSON lines on stdin/stdout, one object per line, stdout flushed
after every line.  Logging goes to stderr (WARNING, or DEBUG with --debug).

Common options (given after the command name):
  --url URL            transport URL (default rabbit://guest:guest@127.0.0.1:5672/)
  --exchange NAME      control_exchange (default "openstack")
  --rabbit KEY=VALUE   [oslo_messaging_rabbit] option, repeatable
  --default KEY=VALUE  [DEFAULT] option, repeatable (e.g. rpc_response_timeout)
  --tracing KEY=VALUE  [oslo_messaging_tracing] option, repeatable (spans are
                       exported when the process exits, by the SDK's atexit)
  --metrics KEY=VALUE  [oslo_messaging_metrics] option, repeatable
  --allowed-remote-exmod MOD  module whose remote exceptions a client may
                       rebuild (e.g. peer_errors), repeatable
  --debug              DEBUG logging on stderr
  --eventlet           monkey-patch with eventlet first, as eventlet services
                       do: everything runs in green threads on one OS thread,
                       servers and listeners use the eventlet executor, and
                       stdin is read through the hub

rpc-server --topic T --server S [--executor threading|eventlet] [--ping]
  Endpoint A (version 1.0): echo(data) -> data; context() -> ctxt dict as
  received; fail(message, exc_class='ValueError') raises builtins.<exc_class>
  or peer_errors.<exc_class>; sleep(seconds) -> seconds; record(value) prints
  {"event":"record","server":S,"value":...,"context":...} and returns S;
  whoami() -> S; relay(to_topic, to_method, to_args) calls to_method on
  to_topic with the same context and returns its result.  Endpoint B (namespace "ns", version 1.3):
  versioned(data) -> {"ns": data}.  --ping enables oslo_rpc_server_ping.
  Prints {"event":"ready"}; on SIGTERM/SIGINT/stdin EOF stops and prints
  {"event":"stopped","reason":...}.  The executor is eventlet with --eventlet.

client --topic T
  Each stdin line is an op:
    {"op":"call"|"cast","method":M,"args":{},"context":{},"server":..,
     "fanout":..,"namespace":..,"version":..,"timeout":..,
     "call_monitor_timeout":..,"retry":..,"at_least_once":bool}
  or {"op":"parallel","ops":[op,...]} (inner ops run concurrently).
  Each op prints {"ok":result,"elapsed":s} (cast: "ok":null) or
  {"error":{"type","module","exc_type","value","traceback","str"},"elapsed":s};
  parallel prints {"results":[...in op order...],"elapsed":s}.  Exit 0 at EOF.

notify --topic T --publisher-id P [--driver messagingv2|messaging]
  Each stdin line {"priority":..,"event_type":..,"payload":..,"context":{}}
  prints {"ok":true} or {"error":{...}}.  Exit 0 at EOF.

listen --topic T [--pool P] [--requeue-first] [--count N] [--timeout S]
       [--batch-size N [--batch-timeout S]]
  Prints {"event":"ready"}, then per notification
  {"event":"notification","priority":..,"ctxt":..,"publisher_id":..,
   "event_type":..,"payload":..,"metadata":..}
  (batch mode: {"event":"batch","messages":[...]}).  --requeue-first requeues
  each message_id the first time it is seen, printing
  {"event":"requeued","message_id":..}.  Stops after N printed notifications,
  --timeout seconds (default 30), SIGTERM/SIGINT or stdin EOF, printing
  {"event":"stopped","reason":"count"|"timeout"|"signal"|"eof","count":n}.
  Messages arriving after the count was reached are requeued, not printed.
"""
import sys
import warnings

# oslo.service imports eventlet, which warns loudly on import; keep stderr quiet.
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
warnings.filterwarnings('ignore', message=r"Using the 'executor' argument")

# The patching must come before anything else is imported.
GREEN = '--eventlet' in sys.argv[1:]
if GREEN:
    import eventlet
    eventlet.monkey_patch()

import argparse  # noqa: E402
import builtins
import functools
import json
import logging
import os
import signal
import threading
import time
import types

from oslo_config import cfg
import oslo_messaging
from oslo_messaging import _metrics
from oslo_messaging import _tracing
from oslo_messaging import opts as msg_opts

DEFAULT_URL = 'rabbit://guest:guest@127.0.0.1:5672/'
PRIORITIES = ('audit', 'debug', 'info', 'warn', 'error', 'critical', 'sample')
NOTIFIER_METHODS = PRIORITIES + ('warning',)
PREPARE_KEYS = ('server', 'fanout', 'namespace', 'version', 'timeout',
                'call_monitor_timeout', 'retry')

LOG = logging.getLogger('peer')
_out_lock = threading.Lock()

# Home of non-builtin exception classes raised by fail().  Any class name is
# created on first access, so a client run with --allowed-remote-exmod
# peer_errors can rebuild whatever the server raised.
peer_errors = types.ModuleType('peer_errors')
sys.modules['peer_errors'] = peer_errors


def _peer_error_class(name):
    if name.startswith('__'):
        raise AttributeError(name)
    cls = type(name, (Exception,), {'__module__': 'peer_errors'})
    setattr(peer_errors, name, cls)
    return cls


peer_errors.__getattr__ = _peer_error_class


def emit(obj):
    """Write one JSON line to stdout and flush (thread safe)."""
    line = json.dumps(obj, default=str)
    with _out_lock:
        sys.stdout.write(line + '\n')
        sys.stdout.flush()


def error_obj(exc):
    return {'type': type(exc).__name__,
            'module': type(exc).__module__,
            'exc_type': getattr(exc, 'exc_type', None),
            'value': getattr(exc, 'value', None),
            'traceback': getattr(exc, 'traceback', None),
            'str': str(exc)}


def exception_class(name):
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls
    return getattr(peer_errors, name)


def key_values(pairs):
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep:
            raise SystemExit(f'expected KEY=VALUE, got {pair!r}')
        yield key.strip(), value


def build_conf(args):
    """Fresh ConfigOpts with all oslo.messaging opts registered up front, so
    overrides are in place before the driver reads them."""
    conf = cfg.ConfigOpts()
    conf(args=[], project='peer')
    for group, opts in msg_opts.list_opts():
        conf.register_opts(opts, group=group)
    # Metrics and tracing opts are registered on the global cfg.CONF only, yet
    # read from the transport's conf on every call/cast/dispatch.
    conf.register_opts(_metrics.client.oslo_messaging_metrics,
                       group='oslo_messaging_metrics')
    conf.register_opts(_tracing.client.oslo_messaging_tracing,
                       group='oslo_messaging_tracing')
    conf.set_override('control_exchange', args.exchange)
    for key, value in key_values(args.default):
        conf.set_override(key, value)
    for key, value in key_values(args.rabbit):
        conf.set_override(key, value, group='oslo_messaging_rabbit')
    for key, value in key_values(args.tracing):
        conf.set_override(key, value, group='oslo_messaging_tracing')
    for key, value in key_values(args.metrics):
        conf.set_override(key, value, group='oslo_messaging_metrics')
    if args.tracing:
        # 18.3.1 reaches the exporter as an attribute of its package
        # (otel_http.trace_exporter.OTLPSpanExporter), but the package does
        # not import that submodule: unless the service imported it first,
        # every span is skipped with "Failed to set up tracing".  A service
        # that sets up OpenTelemetry itself has it imported; so do we.
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa
    return conf


def stdin_lines():
    """The lines of stdin, as str, until EOF.  Under eventlet a plain read
    would block the hub (and every green thread with it): wait for the pipe
    through the hub, then read what is there."""
    if not GREEN:
        yield from sys.stdin
        return
    from eventlet import hubs
    fd = sys.stdin.fileno()
    buf = b''
    while True:
        hubs.trampoline(fd, read=True)
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b'\n')
        for line in lines:
            yield line.decode() + '\n'
    if buf:
        yield buf.decode()


def executor():
    return 'eventlet' if GREEN else 'threading'


def wait_for_stop(stop, deadline=None):
    """Block until stop is set (by a signal or stdin EOF) or deadline."""
    while not stop.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            return 'timeout'
    return stop.reason


def install_stop_triggers():
    stop = threading.Event()
    stop.reason = None

    def trigger(reason):
        if stop.reason is None:
            stop.reason = reason
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: trigger('signal'))

    def drain_stdin():
        for _ in stdin_lines():
            pass
        trigger('eof')

    threading.Thread(target=drain_stdin, daemon=True).start()
    stop.trigger = trigger
    return stop


# ---------------------------------------------------------------- rpc-server

class EndpointA:
    target = oslo_messaging.Target(version='1.0')

    def __init__(self, server, transport):
        self._server = server
        self._transport = transport

    def relay(self, ctxt, to_topic, to_method, to_args=None):
        """Calls `to_method` on `to_topic` with the same context, and returns
        its result: a hop in the middle of a chain of calls."""
        client = oslo_messaging.get_rpc_client(
            self._transport, oslo_messaging.Target(topic=to_topic))
        return client.call(ctxt, to_method, **(to_args or {}))

    def echo(self, ctxt, data):
        return data

    def context(self, ctxt):
        return ctxt

    def fail(self, ctxt, message, exc_class='ValueError', kwargs=None):
        exc = exception_class(exc_class)(message)
        if kwargs:
            # As nova's exceptions keep theirs: serialize_remote_exception sends them.
            exc.kwargs = kwargs
        raise exc

    def sleep(self, ctxt, seconds):
        time.sleep(seconds)
        return seconds

    def record(self, ctxt, value):
        emit({'event': 'record', 'server': self._server, 'value': value,
              'context': ctxt})
        return self._server

    def whoami(self, ctxt):
        return self._server


class EndpointB:
    target = oslo_messaging.Target(namespace='ns', version='1.3')

    def versioned(self, ctxt, data):
        return {'ns': data}


def cmd_rpc_server(args, conf):
    if args.ping:
        # RPCDispatcher reads rpc_ping_enabled from the *global* cfg.CONF,
        # so set it there as well as on our own ConfigOpts.
        for c in (conf, cfg.CONF):
            c.register_opts(dict(msg_opts.list_opts())[None])
            c.set_override('rpc_ping_enabled', True)
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    target = oslo_messaging.Target(topic=args.topic, server=args.server)
    server = oslo_messaging.get_rpc_server(
        transport, target, [EndpointA(args.server, transport), EndpointB()],
        executor=args.executor)
    stop = install_stop_triggers()
    server.start()
    emit({'event': 'ready'})
    reason = wait_for_stop(stop)
    server.stop()
    server.wait()
    emit({'event': 'stopped', 'reason': reason})
    transport.cleanup()


# -------------------------------------------------------------------- client

def run_op(op, clients):
    start = time.monotonic()
    try:
        if not isinstance(op, dict):
            raise ValueError(f'op must be an object, got {op!r}')
        kind = op.get('op')
        if kind == 'parallel':
            ops = op.get('ops', [])
            results = [None] * len(ops)

            def worker(i, inner):
                results[i] = run_op(inner, clients)

            threads = [threading.Thread(target=worker, args=(i, inner))
                       for i, inner in enumerate(ops)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return {'results': results, 'elapsed': time.monotonic() - start}
        if kind not in ('call', 'cast'):
            raise ValueError(f'unknown op {kind!r}')
        client = clients[bool(op.get('at_least_once'))]
        overrides = {k: op[k] for k in PREPARE_KEYS if op.get(k) is not None}
        cctxt = client.prepare(**overrides) if overrides else client
        ctxt = op.get('context') or {}
        method = getattr(cctxt, kind)
        result = method(ctxt, op['method'], **(op.get('args') or {}))
        return {'ok': result, 'elapsed': time.monotonic() - start}
    except Exception as exc:
        LOG.debug('op failed', exc_info=True)
        return {'error': error_obj(exc), 'elapsed': time.monotonic() - start}


def cmd_client(args, conf):
    transport = oslo_messaging.get_rpc_transport(
        conf, url=args.url, allowed_remote_exmods=args.exmods)
    target = oslo_messaging.Target(topic=args.topic)
    clients = {
        False: oslo_messaging.get_rpc_client(transport, target),
        True: oslo_messaging.get_rpc_client(
            transport, target,
            transport_options=oslo_messaging.TransportOptions(
                at_least_once=True)),
    }
    for line in stdin_lines():
        if not line.strip():
            continue
        try:
            op = json.loads(line)
        except ValueError as exc:
            emit({'error': error_obj(exc), 'elapsed': 0.0})
            continue
        emit(run_op(op, clients))
    transport.cleanup()


# -------------------------------------------------------------------- notify

class NotifyContext(dict):
    """Notifier replaces a context whose type is exactly dict with {} (see
    notifier._sanitize_context); a dict subclass with redacted_copy() is
    sent as-is, i.e. as _context_<key> fields like a RequestContext would."""

    def redacted_copy(self):
        return self


def cmd_notify(args, conf):
    transport = oslo_messaging.get_notification_transport(conf, url=args.url)
    notifier = oslo_messaging.Notifier(transport, publisher_id=args.publisher_id,
                                       driver=args.driver, topics=[args.topic])
    for line in stdin_lines():
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            priority = msg.get('priority', 'info')
            if priority not in NOTIFIER_METHODS:
                raise ValueError(f'unknown priority {priority!r}')
            ctxt = NotifyContext(msg.get('context') or {})
            getattr(notifier, priority)(ctxt,
                                        msg['event_type'], msg.get('payload'))
            emit({'ok': True})
        except Exception as exc:
            LOG.debug('notify failed', exc_info=True)
            emit({'error': error_obj(exc)})
    transport.cleanup()


# -------------------------------------------------------------------- listen

class NotificationHandler:
    """Prints notifications; implements --requeue-first and --count."""

    def __init__(self, args, stop):
        self.args = args
        self.stop = stop
        self.count = 0
        self.seen = set()
        self.lock = threading.Lock()

    def handle(self, priority, messages):
        objs = [dict(event='notification', priority=priority, **m)
                for m in messages]
        with self.lock:
            if self.args.count and self.count >= self.args.count:
                return oslo_messaging.NotificationResult.REQUEUE
            if self.args.requeue_first:
                fresh = [m['metadata'].get('message_id') for m in objs
                         if m['metadata'].get('message_id') not in self.seen]
                if fresh:
                    for msg_id in fresh:
                        self.seen.add(msg_id)
                        emit({'event': 'requeued', 'message_id': msg_id})
                    return oslo_messaging.NotificationResult.REQUEUE
            # Count and trigger before printing: a test closes stdin as soon
            # as it has read the last notification, and the stop reason must
            # already be 'count' by then, not 'eof'.
            self.count += len(objs)
            if self.args.count and self.count >= self.args.count:
                self.stop.trigger('count')
            if self.args.batch_size:
                emit({'event': 'batch', 'messages': objs})
            else:
                emit(objs[0])
        return oslo_messaging.NotificationResult.HANDLED

    def endpoint(self, batch):
        """An endpoint object with one method per priority.  Batch methods
        get a list of message dicts; single ones get the five arguments."""
        ep = types.SimpleNamespace()
        for prio in PRIORITIES:
            if batch:
                method = functools.partial(self.handle, prio)
            else:
                def method(ctxt, publisher_id, event_type, payload, metadata,
                           prio=prio):
                    return self.handle(prio, [dict(
                        ctxt=ctxt, publisher_id=publisher_id,
                        event_type=event_type, payload=payload,
                        metadata=metadata)])
            setattr(ep, prio, method)
        return ep


def cmd_listen(args, conf):
    transport = oslo_messaging.get_notification_transport(conf, url=args.url)
    targets = [oslo_messaging.Target(topic=args.topic)]
    stop = install_stop_triggers()
    handler = NotificationHandler(args, stop)
    endpoints = [handler.endpoint(batch=bool(args.batch_size))]
    if args.batch_size:
        listener = oslo_messaging.get_batch_notification_listener(
            transport, targets, endpoints, executor=executor(),
            pool=args.pool, allow_requeue=True, batch_size=args.batch_size,
            batch_timeout=args.batch_timeout)
    else:
        listener = oslo_messaging.get_notification_listener(
            transport, targets, endpoints, executor=executor(),
            pool=args.pool, allow_requeue=True)
    listener.start()
    emit({'event': 'ready'})
    reason = wait_for_stop(stop, time.monotonic() + args.timeout)
    listener.stop()
    listener.wait()
    emit({'event': 'stopped', 'reason': reason, 'count': handler.count})
    transport.cleanup()


# ---------------------------------------------------------------------- main

def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--url', default=DEFAULT_URL)
    common.add_argument('--exchange', default='openstack')
    common.add_argument('--rabbit', action='append', default=[],
                        metavar='KEY=VALUE')
    common.add_argument('--default', action='append', default=[],
                        metavar='KEY=VALUE')
    common.add_argument('--allowed-remote-exmod', action='append',
                        default=[], dest='exmods', metavar='MODULE')
    common.add_argument('--tracing', action='append', default=[],
                        metavar='KEY=VALUE')
    common.add_argument('--metrics', action='append', default=[],
                        metavar='KEY=VALUE')
    common.add_argument('--debug', action='store_true')
    common.add_argument('--eventlet', action='store_true',
                        help='monkey-patch with eventlet (read before parsing)')

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('rpc-server', parents=[common])
    p.add_argument('--topic', required=True)
    p.add_argument('--server', required=True)
    p.add_argument('--executor', default=executor(),
                   choices=['threading', 'eventlet'])
    p.add_argument('--ping', action='store_true')
    p.set_defaults(func=cmd_rpc_server)

    p = sub.add_parser('client', parents=[common])
    p.add_argument('--topic', required=True)
    p.set_defaults(func=cmd_client)

    p = sub.add_parser('notify', parents=[common])
    p.add_argument('--topic', required=True)
    p.add_argument('--publisher-id', required=True)
    p.add_argument('--driver', default='messagingv2',
                   choices=['messagingv2', 'messaging'])
    p.set_defaults(func=cmd_notify)

    p = sub.add_parser('listen', parents=[common])
    p.add_argument('--topic', required=True)
    p.add_argument('--pool')
    p.add_argument('--requeue-first', action='store_true')
    p.add_argument('--count', type=int, default=0)
    p.add_argument('--timeout', type=float, default=30.0)
    p.add_argument('--batch-size', type=int)
    p.add_argument('--batch-timeout', type=float)
    p.set_defaults(func=cmd_listen)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stderr,
                        level=logging.DEBUG if args.debug else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        args.func(args, build_conf(args))
    except Exception as exc:
        LOG.exception('%s failed', args.command)
        emit({'event': 'fatal', 'error': error_obj(exc)})
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
