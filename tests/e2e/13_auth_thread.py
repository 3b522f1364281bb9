#!/usr/bin/python3
# ctest: TIMEOUT 300 RUN_SERIAL TRUE
"""13 auth thread: the password promise of config/README.md (issue 14, "The
password thread promise"), with a hash at 2,000,000 PBKDF2 iterations
(several seconds per verification, far longer than a round trip).

- Checks run on helper threads, never on the event loop: while a login is
  being verified, another client's QoS 1 round trip completes.
- The remembered right password is fast and wrong passwords are not: a
  second login with the right password completes while a wrong-password
  login for the same user, started before it, is still being verified.

Both are proven by ordering (the pending login has no CONNACK yet when the
other finishes), never by a time threshold. The debug log line "verifying
the password of 'user'" shows the verification was started.
"""

import os
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, BrokerTestCase, RawClient, connect_pkt, main,  # noqa: E402
                      make_passwd, skip_unless_wisp)

ITERATIONS = 2000000
VERIFY_TIMEOUT = 180  # seconds a 2,000,000-iteration check may take under ASan on a busy machine
_passwd_cache = {}


def slow_passwd(directory):
    """A password file with user 'slow' (password 'right') at 2,000,000
    iterations. wisp_passwd pays the PBKDF2 once; the file is copied for
    every test."""
    if "text" not in _passwd_cache:
        path = make_passwd(os.path.join(directory, "passwd.src"), {"slow": "right"},
                           iterations=ITERATIONS)
        with open(path) as f:
            _passwd_cache["text"] = f.read()
        os.unlink(path)
    path = os.path.join(directory, "passwd")
    with open(path, "w") as f:
        f.write(_passwd_cache["text"])
    assert "$%d$" % ITERATIONS in _passwd_cache["text"], _passwd_cache["text"]
    return path


@skip_unless_wisp("mosquitto verifies passwords on its only thread")
class PasswordThreadTest(BrokerTestCase):

    def broker_options(self):
        self.tmp = tempfile.mkdtemp(prefix="wisp-e2e-auth-")
        # connect_timeout also bounds the verification: under a loaded CI
        # machine 2,000,000 iterations can take longer than its 10 s default.
        return {"listener": {"allow_anonymous": True},
                "config": {"auth": {"password_file": slow_passwd(self.tmp)},
                           "limits": {"connect_timeout": VERIFY_TIMEOUT}}}

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_login(self, client_id, password):
        """Sends a CONNECT as user 'slow' and waits (bounded) for the debug
        line showing its verification started; returns the RawClient,
        whose CONNACK is still to come."""
        offset = self.broker.log_size()
        c = RawClient(self.broker.port, timeout=VERIFY_TIMEOUT)
        self.on_cleanup(c.close)
        c.send(connect_pkt(client_id, username="slow", password=password))
        self.assertIsNotNone(self.broker.wait_log(r"verifying the password of 'slow'", offset, timeout=10),
                             "the login was not handed to the verifier")
        return c

    def assert_pending(self, c, what):
        """c has no CONNACK yet: its verification is still running."""
        try:
            pkt = c.recv_packet(0.01)
        except socket.timeout:
            return
        self.fail("%s: got %r, expected the login still being verified" % (what, pkt))

    def connack(self, c):
        ack = c.expect(CONNACK, timeout=VERIFY_TIMEOUT)
        return ack.body[1]

    def test_round_trip_while_a_login_is_verified(self):
        """A QoS 1 round trip between two anonymous clients completes while
        a 2,000,000-iteration verification is running; the login then
        succeeds."""
        sub = self.raw("rt-sub")
        self.assertEqual(sub.subscribe([("rt/t", 1)]), [1])
        pub = self.raw("rt-pub")
        login = self.start_login("slow-1", "right")
        for i in range(3):
            pub.publish("rt/t", b"while verifying %d" % i, qos=1, pid=1 + i)
            self.assertEqual(sub.recv_publish().payload, b"while verifying %d" % i)
            self.assert_pending(login, "after round trip %d" % i)
        self.assertEqual(self.connack(login), 0)
        self.assertTrue(login.is_open())

    def test_remembered_password_is_fast_a_wrong_one_is_not(self):
        """After one verified login, the same right password logs in again
        while a wrong password for the same user, sent before it, is still
        being verified (and is then refused with CONNACK 4)."""
        first = self.start_login("slow-first", "right")
        self.assertEqual(self.connack(first), 0)
        first.close()
        wrong = self.start_login("slow-wrong", "wrong")
        again = RawClient(self.broker.port)
        self.on_cleanup(again.close)
        self.assertEqual(again.connect("slow-again", username="slow", password="right"), 0)
        self.assert_pending(wrong, "after the remembered login")
        self.assertTrue(again.is_open())
        self.assertEqual(self.connack(wrong), 4, "a wrong password must be refused")
        self.assertTrue(wrong.wait_closed())


if __name__ == "__main__":
    main()
