#!/usr/bin/env python3
"""Checks a fresh installation of the oslo-messaging-rs wheel, as a new user would make it:
``pip install oslo_messaging_rs-*.whl`` into an empty virtualenv, which brings oslo.messaging
and its dependencies from PyPI. Then, with nothing else configured, a ``rabbitrs://`` URL must
select the driver, and an RPC call, a cast and a notification must go through the broker.

Usage: install_check.py URL   (URL: rabbitrs://user:password@host:port/)
"""
from importlib import metadata
import sys
import threading
import uuid
import warnings

# oslo.service imports eventlet, which warns loudly on import; keep the output quiet.
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')

from oslo_config import cfg
import oslo_messaging

URL = sys.argv[1]
TOPIC = 'install-check-%s' % uuid.uuid4().hex[:8]


class Endpoint:
    def __init__(self):
        self.casts = []
        self.cast_seen = threading.Event()

    def echo(self, ctxt, data):
        return {'data': data, 'user': ctxt.get('user')}

    def record(self, ctxt, value):
        self.casts.append(value)
        self.cast_seen.set()


class Notifications:
    def __init__(self):
        self.seen = threading.Event()
        self.got = []

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.got.append((publisher_id, event_type, payload))
        self.seen.set()


def main():
    # As a service does: oslo registers its tracing and metrics options on the global CONF.
    conf = cfg.CONF
    conf(args=[], project='install-check')
    transport = oslo_messaging.get_rpc_transport(conf, url=URL)
    driver = type(transport._driver)
    assert driver.__module__ == 'oslo_messaging_rs.driver', driver
    endpoint = Endpoint()
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=TOPIC, server='s1'), [endpoint])
    server.start()
    client = oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=TOPIC), timeout=30)
    out = client.call({'user': 'u1'}, 'echo', data='ü-1')
    assert out == {'data': 'ü-1', 'user': 'u1'}, out
    client.cast({}, 'record', value='cast-1')
    assert endpoint.cast_seen.wait(30) and endpoint.casts == ['cast-1'], endpoint.casts

    notify_transport = oslo_messaging.get_notification_transport(conf, url=URL)
    handler = Notifications()
    listener = oslo_messaging.get_notification_listener(
        notify_transport, [oslo_messaging.Target(topic=TOPIC)], [handler])
    listener.start()
    notifier = oslo_messaging.Notifier(notify_transport, publisher_id='check',
                                       driver='messagingv2', topics=[TOPIC])
    notifier.info({}, 'check.done', {'n': 1})
    assert handler.seen.wait(30), 'no notification'
    assert handler.got == [('check', 'check.done', {'n': 1})], handler.got

    for runner in (server, listener):
        runner.stop()
        runner.wait()
    transport.cleanup()
    notify_transport.cleanup()
    print('oslo.messaging %s with the installed driver (%s): called, cast and notified'
          ' through %s' % (metadata.version('oslo.messaging'), driver.__name__,
                           URL.split('@')[-1]))


if __name__ == '__main__':
    main()
