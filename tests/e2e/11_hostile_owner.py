#!/usr/bin/python3
# ctest: TIMEOUT 180
"""11 hostile owner: a persistent session stays its owner's across restarts.

Issue 11, item 9: a session belongs to the user whose CONNECT created it; a
CONNECT by another user with that client id gets CONNACK 5. The store records
the owner in SESSION_PUT (record version 2, docs/persistence.md), so after a
restart the rule holds from the first CONNECT on, whether the session comes
back from the log or from a snapshot, and whether its owner is a user or an
anonymous client. A store written before owners were recorded still loads: its
sessions are bound by their next login, which records the owner, so the next
restart keeps it.

Synchronised on CONNACKs, PUBACKs and log lines; restarts are SIGTERM and a
fresh start on the same data directory (./wisp-data in the broker's dir).
"""

import os
import re
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (DISCONNECT_PKT, BrokerTestCase, RawClient, main, make_passwd,  # noqa: E402
                      skip_unless_wisp)

NOT_AUTHORIZED = 5  # CONNACK return code, MQTT 3.1.1 section 3.2.2.3

ACL = """\
topic readwrite public/#
pattern readwrite home/%u/#
user admin
topic readwrite home/#
topic read $SYS/#
user alice
topic deny home/alice/secret/#
"""

USERS = {"alice": "alice-pw", "eve": "eve-pw", "admin": "admin-pw"}


# ---- a store as the previous Wisp wrote it (docs/persistence.md) ----

POLY = 0x82F63B78
CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ POLY if _c & 1 else _c >> 1
    CRC_TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ CRC_TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def s16(b):
    return struct.pack("<H", len(b)) + b


def b32(b):
    return struct.pack("<I", len(b)) + b


SALT = 0x0BADC0DE


def frame(rtype, payload, version=1):
    h = struct.pack("<IBBH", len(payload), rtype, version, 0)
    return h + struct.pack("<II", crc32c(h, SALT), crc32c(payload, SALT)) + payload


def old_store_log(client, filt, topic, payloads):
    """log.0000000000000001 holding a persistent session as a Wisp without
    owners wrote it: SESSION_PUT version 1 (no owner), one QoS 1
    subscription, and one queued QoS 1 message per payload."""
    h = b"WISP-LOG" + struct.pack("<IIQI", 1, SALT, 1, 0)
    out = h + struct.pack("<I", crc32c(h))
    out += frame(5, s16(client) + struct.pack("<BBHI", 4, 0, 1, 0))      # SESSION_PUT v1
    out += frame(7, s16(client) + s16(filt) + struct.pack("<BI", 1, 0))  # SUB_ADD
    for i, p in enumerate(payloads, 1):
        out += frame(1, struct.pack("<QQBB", i, 0, 1, 0) + s16(topic) + b32(b"") + b32(p))  # MSG_PUT
        out += frame(9, s16(client) + struct.pack("<QBB", i, 1, 0))                       # QUEUE_ADD
    return out


