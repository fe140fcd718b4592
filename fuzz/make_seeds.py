#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/ (run from the
repository root). Wire seeds are the messages captured from Python oslo.messaging 18.3.1
(oslo-messaging/tests/fixtures/python_18.3.1.json); AMQP seeds are frames as RabbitMQ sends
them. cargo fuzz grows the corpora from these; `cargo fuzz cmin` keeps them small."""
import hashlib
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')


def put(target, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'seed-' + hashlib.sha1(data).hexdigest()[:16]), 'wb') as f:
        f.write(data)


def shortstr(s):
    b = s.encode()
    return struct.pack('>B', len(b)) + b


def longstr(b):
    return struct.pack('>I', len(b)) + b


def table(entries):
    out = b''
    for k, (tag, v) in entries:
        out += shortstr(k) + tag
        if tag == b'S':
            out += longstr(v.encode())
        elif tag == b't':
            out += struct.pack('>B', v)
        elif tag == b'I':
            out += struct.pack('>i', v)
        elif tag == b'l':
            out += struct.pack('>q', v)
        elif tag == b'd':
            out += struct.pack('>d', v)
        elif tag == b'F':
            out += table(v)
        elif tag == b'A':
            out += longstr(b''.join(b'S' + longstr(x.encode()) for x in v))
    return longstr(out)


def frame(kind, channel, payload):
    return struct.pack('>BHI', kind, channel, len(payload)) + payload + b'\xce'


def method(cls, mid, args):
    return struct.pack('>HH', cls, mid) + args


SERVER_PROPS = table([
    ('capabilities', (b'F', [('publisher_confirms', (b't', 1)),
                            ('consumer_cancel_notify', (b't', 1)),
                            ('connection.blocked', (b't', 1))])),
    ('cluster_name', (b'S', 'rabbit@localhost')),
    ('version', (b'S', '3.10.8')),
    ('x', (b'A', ['a', 'b'])),
    ('n', (b'l', -5)), ('d', (b'd', 1.5)), ('i', (b'I', 7)),
])
METHODS = [
    method(10, 10, struct.pack('>BB', 0, 9) + SERVER_PROPS + longstr(b'AMQPLAIN PLAIN') + longstr(b'en_US')),
    method(10, 30, struct.pack('>HIH', 2047, 131072, 60)),
    method(10, 41, shortstr('')),
    method(10, 50, struct.pack('>H', 320) + shortstr('CONNECTION_FORCED - broker forced connection closure') + struct.pack('>HH', 0, 0)),
    method(10, 60, shortstr('low on memory')),
    method(10, 61, b''),
    method(20, 11, longstr(b'')),
    method(20, 40, struct.pack('>H', 406) + shortstr("PRECONDITION_FAILED - inequivalent arg 'durable'") + struct.pack('>HH', 50, 10)),
    method(50, 11, shortstr('reply_0123') + struct.pack('>II', 3, 1)),
    method(60, 21, shortstr('amq.ctag-abc')),
    method(60, 30, shortstr('amq.ctag-abc') + struct.pack('>B', 0)),
    method(60, 50, shortstr('') + struct.pack('>H', 312) + shortstr('NO_ROUTE') + shortstr('') + shortstr('topic')),
    method(60, 60, shortstr('amq.ctag-abc') + struct.pack('>QB', 17, 1) + shortstr('openstack') + shortstr('topic.server')),
    method(60, 80, struct.pack('>QB', 42, 1)),
    method(60, 120, struct.pack('>QB', 42, 0)),
    method(85, 11, b''),
]
HEADERS = table([('compression', (b'S', 'application/x-gzip')), ('x-stream-offset', (b'l', 12))])
# content-type, content-encoding, headers, delivery-mode, priority, correlation-id, expiration
FLAGS = 0x8000 | 0x4000 | 0x2000 | 0x1000 | 0x0800 | 0x0400 | 0x0100
PROPS = (struct.pack('>H', FLAGS) + shortstr('application/json') + shortstr('utf-8') + HEADERS
         + struct.pack('>BB', 2, 0) + shortstr('corr') + shortstr('60000'))
CONTENT = struct.pack('>HHQ', 60, 0, 2) + PROPS

for m in METHODS:
    put('amqp_method', m)
    put('amqp_frames', frame(1, 1, m))
put('amqp_content_header', CONTENT)
put('amqp_content_header', struct.pack('>HHQH', 60, 0, 0, 0))
put('amqp_frames', frame(1, 1, METHODS[12]) + frame(2, 1, CONTENT) + frame(3, 1, b'{}') + frame(8, 0, b''))
put('amqp_field_table', SERVER_PROPS)
put('amqp_field_table', HEADERS)

fixtures = os.path.join(os.path.dirname(ROOT), '..', 'oslo-messaging', 'tests', 'fixtures', 'python_18.3.1.json')
with open(fixtures) as f:
    captured = json.load(f)['messages']
for m in captured:
    body = m['body'].encode()
    for target in ('wire_envelope', 'wire_request', 'wire_reply', 'wire_notification'):
        put(target, body)
    inner = json.loads(m['body'])
    if 'oslo.message' in inner:
        inner = json.loads(inner['oslo.message'])
    if isinstance(inner.get('failure'), str):
        put('wire_remote_error', inner['failure'].encode())
put('wire_remote_error', json.dumps({'class': 'ValueError', 'module': 'builtins', 'message': 'boom',
                                     'tb': ['Traceback\n'], 'args': ['boom'], 'kwargs': {}}).encode())
