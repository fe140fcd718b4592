"""Checks of the rabbitrs driver that oslo.messaging's functional suite does not make.

Run by scripts/test with the virtualenv where the wheel is installed:

    OSLO_MESSAGING_TEST_URL=rabbit://guest:guest@127.0.0.1:5672/ python interop/driver_test.py

Plain threads (no eventlet: the functional suite covers that model). Each test starts its own
RPC server on a fresh topic, on the Rust driver.
"""

import logging
import os
import signal
import threading
import time
import unittest
import uuid
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
warnings.filterwarnings("ignore", message=r"Using the 'executor' argument")

from oslo_config import cfg  # noqa: E402
import oslo_messaging  # noqa: E402

BROKER = os.environ.get("OSLO_MESSAGING_TEST_URL", "rabbit://guest:guest@127.0.0.1:5672/")
URL = "rabbitrs://" + BROKER.split("://", 1)[1]


class Unserializable(Exception):
    """An exception whose kwargs oslo cannot serialize."""

    def __init__(self):
        self.kwargs = {"handle": object()}
        super().__init__("an exception with an unserializable handle")


class Endpoint:
    def add(self, ctxt, a, b):
        return a + b

    def sleep(self, ctxt, seconds):
        time.sleep(seconds)
        return seconds

    def object_result(self, ctxt):
        return object()

    def bad_exception(self, ctxt):
        raise Unserializable()

    def pid(self, ctxt):
        return os.getpid()