@skip_unless_wisp("wisp's store records session owners; the reference broker runs without persistence")
class OwnerAfterRestartTest(BrokerTestCase):

    def broker_options(self):
        self.auth_dir = tempfile.mkdtemp(prefix="wisp-e2e-owner-")
        self.addCleanup(shutil.rmtree, self.auth_dir, True)
        passwd = make_passwd(os.path.join(self.auth_dir, "passwd"), USERS)
        acl = os.path.join(self.auth_dir, "acl")
        with open(acl, "w") as f:
            f.write(ACL)
        # Anonymous clients are allowed so that a session can belong to one;
        # the smallest compaction threshold lets a test reach a snapshot.
        return {"listener": {"allow_anonymous": True},
                "config": {"auth": {"password_file": passwd, "acl_file": acl},
                           "persistence": {"compact_min_size": 4096}}}

    @property
    def data_dir(self):
        return os.path.join(self.broker.dir, "wisp-data")

    def connack(self, client_id, user=None, clean=False):
        """(client, CONNACK return code) for a CONNECT as `user` (None: anonymous)."""
        c = RawClient(self.broker.port)
        self.on_cleanup(c.close)
        kw = {"username": user, "password": USERS[user]} if user else {}
        return c, c.connect(client_id, clean=clean, **kw)

    def login(self, client_id, user=None, clean=False):
        c, rc = self.connack(client_id, user, clean)
        self.assertEqual(rc, 0, "%s refused its own client id %s" % (user or "anonymous", client_id))
        return c

    def go_offline(self, client, client_id):
        offset = self.broker.log_size()
        client.send(DISCONNECT_PKT)
        self.assertTrue(client.wait_closed(), "[MQTT-3.14.4-1] no close after DISCONNECT")
        line = self.broker.wait_log(r"client %s\b.*(disconnect|closed)" % re.escape(client_id), offset, timeout=5)
        self.assertIsNotNone(line, "no disconnection of %s in the broker log" % client_id)

    def restart(self):
        """SIGTERM (clean exit asserted), then a start on the same data directory."""
        self.broker.stop()
        self.broker.exit_status = None
        offset = self.broker.log_size()
        self.broker.start()
        self.assertIsNotNone(self.broker.wait_log(r"restored \d+ sessions", offset, timeout=10))

    def queue_for_alice(self, payloads):
        """alice's persistent session "alice-phone", subscribed to
        home/alice/# at QoS 1 and offline, with `payloads` queued by admin
        (each PUBACKed, so the broker promised to keep it)."""
        alice = self.login("alice-phone", "alice")
        self.assertEqual(alice.subscribe([("home/alice/#", 1)]), [1])
        self.go_offline(alice, "alice-phone")
        admin = self.login("admin-1", "admin", clean=True)
        for i, p in enumerate(payloads):
            admin.publish("home/alice/inbox", p, qos=1, pid=i + 1)
        admin.close()

    def assert_eve_refused(self, client_id="alice-phone", owner="user 'alice'"):
        """eve's CONNECTs with the id, persistent and clean, get CONNACK 5
        [MQTT-3.2.2-5: then the connection is closed], logged with the owner."""
        offset = self.broker.log_size()
        for clean in (False, True):
            eve, rc = self.connack(client_id, "eve", clean)
            self.assertEqual(rc, NOT_AUTHORIZED, "eve took %s over after a restart (clean=%s)" % (client_id, clean))
            self.assertTrue(eve.wait_closed(), "[MQTT-3.2.2-5] no close after CONNACK 5")
        pattern = r"%s.*refused to user 'eve'.*belongs to %s" % (re.escape(client_id), re.escape(owner))
        self.assertIsNotNone(self.broker.wait_log(pattern, offset))

    def assert_alice_gets(self, payloads):
        alice = self.login("alice-phone", "alice")
        self.assertTrue(alice.session_present, "[MQTT-3.2.2-2] alice's session was not kept")
        self.assertEqual([alice.recv_publish().payload for _ in payloads], payloads)

    def test_owner_survives_a_restart(self):
        """alice's session with two queued messages; restart; eve logs in
        first with alice's client id and gets CONNACK 5 (persistent and
        clean: a clean one would have ended alice's session); alice then
        resumes her session and gets both messages."""
        self.queue_for_alice([b"m1", b"m2"])
        self.restart()
        self.assert_eve_refused()
        self.assert_alice_gets([b"m1", b"m2"])

    def test_owner_survives_a_compaction_and_a_restart(self):
        """As above, with enough queued (8 x 1 KiB) for the log to pass
        compact_min_size: the session comes back from the snapshot, which
        carries its owner too."""
        payloads = [(b"%d" % i) * 1024 for i in range(8)]
        offset = self.broker.log_size()
        self.queue_for_alice(payloads)
        self.assertIsNotNone(self.broker.wait_log(r"compaction to generation \d+ complete", offset, timeout=10),
                             "the log was not compacted")
        self.restart()
        self.assertTrue(any(n.startswith("snap.") for n in os.listdir(self.data_dir)))
        self.assert_eve_refused()
        self.assert_alice_gets(payloads)

    def test_restored_owner_acl_applies_while_offline(self):
        """alice subscribes to home/alice/# (granted, each topic checked
        against her ACL, which denies her home/alice/secret/#). After a
        restart, with her session offline, admin publishes to
        home/alice/secret/x and home/alice/ok: the restored session already
        has alice's rules, so only the second is queued for her (nothing is
        left for her login's re-check to drop) and it is the only one she
        gets."""
        alice = self.login("alice-phone", "alice")
        self.assertEqual(alice.subscribe([("home/alice/#", 1)]), [1])
        self.go_offline(alice, "alice-phone")
        self.restart()
        admin = self.login("admin-2", "admin", clean=True)
        admin.publish("home/alice/secret/x", b"not-for-alice", qos=1, pid=1)
        admin.publish("home/alice/ok", b"for-alice", qos=1, pid=2)
        offset = self.broker.log_size()
        alice = self.login("alice-phone", "alice")
        self.assertEqual(alice.recv_publish().payload, b"for-alice")
        alice.assert_no_packet(0.3)
        # Her login re-checks what was queued (before its CONNACK) and logs
        # what it drops: nothing, since the denied message never got in.
        self.assertIsNotNone(self.broker.wait_log(r"alice-phone resumed its session \(1 in flight", offset))
        self.assertNotRegex(self.broker.log_since(offset), r"alice-phone: dropped \d+ queued")

    def test_anonymous_owner_survives_a_restart(self):
        """A session created by an anonymous client stays an anonymous
        client's: after a restart eve's CONNECT with its id gets CONNACK 5,
        and an anonymous client resumes it."""
        anon = self.login("anon-sensor")
        self.assertEqual(anon.subscribe([("public/#", 1)]), [1])
        self.go_offline(anon, "anon-sensor")
        self.restart()
        self.assert_eve_refused("anon-sensor", "an anonymous client")
        anon = self.login("anon-sensor")
        self.assertTrue(anon.session_present)

    def test_store_without_owners_loads_and_its_first_login_binds(self):
        """A data directory written before owners were recorded (SESSION_PUT
        version 1) still loads with alice-phone's session and two queued
        messages. Its owner is unknown, so the first login binds it: eve
        gets it, but none of alice's messages (re-checked against eve's
        ACL, dropped and logged), and alice is then refused with 5. That
        login wrote the owner: after another restart alice is still
        refused and eve resumes the session."""
        self.broker.stop()
        self.broker.exit_status = None
        shutil.rmtree(self.data_dir)
        os.mkdir(self.data_dir)
        with open(os.path.join(self.data_dir, "log.0000000000000001"), "wb") as f:
            f.write(old_store_log(b"alice-phone", b"home/alice/#", b"home/alice/inbox", [b"m1", b"m2"]))
        offset = self.broker.log_size()
        self.broker.start()
        self.assertIsNotNone(self.broker.wait_log(r"restored 1 sessions, 2 queued messages", offset, timeout=10))
        offset = self.broker.log_size()
        eve = self.login("alice-phone", "eve")
        self.assertTrue(eve.session_present)
        self.assertIsNotNone(self.broker.wait_log(r"alice-phone: dropped 2 queued.*user 'eve'", offset))
        eve.assert_no_packet(0.3)
        self.go_offline(eve, "alice-phone")
        _, rc = self.connack("alice-phone", "alice")
        self.assertEqual(rc, NOT_AUTHORIZED)
        self.restart()
        _, rc = self.connack("alice-phone", "alice")
        self.assertEqual(rc, NOT_AUTHORIZED, "the owner bound by the first login was not recorded")
        eve = self.login("alice-phone", "eve")
        self.assertTrue(eve.session_present)


if __name__ == "__main__":
    main()
