#!/usr/bin/python3
"""15 TLS session resumption (issue 13, cheap reconnects).

A sensor that reconnects should not pay for a full TLS handshake each time
(certificate signature and ECDHE: ~5 ms of broker CPU with mbedTLS 2.28).
Python's ssl module (OpenSSL, TLS 1.2 against wisp) connects, keeps its
session (SSLSocket.session) and reconnects offering it:

- with the defaults (session tickets and the session cache on), the second
  handshake is resumed: the client sees session_reused, the broker logs
  "TLS handshake done (resumed)" and counts it in
  $SYS/broker/tls/handshakes/resumed;
- a client that does not take tickets (OP_NO_TICKET) resumes from the
  broker's session cache, with tickets turned off;
- with session_tickets false and session_cache_size 0 nothing is resumed;
- after a reload (SIGHUP: new ticket keys, empty cache) the old session
  gets a full handshake, and the new one resumes again.

Every wait is on an event (CONNACK, a log line, a $SYS publish), bounded.
"""

import os
import shutil
import ssl
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (IO_TIMEOUT, BrokerTestCase, RawClient, client_tls_context,  # noqa: E402
                      main, make_certs, skip_unless_wisp)

CERTS = None

FULL = r"TLS handshake done$"
RESUMED = r"TLS handshake done \(resumed\)$"


def setUpModule():
    global CERTS
    if shutil.which("openssl") is None:
        raise AssertionError("the openssl command-line tool is required (scripts/deps.sh --test)")
    CERTS = tempfile.mkdtemp(prefix="wisp-e2e-resume-")
    make_certs(CERTS)


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, ignore_errors=True)


class ResumeCase(BrokerTestCase):
    TLS = {}  # extra listeners[].tls keys

    def broker_options(self):
        tls = {"cert": os.path.join(CERTS, "server.crt"), "key": os.path.join(CERTS, "server.key")}
        tls.update(self.TLS)
        return {"listener": {"protocol": "mqtts", "tls": tls}, "config": {"sys_interval": 1}}

    def ctx(self, tickets=True):
        c = client_tls_context(os.path.join(CERTS, "ca.crt"))
        # wisp speaks TLS 1.2 only; saying so keeps the test about 1.2's
        # resumption (session ID or RFC 5077 ticket).
        c.maximum_version = ssl.TLSVersion.TLSv1_2
        if not tickets:
            c.options |= ssl.OP_NO_TICKET
        return c

    def session_round(self, ctx, client_id, session=None):
        """Connects over TLS (offering session), completes CONNECT/CONNACK,
        waits for the broker's handshake log line; returns (reused, the
        session to offer next, the log line)."""
        offset = self.broker.log_size()
        c = RawClient(self.broker.port, tls=None)
        self.on_cleanup(c.close)
        c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost", session=session)
        self.assertEqual(c.connect(client_id), 0, "CONNACK return code")
        reused, sess = c.sock.session_reused, c.sock.session
        line = self.broker.wait_log(r"TLS handshake done", offset, timeout=IO_TIMEOUT)
        self.assertIsNotNone(line, "no handshake line in the broker's debug log")
        c.close()
        return reused, sess, line

    def assert_full(self, reused, line, what):
        self.assertFalse(reused, "%s: the client says the session was reused" % what)
        self.assertRegex(line, FULL, "%s: the broker says resumed" % what)

    def assert_resumed(self, reused, line, what):
        self.assertTrue(reused, "%s: the client says the session was not reused" % what)
        self.assertRegex(line, RESUMED, "%s: the broker log does not say resumed" % what)


@skip_unless_wisp("resumption is logged and counted in wisp's own words")
class DefaultsResumeTest(ResumeCase):

    def test_ticket_resumes_and_is_counted(self):
        ctx = self.ctx()
        reused, sess, line = self.session_round(ctx, "sensor-1")
        self.assert_full(reused, line, "first connection")
        self.assertTrue(sess.has_ticket, "the broker sent no session ticket")
        for i in range(3):
            reused, _, line = self.session_round(ctx, "sensor-1", sess)
            self.assert_resumed(reused, line, "reconnect %d" % i)
        # $SYS: the three resumptions, and not the full handshake.
        w = RawClient(self.broker.port, tls=self.ctx())
        self.on_cleanup(w.close)
        self.assertEqual(w.connect("watcher"), 0)
        w.subscribe([("$SYS/broker/tls/handshakes/resumed", 0)])
        seen = None
        deadline = time.monotonic() + 3 * IO_TIMEOUT
        while seen != b"3" and time.monotonic() < deadline:
            seen = w.recv_publish(timeout=IO_TIMEOUT).payload
        self.assertEqual(seen, b"3", "$SYS/broker/tls/handshakes/resumed")

    def test_cache_resumes_a_client_without_tickets(self):
        ctx = self.ctx(tickets=False)
        reused, sess, line = self.session_round(ctx, "old-sensor")
        self.assert_full(reused, line, "first connection")
        self.assertFalse(sess.has_ticket)
        reused, _, line = self.session_round(ctx, "old-sensor", sess)
        self.assert_resumed(reused, line, "reconnect by session ID")

    def test_reload_makes_new_keys(self):
        ctx = self.ctx()
        _, old, _ = self.session_round(ctx, "sensor-2")
        offset = self.broker.log_size()
        self.broker.reload()
        self.assertIsNotNone(self.broker.wait_log(r"configuration reloaded", offset, timeout=IO_TIMEOUT))
        reused, new, line = self.session_round(ctx, "sensor-2", old)
        self.assert_full(reused, line, "a ticket from before the reload")
        reused, _, line = self.session_round(ctx, "sensor-2", new)
        self.assert_resumed(reused, line, "a ticket from after the reload")


@skip_unless_wisp("wisp's configuration keys")
class TicketsOffCacheOnTest(ResumeCase):
    TLS = {"session_tickets": False}

    def test_no_ticket_but_cache_resumes(self):
        ctx = self.ctx()
        reused, sess, line = self.session_round(ctx, "sensor-3")
        self.assert_full(reused, line, "first connection")
        self.assertFalse(sess.has_ticket, "session_tickets false, yet a ticket was sent")
        reused, _, line = self.session_round(ctx, "sensor-3", sess)
        self.assert_resumed(reused, line, "reconnect from the cache")


@skip_unless_wisp("wisp's configuration keys")
class ResumptionOffTest(ResumeCase):
    TLS = {"session_tickets": False, "session_cache_size": 0}

    def test_nothing_resumes(self):
        ctx = self.ctx()
        reused, sess, line = self.session_round(ctx, "sensor-4")
        self.assert_full(reused, line, "first connection")
        self.assertFalse(sess.has_ticket)
        for i in range(2):
            reused, _, line = self.session_round(ctx, "sensor-4", sess)
            self.assert_full(reused, line, "reconnect %d with resumption off" % i)


if __name__ == "__main__":
    main()
