"""Runs oslo.messaging's own functional suite, as shipped in the installed wheel.

The suite (``oslo_messaging/tests/functional``) runs as upstream runs it: discovered with
unittest's loader, which expands the test scenarios, under the ``eventlet.monkey_patch()`` of
``oslo_messaging/tests/__init__.py``, against the transports named by ``RPC_TRANSPORT_URL``
and ``NOTIFY_TRANSPORT_URL``. Each test's outcome is printed, and skip reasons with it.

    python interop/functional.py [--only SUBSTRING ...] [--allow-skip SUBSTRING ...]
                                 [--min-run N] [--expect-driver module:Class]

Exits non-zero when a test fails, when a test is skipped that no ``--allow-skip`` names, or
when fewer than ``--min-run`` tests ran (so a suite that silently shrank fails too).
"""

import argparse
import functools
import os
import sys
import time
import unittest
import warnings

# oslo.service imports eventlet, which warns loudly on import.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")


def tests_of(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from tests_of(item)
        else:
            yield item


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[],
                        help="run only the tests whose id contains this")
    parser.add_argument("--allow-skip", action="append", default=[],
                        help="a test whose id contains this may skip itself")
    parser.add_argument("--min-run", type=int, default=1,
                        help="fail when fewer tests than this ran (skips excluded)")
    parser.add_argument("--log",
                        help="send the suite's own output (its logging) to this file; the "
                             "outcomes stay on stdout, and the log's tail is shown on failure")
    parser.add_argument("--expect-driver",
                        help="the only driver the URLs' scheme may load (module:Class)")
    args = parser.parse_args()
    for var in ("RPC_TRANSPORT_URL", "NOTIFY_TRANSPORT_URL"):
        if not os.environ.get(var):
            sys.exit("%s must be set" % var)

    import oslo_messaging

    if args.expect_driver:
        from importlib.metadata import entry_points

        for var in ("RPC_TRANSPORT_URL", "NOTIFY_TRANSPORT_URL"):
            scheme = os.environ[var].split("://")[0].split("+")[0]
            found = [ep.value for ep in entry_points(group="oslo.messaging.drivers")
                     if ep.name == scheme]
            if found != [args.expect_driver]:
                sys.exit("%s loads %s, not %s" % (scheme, found, args.expect_driver))

    site = os.path.dirname(os.path.dirname(os.path.abspath(oslo_messaging.__file__)))
    os.chdir(site)
    sys.path.insert(0, site)
    loader = unittest.TestLoader()
    discovered = loader.discover(start_dir="oslo_messaging/tests/functional",
                                 top_level_dir=".")
    if loader.errors:
        for e in loader.errors:
            print(e)
        sys.exit("the suite did not load")
    tests = list(tests_of(discovered))
    if args.only:
        tests = [t for t in tests if any(s in t.id() for s in args.only)]
    from importlib.metadata import version

    print("oslo.messaging %s: %d tests, RPC on %s, notifications on %s" % (
        version("oslo.messaging"), len(tests),
        os.environ["RPC_TRANSPORT_URL"].split("://")[0],
        os.environ["NOTIFY_TRANSPORT_URL"].split("://")[0]))
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    if args.log:
        log = open(args.log, "w")
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    started = time.monotonic()
    result = unittest.TextTestRunner(stream=out, verbosity=2).run(
        unittest.TestSuite(tests))
    elapsed = time.monotonic() - started

    unexpected = [(t.id(), why) for t, why in result.skipped
                  if not any(s in t.id() for s in args.allow_skip)]
    ran = result.testsRun - len(result.skipped)
    say = functools.partial(print, file=out)
    say("summary: %d tests, %d ran, %d skipped, %d failed, %d errors, %.1f s" % (
        result.testsRun, ran, len(result.skipped), len(result.failures),
        len(result.errors), elapsed))
    for t, why in result.skipped:
        say("skipped: %s: %s" % (t.id(), why))
    ok = result.wasSuccessful()
    for tid, why in unexpected:
        ok = False
        say("UNEXPECTED SKIP: %s: %s" % (tid, why))
    if ran < args.min_run:
        ok = False
        say("only %d tests ran, fewer than %d" % (ran, args.min_run))
    if not ok and args.log:
        log.flush()
        with open(args.log) as f:
            lines = f.readlines()
        say("--- the last 150 lines of %s ---" % args.log)
        out.writelines(lines[-150:])
    out.flush()
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    main()
