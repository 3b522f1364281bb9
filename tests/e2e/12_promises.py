#!/usr/bin/python3
# ctest: TIMEOUT 240
"""12 promises: what README.md and config/README.md promise, checked as a
user would see it (issue 14).

- limits.max_queued_messages 0 means unlimited: an offline persistent
  session keeps every acknowledged QoS 1 message.
- A message dropped by a queue bound is counted per reason in $SYS and
  logged once per episode with the client id and the bound.
- SIGHUP reopens the log file, so logrotate's rename-then-HUP works.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (DISCONNECT_PKT, PUBACK, BrokerTestCase, ack_pkt, main,  # noqa: E402
                      publish_pkt, skip_unless_wisp)


class PromiseCase(BrokerTestCase):

    def go_offline(self, client, client_id):
        """DISCONNECT, close, and wait until the broker has processed it, so
        later publishes find the session offline."""
        offset = self.broker.log_size()
        client.send(DISCONNECT_PKT)
        self.assertTrue(client.wait_closed(), "[MQTT-3.14.4-1] no close after DISCONNECT")
        client.close()
        line = self.broker.wait_log(r"client %s\b.*(disconnect|closed)" % re.escape(client_id),
                                    offset, timeout=5)
        self.assertIsNotNone(line, "no disconnection of %s in the broker log" % client_id)

    def persistent(self, client_id, filters):
        c = self.raw(client_id, clean=False)
        self.assertEqual(c.subscribe(filters), [q for _, q in filters])
        return c

    def publish_many(self, client, topic, count, qos=1, batch=100, payload=b"m%d"):
        """Publishes count QoS 1 messages, pipelined `batch` at a time, and
        checks that every one was acknowledged (PUBACK with its id)."""
        sent = 0
        while sent < count:
            n = min(batch, count - sent)
            client.send(b"".join(publish_pkt(topic, payload % (sent + i), qos=qos,
                                             pid=1 + (sent + i) % 65535) for i in range(n)))
            for i in range(n):
                ack = client.expect(PUBACK)
                self.assertEqual(ack.pid, 1 + (sent + i) % 65535)
            sent += n

    def receive_all(self, client, count):
        """The payloads of the next count PUBLISHes, each acknowledged."""
        return [client.recv_publish().payload for _ in range(count)]


class UnlimitedQueueTest(PromiseCase):
    """config/README.md: max_queued_messages 0 = unlimited."""

    LIMITS = {"max_queued_messages": 0}

    def test_zero_queues_every_message(self):
        """2,000 QoS 1 messages acknowledged while the subscriber is offline
        all reach it, in order [MQTT-4.6.0-6], when it comes back."""
        count = 2000
        c = self.persistent("unlimited", [("uq/t", 1)])
        self.go_offline(c, "unlimited")
        pub = self.raw()
        self.publish_many(pub, "uq/t", count)
        c = self.raw("unlimited", clean=False)
        self.assertIs(c.session_present, True)
        got = self.receive_all(c, count)
        self.assertEqual(got, [b"m%d" % i for i in range(count)])
        c.assert_no_packet(0.3)


if __name__ == "__main__":
    main()
