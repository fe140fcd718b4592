"""The ``rabbitrs`` driver: oslo.messaging's driver contract over the Rust engine.

The classes here subclass oslo's own (``BaseDriver``, ``PollStyleListener`` and the incoming
message classes) and hand every broker operation to the engine (``_engine``), which runs it on
its own threads, off the GIL and off eventlet's hub. What sits above the driver (RPC client
and server, dispatcher, executors, notifier, notification listener) is oslo.messaging's code.

Waiting for the engine follows the process's thread model:

* plain threads wait with the GIL released, in slices of 0.1 s, so signal handlers run;
* under eventlet (``thread`` monkey-patched) a green thread waits for the operation's file
  descriptor through the hub, so the other green threads keep running.
"""

import logging
import time
from urllib.parse import quote

from oslo_config import cfg
from oslo_messaging import exceptions
from oslo_messaging._drivers import amqp as rpc_amqp
from oslo_messaging._drivers import base
from oslo_messaging._drivers import common as rpc_common
from oslo_messaging._drivers import impl_rabbit

from oslo_messaging_rs import _engine

LOG = logging.getLogger("oslo_messaging_rs")

# A call without a timeout waits this long (30 days): RabbitMQ's message expiration, which a
# call's timeout sets, cannot be much longer.
_FOREVER = 30 * 24 * 3600.0

_green = None


def _is_green():
    """Whether eventlet patched this process: its threads, or only its sockets and selects
    (``monkey_patch(thread=False)``, as some services do). Either way a wait must go
    through the hub; ``trampoline`` also works from a native thread, on its own hub."""
    global _green
    if _green is None:
        try:
            from oslo_utils import eventletutils

            _green = any(eventletutils.is_monkey_patched(m)
                         for m in ("thread", "socket", "select"))
        except Exception:  # pragma: no cover - oslo.utils is a dependency
            _green = False
    return _green


def _drain_logs():
    records, dropped = _engine.drain_logs()
    for level, target, message in records:
        LOG.log(level, "%s: %s", target, message)
    if dropped:
        LOG.warning("%d log records of the engine were dropped (too many at once)", dropped)


class _Slice(Exception):
    pass


def _wait(pending):
    """Waits for an engine operation, as the thread model allows; returns its result.

    The engine's log records are handed to ``logging`` at every slice of the wait, so a
    long wait (an idle server's poll) does not hold back what the engine logs meanwhile.
    """
    try:
        if _is_green():
            from eventlet import hubs

            while not pending.done():
                try:
                    hubs.trampoline(pending.fileno(), read=True, timeout=1.0,
                                    timeout_exc=_Slice)
                except _Slice:
                    _drain_logs()
        else:
            while not pending.wait(0.1):
                _drain_logs()
    finally:
        _drain_logs()
    return pending.result()


def _engine_url(url):
    """The hosts, credentials and virtual host of oslo's parsed URL, as ``rabbit://``."""
    hosts = []
    for h in url.hosts:
        host = h.hostname or ""
        if ":" in host:
            host = "[%s]" % host
        if h.port:
            host = "%s:%d" % (host, h.port)
        if h.username is not None:
            cred = quote(h.username, safe="")
            if h.password is not None:
                cred += ":" + quote(h.password, safe="")
            host = cred + "@" + host
        hosts.append(host)
    vhost = url.virtual_host or ""
    return "rabbit://%s/%s" % (",".join(hosts), quote(vhost, safe=""))


def _ini_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join("%s:%s" % (k, v) for k, v in value.items())
    return str(value)


def _rabbit_ini(conf):
    """``[oslo_messaging_rabbit]`` as the service's configuration (and the URL's query)
    resolve it, for the options the engine reads."""
    group = conf.oslo_messaging_rabbit
    lines = ["[oslo_messaging_rabbit]"]
    for name in _engine.rabbit_option_names():
        try:
            value = getattr(group, name)
        except (cfg.NoSuchOptError, AttributeError):
            continue
        if value is None:
            continue
        text = _ini_value(value)
        if "\n" in text:
            continue
        lines.append("%s = %s" % (name, text))
    return "\n".join(lines) + "\n"