class DriverTest(unittest.TestCase):
    def setUp(self):
        self.conf = cfg.CONF
        self.transport = oslo_messaging.get_rpc_transport(self.conf, url=URL)
        self.topic = "drv_" + uuid.uuid4().hex[:8]
        target = oslo_messaging.Target(topic=self.topic, server="s1")
        self.server = oslo_messaging.get_rpc_server(
            self.transport, target, [Endpoint()], executor="threading")
        self.server.start()
        self.client = oslo_messaging.get_rpc_client(
            self.transport, oslo_messaging.Target(topic=self.topic), timeout=10)
        self.assertEqual(self.client.call({}, "add", a=1, b=2), 3)

    def tearDown(self):
        self.server.stop()
        self.server.wait()
        self.transport.cleanup()

    def test_the_driver_is_the_rust_one(self):
        self.assertEqual(type(self.transport._driver).__module__, "oslo_messaging_rs.driver")

    def test_values_json_cannot_carry_are_refused_and_the_service_goes_on(self):
        for bad in (2 ** 70, float("nan"), float("inf")):
            with self.assertRaises(ValueError) as e:
                self.client.call({}, "add", a=bad, b=1)
            self.assertIn("JSON", str(e.exception))
        self.assertEqual(self.client.call({}, "add", a=2 ** 62, b=1), 2 ** 62 + 1)

    def test_an_exception_that_does_not_serialize_is_still_answered(self):
        started = time.monotonic()
        with self.assertRaises(oslo_messaging.RemoteError) as e:
            self.client.call({}, "bad_exception")
        self.assertEqual(e.exception.exc_type, "Unserializable")
        self.assertIn("unserializable handle", e.exception.value)
        # Answered, not left to time out (the kombu driver's caller waits 10 s here).
        self.assertLess(time.monotonic() - started, 5)

    def test_a_result_that_does_not_serialize_is_answered_as_a_failure(self):
        started = time.monotonic()
        with self.assertRaises(ValueError) as e:
            self.client.call({}, "object_result")
        self.assertIn("Cannot convert", str(e.exception))
        self.assertLess(time.monotonic() - started, 5)

    def test_a_signal_handler_runs_during_a_blocking_call(self):
        class Interrupted(Exception):
            pass

        def handler(signum, frame):
            raise Interrupted()

        old = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            started = time.monotonic()
            with self.assertRaises(Interrupted):
                self.client.call({}, "sleep", seconds=5)
            waited = time.monotonic() - started
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        print("signal handled %.2f s into a 5 s call" % waited)
        self.assertLess(waited, 1.0)

    def test_a_forked_child_gets_its_own_engine(self):
        child = os.fork()
        if child == 0:
            code = 1
            try:
                client = oslo_messaging.get_rpc_client(
                    self.transport, oslo_messaging.Target(topic=self.topic), timeout=10)
                code = 0 if client.call({}, "pid") == os.getppid() else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while True:
            pid, status = os.waitpid(child, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
                self.fail("the forked child hung")
            time.sleep(0.05)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        # The parent's engine is untouched.
        self.assertEqual(self.client.call({}, "add", a=2, b=2), 4)

    def test_engine_logs_reach_python_logging(self):
        logger = logging.getLogger("oslo_messaging_rs")
        # The driver reads the logger's level when it is made.
        with self.assertLogs(logger, level="DEBUG") as logs:
            t = oslo_messaging.get_rpc_transport(self.conf, url=URL)
            c = oslo_messaging.get_rpc_client(t, oslo_messaging.Target(topic=self.topic))
            self.assertEqual(c.call({}, "add", a=1, b=1), 2)
            t.cleanup()
        self.assertTrue(any("connected to the AMQP broker" in m for m in logs.output),
                        logs.output)
        self.assertFalse(any("guest:guest" in m for m in logs.output))

    def test_timeouts_and_undeliverable_calls_raise_oslo_exceptions(self):
        lonely = oslo_messaging.get_rpc_client(
            self.transport, oslo_messaging.Target(topic=self.topic + "_nobody"), timeout=1)
        with self.assertRaises(oslo_messaging.MessagingTimeout):
            lonely.call({}, "add", a=1, b=1)
        mandatory = lonely.prepare(transport_options=oslo_messaging.TransportOptions(
            at_least_once=True))
        with self.assertRaises(oslo_messaging.MessageUndeliverable) as e:
            mandatory.call({}, "add", a=1, b=1)
        self.assertEqual(e.exception.routing_key, self.topic + "_nobody")


class NotificationTest(unittest.TestCase):
    def setUp(self):
        self.transport = oslo_messaging.get_notification_transport(cfg.CONF, url=URL)
        self.topic = "drvn_" + uuid.uuid4().hex[:8]
        self.notifier = oslo_messaging.Notifier(
            self.transport, publisher_id="drv", driver="messagingv2", topics=[self.topic])

    def tearDown(self):
        self.transport.cleanup()

    def test_requeued_then_handled_then_stopped(self):
        seen, done, lock = [], threading.Event(), threading.Lock()

        class Endpoint:
            def info(self, ctxt, publisher_id, event_type, payload, metadata):
                with lock:
                    seen.append(payload["n"])
                    first = seen.count(payload["n"]) == 1
                    if len(seen) == 4:
                        done.set()
                if payload["n"] == 0 and first:
                    return oslo_messaging.NotificationResult.REQUEUE
                return oslo_messaging.NotificationResult.HANDLED

        listener = oslo_messaging.get_notification_listener(
            self.transport, [oslo_messaging.Target(topic=self.topic)], [Endpoint()],
            executor="threading", allow_requeue=True)
        listener.start()
        for n in range(3):
            self.notifier.info({"user": "u"}, "drv.test", {"n": n})
        self.assertTrue(done.wait(10), seen)
        started = time.monotonic()
        listener.stop()
        listener.wait()
        self.assertLess(time.monotonic() - started, 5)
        # Notification 0 came back once after its requeue; nothing else came twice.
        self.assertEqual(sorted(seen), [0, 0, 1, 2])

    def test_a_batch_ends_at_its_timeout(self):
        batches, done = [], threading.Event()

        class Endpoint:
            def info(self, messages):
                batches.append([m["payload"]["n"] for m in messages])
                done.set()

        listener = oslo_messaging.get_batch_notification_listener(
            self.transport, [oslo_messaging.Target(topic=self.topic)], [Endpoint()],
            executor="threading", batch_size=5, batch_timeout=1)
        listener.start()
        time.sleep(0.5)
        for n in range(3):
            self.notifier.info({}, "drv.test", {"n": n})
        self.assertTrue(done.wait(5), batches)
        listener.stop()
        listener.wait()
        self.assertEqual(sorted(n for b in batches for n in b), [0, 1, 2])
        self.assertLessEqual(len(batches), 2, batches)


if __name__ == "__main__":
    unittest.main(verbosity=2)
