#!/usr/bin/python3
# ctest: TIMEOUT 120
"""15 Idle TLS connections hibernate (issue 13: idle TLS connections that
cost almost nothing).

An established TLS connection with nothing read or written for
listeners[].tls.hibernate_after seconds (1 here) frees its two 16 KiB record
buffers; the broker logs "N idle connection(s) hibernated, M asleep" (debug,
once per sweep) and counts the sleepers in
$SYS/broker/tls/connections/hibernated. What a client sees must not change:

- a hibernated subscriber still receives a QoS 1 publish, in full, and its
  publisher gets the PUBACK;
- a hibernated client's PINGREQ is answered, and it goes back to sleep and
  answers again;
- a hibernated client that stays silent is closed when its keep-alive
  expires (1.5 x keepalive, [MQTT-3.1.2-24]), with "keepalive expired" in
  the log and an orderly TLS close (close_notify, then EOF) on the socket.

Each test has one connection asleep at a time, so the log line's "1 asleep"
names it. Every wait is on an event (a packet, a log line), bounded.
"""

import os
import shutil
import ssl
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (IO_TIMEOUT, BrokerTestCase, RawClient, client_tls_context,  # noqa: E402
                      keepalive_close_bound, main, make_certs, skip_unless_wisp)

CERTS = None
ASLEEP = r"idle connection\(s\) hibernated, %d asleep"
SLEEP_WAIT = 10.0  # hibernate_after is 1 s; the sweep runs on the loop's 1 s timers


def setUpModule():
    global CERTS
    if shutil.which("openssl") is None:
        raise AssertionError("the openssl command-line tool is required (scripts/deps.sh --test)")
    CERTS = tempfile.mkdtemp(prefix="wisp-e2e-idle-")
    make_certs(CERTS)


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, ignore_errors=True)


@skip_unless_wisp("hibernation of idle TLS connections is wisp's")
class IdleTlsTest(BrokerTestCase):

    def broker_options(self):
        tls = {"cert": os.path.join(CERTS, "server.crt"), "key": os.path.join(CERTS, "server.key"),
               "hibernate_after": 1}
        return {"listener": {"protocol": "mqtts", "tls": tls}}

    def tls(self):
        c = client_tls_context(os.path.join(CERTS, "ca.crt"))
        c.maximum_version = ssl.TLSVersion.TLSv1_2
        return c

    def wait_asleep(self, offset, count=1):
        line = self.broker.wait_log(ASLEEP % count, offset, timeout=SLEEP_WAIT)
        self.assertIsNotNone(line, "no connection hibernated within %.0f s" % SLEEP_WAIT)

    def test_hibernated_subscriber_receives_publish(self):
        offset = self.broker.log_size()
        sub = self.raw("idle-sub", tls=self.tls())
        sub.subscribe([("idle/t", 1)])
        self.wait_asleep(offset)
        # The publisher is awake (it just connected); the subscriber is the
        # one asleep, and must wake for the delivery.
        pub = self.raw("idle-pub", tls=self.tls())
        payload = bytes(range(256)) * 64  # 16 KiB: a full record to the sleeper
        pub.publish("idle/t", payload, qos=1, pid=7)  # returns on its PUBACK
        p = sub.recv_publish()  # and acknowledges it
        self.assertEqual((p.topic, p.payload, p.qos), ("idle/t", payload, 1))
        pub.close()
        # Both go to sleep again; the subscriber still answers.
        offset = self.broker.log_size()
        self.wait_asleep(offset)
        self.assertTrue(sub.is_open(IO_TIMEOUT))

    def test_hibernated_client_answers_pingreq(self):
        offset = self.broker.log_size()
        c = self.raw("idle-ping", tls=self.tls())
        for _ in range(3):
            self.wait_asleep(offset)
            offset = self.broker.log_size()
            c.ping(IO_TIMEOUT)  # PINGRESP [MQTT-3.12.4-1]

    def test_hibernated_client_closed_on_keepalive(self):
        keepalive = 2
        offset = self.broker.log_size()
        # Ragged EOFs raise here (suppress_ragged_eofs=False), so an empty
        # read proves the broker's close_notify came before the FIN.
        c = RawClient(self.broker.port, tls=None)
        self.on_cleanup(c.close)
        c.sock = self.tls().wrap_socket(c.sock, server_hostname="localhost", suppress_ragged_eofs=False)
        self.assertEqual(c.connect("idle-ka", keepalive=keepalive), 0, "CONNACK return code")
        self.wait_asleep(offset)
        # [MQTT-3.1.2-24]: nothing within 1.5 x keepalive closes it.
        c.sock.settimeout(keepalive_close_bound(keepalive))
        self.assertEqual(c.sock.recv(1), b"", "a byte instead of the close")
        self.assertIsNotNone(self.broker.wait_log(r"keepalive expired", offset, timeout=IO_TIMEOUT))


if __name__ == "__main__":
    main()