def _context_dict(ctxt):
    if isinstance(ctxt, dict) or ctxt is None:
        return ctxt
    return ctxt.to_dict()


def _failure_json(failure):
    """oslo's serialized exception; a plainer one when the exception's own arguments do not
    serialize, so the caller still gets an answer."""
    try:
        return rpc_common.serialize_remote_exception(failure)
    except Exception:
        exc = failure[1]
        LOG.warning("the exception %r does not serialize; replying with its text only", exc)
        cls = exc.__class__
        return rpc_common.jsonutils.dumps(
            {
                "class": cls.__name__,
                "module": cls.__module__,
                "message": str(exc),
                "tb": [],
                "args": [],
                "kwargs": {},
            }
        )


class RustRpcIncoming(base.RpcIncomingMessage):
    """An RPC request, acknowledged on receipt (oslo's at-most-once)."""

    def __init__(self, driver, raw):
        super().__init__(raw.ctxt, raw.message, raw.msg_id)
        self._driver = driver
        self._raw = raw
        self.unique_id = raw.unique_id
        self.reply_q = raw.reply_q
        self.client_timeout = raw.client_timeout

    def acknowledge(self):
        pass

    def requeue(self):
        pass

    def reply(self, reply=None, failure=None):
        # The engine takes the reply and sends it (with the broker's confirm, and again while
        # the caller's reply queue is missing), logging a failure; this returns at once, so
        # the executor's worker is free for the next request. Cleanup waits for the reply.
        if self._raw.msg_id is None:
            return
        try:
            if failure:
                self._raw.reply(None, _failure_json(failure))
            else:
                try:
                    self._raw.reply(reply, None)
                except (TypeError, ValueError) as e:
                    LOG.error("the result of %s does not serialize: %s",
                              self.message.get("method"), e)
                    self._raw.reply(None, _failure_json((type(e), e, None)))
        except Exception:
            LOG.exception("could not reply to message %s", self.msg_id)

    def heartbeat(self):
        try:
            _wait(self._raw.heartbeat())
        except _engine.EngineError as e:
            raise self._driver._translate(e, None)


class RustNotificationIncoming(base.IncomingMessage):
    """A notification, acknowledged or requeued after its handler ran."""

    def __init__(self, driver, raw):
        super().__init__(raw.ctxt, raw.message)
        self._raw = raw
        self.unique_id = raw.unique_id

    # Both return once the engine handed the frame to the connection ("processed locally"),
    # so a listener's cleanup cannot close the connection before it.

    def acknowledge(self):
        try:
            _wait(self._raw.acknowledge())
        except Exception:
            LOG.exception("could not acknowledge a notification")

    def requeue(self):
        try:
            _wait(self._raw.requeue())
        except Exception:
            LOG.exception("could not requeue a notification")


class RustPollListener(base.PollStyleListener):
    """oslo's poll-style listener over an engine listener; oslo's
    ``PollStyleListenerAdapter`` runs it."""

    def __init__(self, driver, raw, incoming_cls):
        super().__init__(driver.prefetch_size)
        self._driver = driver
        self._raw = raw
        self._incoming_cls = incoming_cls

    def poll(self, timeout=None, batch_size=1, batch_timeout=None):
        try:
            items = _wait(self._raw.poll(batch_size, batch_timeout, timeout))
        except Exception:
            # As oslo's forever_retry_uncaught_exceptions around the poll loop: log, wait a
            # second, go on, rather than spin on a persistent error.
            LOG.exception("polling the engine failed")
            time.sleep(1)
            return []
        return [self._incoming_cls(self._driver, item) for item in items]

    def stop(self):
        _wait(self._raw.stop())

    def cleanup(self):
        _wait(self._raw.cleanup())


