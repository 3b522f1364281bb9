#!/usr/bin/python3
# ctest: TIMEOUT 240
"""11 hostile auth: what a hostile client could do to logins and access rules.

Issue 11, items 8 to 12:
- a burst of wrong-password CONNECTs does not lock the first login of an
  honest user out (queued checks of closed connections are dropped, checks
  per source address are capped); a connection reset while its password is
  being checked leaves the broker idle (no busy loop on EPOLLHUP);
- a user who connects with another user's client id does not get that
  user's queued messages;
- SIGHUP applies allow_anonymous;
- clients cannot write $SYS/ (the broker's own $SYS values stay its own);
- wisp_passwd refuses user names the broker's loader cannot read back.

Password files are made with wisp_passwd (WISP_PASSWD). Where a test needs
the check to take long enough to race it, the file uses a high iteration
count; every wait is still bounded and synchronised on packets or log lines.
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (IS_MOSQUITTO, PUBACK, Broker, BrokerTestCase, RawClient,  # noqa: E402
                      connect_pkt, main, make_passwd, publish_pkt, skip_unless_wisp)

NOT_AUTHORIZED = 5  # CONNACK return code, MQTT 3.1.1 section 3.2.2.3
BAD_USER_OR_PASSWORD = 4
SERVER_UNAVAILABLE = 3


def clock_ticks(pid):
    """utime + stime of a process in clock ticks (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def sys_counter(client, topic, timeout=15):
    """The value of a $SYS counter: subscribes and reads the retained value."""
    client.subscribe([(topic, 0)], pid=77)
    pkt = client.recv_publish(timeout=timeout)
    return int(pkt.payload)


class AuthDir:
    """A temp dir for password and ACL files, removed at cleanup."""

    def make_auth_dir(self):
        self.auth_dir = tempfile.mkdtemp(prefix="wisp-e2e-hostile-")
        self.addCleanup(shutil.rmtree, self.auth_dir, True)
        return self.auth_dir


@skip_unless_wisp("wisp's reload semantics and log lines")
class ReloadAnonymousTest(AuthDir, BrokerTestCase):
    """Item 10: SIGHUP applies allow_anonymous (it used to be read at start only)."""

    def broker_options(self):
        return {"listener": {"allow_anonymous": True}}

    def test_reload_turning_anonymous_off_refuses_anonymous_clients(self):
        """The broker starts open; a reload adds a password file and
        "allow_anonymous": false. After the log says reloaded, an anonymous
        CONNECT gets CONNACK 5 [MQTT-3.2.2-5 closes it], the anonymous
        client connected before is disconnected, and alice logs in."""
        before = self.raw("anon-before")
        passwd = make_passwd(os.path.join(self.make_auth_dir(), "passwd"), {"alice": "alice-pw"})
        cfg = self.broker.config()
        cfg["listeners"][0]["allow_anonymous"] = False
        cfg["auth"] = {"password_file": passwd}
        offset = self.broker.log_size()
        self.broker.write_config(cfg)
        self.broker.reload()
        self.assertIsNotNone(self.broker.wait_log(r"configuration reloaded", offset, timeout=10))
        self.assertIsNotNone(self.broker.wait_log(r"allow_anonymous is now false", offset, timeout=1))
        c = RawClient(self.broker.port)
        self.on_cleanup(c.close)
        self.assertEqual(c.connect("anon-after"), NOT_AUTHORIZED)
        self.assertTrue(c.wait_closed())
        self.assertTrue(before.wait_closed(), "anonymous client kept after the reload")
        self.assertIsNotNone(self.broker.wait_log(r"anonymous clients no longer allowed", offset))
        self.raw("alice-1", username="alice", password="alice-pw")


if __name__ == "__main__":
    main()