class RustRabbitDriver(base.BaseDriver):
    """The ``rabbitrs`` driver: RabbitMQ through the Rust engine.

    It reads ``[oslo_messaging_rabbit]`` as oslo's rabbit driver does (the same options,
    registered on the service's configuration, with the URL's query overriding them).
    """

    prefetch_size = 0

    def __init__(self, conf, url, default_exchange=None, allowed_remote_exmods=None):
        opt_group = cfg.OptGroup(name="oslo_messaging_rabbit",
                                 title="RabbitMQ driver options")
        conf.register_group(opt_group)
        conf.register_opts(impl_rabbit.rabbit_opts, group=opt_group)
        conf.register_opts(rpc_amqp.amqp_opts, group=opt_group)
        conf = rpc_common.ConfigOptsProxy(conf, url, opt_group.name)
        super().__init__(conf, url, default_exchange, allowed_remote_exmods)
        self.prefetch_size = conf.oslo_messaging_rabbit.rabbit_qos_prefetch_count
        _engine.install_logging(LOG.getEffectiveLevel())
        try:
            self._transport = _engine.Transport(
                _engine_url(url), _rabbit_ini(conf), default_exchange or "openstack")
        except _engine.EngineError as e:
            raise exceptions.ConfigurationError(e.args[1])
        finally:
            _drain_logs()

    def require_features(self, requeue=False):
        pass

    def _translate(self, error, target, message=None):
        kind, text, detail = error.args
        if kind == "remote":
            return rpc_common.deserialize_remote_exception(
                detail, self._allowed_remote_exmods)
        if kind == "timeout":
            return exceptions.MessagingTimeout(text)
        if kind == "undeliverable":
            exchange, routing_key = detail
            return exceptions.MessageUndeliverable(error, exchange, routing_key, message)
        if kind in ("delivery_failure", "blocked", "shut_down"):
            return exceptions.MessageDeliveryFailure(text)
        if kind == "invalid_target":
            return exceptions.InvalidTarget(text, target)
        return base.TransportDriverError(text)

    @staticmethod
    def _target(target):
        return (target.exchange, target.topic, target.server, bool(target.fanout))

    def send(self, target, ctxt, message, wait_for_reply=None, timeout=None,
             call_monitor_timeout=None, retry=None, transport_options=None):
        at_least_once = bool(getattr(transport_options, "at_least_once", False))
        retry = -1 if retry is None else retry
        ctxt = _context_dict(ctxt)
        try:
            if wait_for_reply:
                pending = self._transport.call(
                    self._target(target), ctxt, message,
                    _FOREVER if timeout is None else timeout,
                    call_monitor_timeout or None, retry, at_least_once)
            else:
                pending = self._transport.cast(
                    self._target(target), ctxt, message, retry, at_least_once)
            return _wait(pending)
        except _engine.EngineError as e:
            raise self._translate(e, target, message) from None

    def send_notification(self, target, ctxt, message, version, retry=None):
        retry = -1 if retry is None else retry
        try:
            _wait(self._transport.notify(
                (target.exchange, target.topic), _context_dict(ctxt), message,
                version == 2.0, retry))
        except _engine.EngineError as e:
            raise self._translate(e, target, message) from None

    def listen(self, target, batch_size, batch_timeout):
        try:
            raw = _wait(self._transport.listen(
                (target.exchange, target.topic, target.server)))
        except _engine.EngineError as e:
            raise self._translate(e, target) from None
        listener = RustPollListener(self, raw, RustRpcIncoming)
        return base.PollStyleListenerAdapter(listener, batch_size, batch_timeout)

    def listen_for_notifications(self, targets_and_priorities, pool,
                                 batch_size, batch_timeout):
        targets = [(t.exchange, "%s.%s" % (t.topic, p))
                   for t, p in targets_and_priorities]
        try:
            raw = _wait(self._transport.listen_for_notifications(targets, pool))
        except _engine.EngineError as e:
            raise self._translate(e, None) from None
        listener = RustPollListener(self, raw, RustNotificationIncoming)
        return base.PollStyleListenerAdapter(listener, batch_size, batch_timeout)

    def cleanup(self):
        _wait(self._transport.cleanup())
