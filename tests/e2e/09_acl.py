#!/usr/bin/python3
"""09 acl: authentication, authorization and configuration checking.

The password file is made with the built wisp_passwd (WISP_PASSWD; a low
iteration count keeps logins fast), or mosquitto_passwd for the reference
broker. The listener sets allow_anonymous false.

Covers: wrong password (CONNACK 4), anonymous refused (CONNACK 5), right
password accepted; a %u pattern ACL confining each user to its own tree;
denied PUBLISH acknowledged but not delivered; denied SUBSCRIBE answered
0x80; SIGHUP adding a user without dropping a live subscriber; a reload
with an invalid file keeping the old configuration; start-up refusal of bad
configurations naming file, key path and reason; wisp --check-config.
"""

import itertools
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (IS_MOSQUITTO, PUBCOMP, PUBREC, PUBREL, Broker,  # noqa: E402
                      BrokerTestCase, RawClient, ack_pkt, free_port, main, make_passwd,
                      paho_client, paho_get, paho_stop, paho_subscribe, publish_pkt,
                      run_wisp, skip_unless_wisp)

USERS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw"}

ACL = """\
# Every user owns home/<user name>/; nobody else writes or reads there,
# except admin, who reads and writes the whole home tree.
pattern readwrite home/%u/#

user admin
topic readwrite home/#

# Everyone reads public/, only admin writes it.
user alice
topic read public/#
user bob
topic read public/#
user admin
topic readwrite public/#
topic read $SYS/#
"""

# CONNACK return codes (MQTT 3.1.1 section 3.2.2.3)
BAD_USER_OR_PASSWORD = 4
NOT_AUTHORIZED = 5


class AuthCase(BrokerTestCase):

    def broker_options(self):
        self.auth_dir = tempfile.mkdtemp(prefix="wisp-e2e-auth-")
        self.addCleanup(shutil.rmtree, self.auth_dir, True)
        self.passwd = make_passwd(os.path.join(self.auth_dir, "passwd"), USERS)
        self.acl = os.path.join(self.auth_dir, "acl")
        with open(self.acl, "w") as f:
            f.write(ACL)
        return {"listener": {"allow_anonymous": False},
                "config": {"auth": {"password_file": self.passwd, "acl_file": self.acl}}}

    def login(self, user, client_id=None, password=None):
        """A raw client logged in as user (CONNACK 0 asserted)."""
        return self.raw(client_id or "%s-%d" % (user, time.monotonic_ns() % 100000),
                        username=user, password=password or USERS[user])

    def connack(self, **kw):
        """The CONNACK return code for a CONNECT with these fields; after a
        refusal the broker must close the connection [MQTT-3.2.2-5]."""
        c = RawClient(self.broker.port)
        self.on_cleanup(c.close)
        rc = c.connect("probe-%d" % (time.monotonic_ns() % 100000), **kw)
        if rc != 0:
            self.assertTrue(c.wait_closed(), "[MQTT-3.2.2-5] no close after CONNACK %d" % rc)
        c.close()
        return rc

    def user_args(self, user, password=None):
        return ["-u", user, "-P", password or USERS[user]]


class AuthenticationTest(AuthCase):

    def test_right_password_accepted(self):
        """The right user name and password get CONNACK 0 (raw client, and
        mosquitto_pub exits 0)."""
        self.assertEqual(self.connack(username="alice", password="alice-pw"), 0)
        cp = self.pub("home/alice/t", "hi", qos=1, extra=self.user_args("alice"), check=False)
        self.assertEqual(cp.returncode, 0, cp.stderr)

    def test_wrong_password_refused_with_4(self):
        """A wrong password gets CONNACK 4 (bad user name or password) and
        the connection is closed; mosquitto_pub exits non-zero."""
        want = NOT_AUTHORIZED if IS_MOSQUITTO else BAD_USER_OR_PASSWORD
        self.assertEqual(self.connack(username="alice", password="wrong"), want)
        cp = self.pub("home/alice/t", "x", qos=1, extra=self.user_args("alice", "wrong"),
                      check=False)
        self.assertEqual(cp.returncode, want, cp.stderr)  # mosquitto_pub exits with the CONNACK code

    @skip_unless_wisp("wisp counts refused logins under $SYS/broker/clients/login_failures")
    def test_refused_logins_are_counted(self):
        """Failed logins are counted and visible to an operator in $SYS."""
        self.connack(username="alice", password="wrong")
        self.connack(username="mallory", password="x")
        self.connack()  # anonymous, where it is refused
        admin = self.login("admin")
        admin.subscribe([("$SYS/broker/clients/login_failures", 0)])
        # The retained value is from the last $SYS update (every 10 s by
        # default); the count shows up at the next one at the latest.
        seen = []
        deadline = time.monotonic() + 25
        while b"3" not in seen and time.monotonic() < deadline:
            seen.append(admin.recv_publish(timeout=15).payload)
        self.assertIn(b"3", seen)
        self.assertFalse([v for v in seen if v not in (b"0", b"1", b"2", b"3")], seen)

    def test_unknown_user_refused_with_4(self):
        """An unknown user name gets CONNACK 4 as well (no hint which part
        was wrong)."""
        want = NOT_AUTHORIZED if IS_MOSQUITTO else BAD_USER_OR_PASSWORD
        self.assertEqual(self.connack(username="mallory", password="alice-pw"), want)

    def test_anonymous_refused_with_5(self):
        """No user name where allow_anonymous is false: CONNACK 5 (not
        authorized); mosquitto_pub without -u fails."""
        self.assertEqual(self.connack(), NOT_AUTHORIZED)
        cp = self.pub("public/t", "x", qos=1, check=False)
        self.assertEqual(cp.returncode, NOT_AUTHORIZED, cp.stderr)

    def test_user_name_without_password_refused(self):
        """A known user name without a password is refused (4 or 5)."""
        self.assertIn(self.connack(username="alice"), (BAD_USER_OR_PASSWORD, NOT_AUTHORIZED))

    def test_password_is_case_sensitive(self):
        self.assertNotEqual(self.connack(username="alice", password="ALICE-PW"), 0)

    def test_paho_login(self):
        """paho with username_pw_set logs in and round-trips in its own tree."""
        c = paho_client(self.broker.port, "paho-bob", username="bob", password="bob-pw")
        self.on_cleanup(lambda: paho_stop(c))
        self.assertEqual(paho_subscribe(c, [("home/bob/#", 1)]), [1])
        c.publish("home/bob/x", "mine", qos=1).wait_for_publish(timeout=5)
        self.assertEqual(paho_get(c).payload, b"mine")

    @skip_unless_wisp("log wording differs")
    def test_password_never_logged(self):
        """Neither the right nor a wrong password appears in the (debug) log."""
        self.connack(username="alice", password="alice-pw")
        self.connack(username="alice", password="Sup3rS3cretWrong")
        # The refusal is logged: the log being checked covers both logins.
        self.assertIsNotNone(self.broker.wait_log(r"login refused for user 'alice'", 0, timeout=5),
                             "the refused login is not logged")
        log = self.broker.log()
        self.assertNotIn("alice-pw", log)
        self.assertNotIn("Sup3rS3cretWrong", log)


class AuthorizationTest(AuthCase):

    def test_pattern_acl_user_reads_only_own_tree(self):
        """pattern readwrite home/%u/#: alice and bob each receive what admin
        publishes under their own home, and nothing from the other's."""
        alice = self.login("alice")
        bob = self.login("bob")
        self.assertEqual(alice.subscribe([("home/alice/#", 1)]), [1])
        self.assertEqual(bob.subscribe([("home/bob/#", 1)]), [1])
        admin = self.login("admin")
        admin.publish("home/alice/door", "a1", qos=1, pid=1)
        admin.publish("home/bob/door", "b1", qos=1, pid=2)
        got = alice.recv_publish()
        self.assertEqual((got.topic, got.payload), ("home/alice/door", b"a1"))
        got = bob.recv_publish()
        self.assertEqual((got.topic, got.payload), ("home/bob/door", b"b1"))
        # Controls, published after both: each one's next message is its own
        # control, so the other's message was not delivered in between.
        admin.publish("home/alice/end", "a-end", qos=1, pid=3)
        admin.publish("home/bob/end", "b-end", qos=1, pid=4)
        self.assertEqual(alice.recv_publish().payload, b"a-end")
        self.assertEqual(bob.recv_publish().payload, b"b-end")

    def test_wildcard_subscription_delivers_only_readable_topics(self):
        """alice subscribed to home/alice/# and public/#: admin's messages to
        home/bob/ never reach her, public/ ones do."""
        alice = self.login("alice")
        self.assertEqual(alice.subscribe([("home/alice/#", 1), ("public/#", 1)]), [1, 1])
        admin = self.login("admin")
        admin.publish("home/bob/secret", "no", qos=1, pid=1)
        admin.publish("public/news", "yes", qos=1, pid=2)
        got = alice.recv_publish()
        self.assertEqual((got.topic, got.payload), ("public/news", b"yes"))
        alice.assert_no_packet(0.3)

    def test_denied_subscribe_gets_0x80(self):
        """[MQTT-3.9.3] a SUBSCRIBE the ACL denies gets 0x80 for that filter,
        while the allowed filters of the same packet are granted; nothing
        is delivered on the denied one."""
        alice = self.login("alice")
        codes = alice.subscribe([("home/bob/#", 1), ("home/alice/#", 2), ("#", 0)])
        # mosquitto 2.0.11 grants, then filters deliveries
        self.assertEqual(codes, [1, 2, 0] if IS_MOSQUITTO else [0x80, 2, 0x80])
        admin = self.login("admin")
        admin.publish("home/bob/x", "hidden", qos=1, pid=1)
        admin.publish("home/alice/x", "visible", qos=1, pid=2)
        got = alice.recv_publish()
        self.assertEqual((got.topic, got.payload), ("home/alice/x", b"visible"))
        alice.assert_no_packet(0.3)

    def test_denied_publish_acknowledged_not_delivered(self):
        """A PUBLISH the ACL denies is acknowledged as its QoS requires
        (PUBACK for QoS 1, PUBREC/PUBCOMP for QoS 2) but not delivered; the
        connection stays usable; an allowed publish right after arrives."""
        admin = self.login("admin")
        self.assertEqual(admin.subscribe([("home/#", 2), ("public/#", 2)]), [2, 2])
        alice = self.login("alice")
        alice.publish("home/bob/x", "denied-q1", qos=1, pid=1)  # asserts the PUBACK
        alice.send(publish_pkt("public/x", "denied-q2", qos=2, pid=2))
        self.assertEqual(alice.expect(PUBREC).pid, 2)
        alice.send(ack_pkt(PUBREL, 2))
        self.assertEqual(alice.expect(PUBCOMP).pid, 2)
        alice.publish("home/bob/y", "denied-q0", qos=0)
        alice.publish("home/alice/x", "allowed", qos=1, pid=3)
        got = admin.recv_publish()
        self.assertEqual((got.topic, got.payload), ("home/alice/x", b"allowed"))
        admin.assert_no_packet(0.3)
        alice.ping()

    @skip_unless_wisp("log wording differs")
    def test_denied_publish_logged_at_debug(self):
        """The denial is logged (debug) with the client and topic."""
        alice = self.login("alice", client_id="alice-logged")
        offset = self.broker.log_size()
        alice.publish("home/bob/z", "denied", qos=1)
        line = self.broker.wait_log(r"home/bob/z", offset)
        self.assertIsNotNone(line, "denied publish not logged")
        self.assertRegex(line, r"(?i)alice|denied|not allowed|not authori")

    def test_mosquitto_clients_with_acl(self):
        """mosquitto_sub -u bob on home/bob/# gets mosquitto_pub -u admin's
        message there, not alice's attempt to write into bob's tree."""
        s = self.sub("home/bob/#", qos=1, extra=self.user_args("bob")).wait_subscribed()
        self.pub("home/bob/t", "from-alice", qos=1, extra=self.user_args("alice"))
        self.pub("home/bob/t", "from-admin", qos=1, extra=self.user_args("admin"))
        self.assertEqual(s.get(), ("home/bob/t", False, 1, "from-admin"))
        s.assert_nothing(0.5)

    def test_retained_message_not_sent_to_unauthorized_subscriber(self):
        """A retained message under home/bob/ is not delivered on subscribe to
        alice, who may not read there; bob gets it."""
        admin = self.login("admin")
        admin.publish("home/bob/state", "kept", qos=1, retain=True, pid=1)
        admin.publish("home/alice/state", "hers", qos=1, retain=True, pid=2)
        alice = self.login("alice")
        # mosquitto 2.0.11 grants, then filters deliveries
        self.assertEqual(alice.subscribe([("home/bob/state", 1)], pid=1), [1] if IS_MOSQUITTO else [0x80])
        # Control: a second SUBSCRIBE, for a retained message alice may
        # read. Had bob's been sent for the first, it would come before this
        # SUBACK (subscribe() fails on any other packet) or this message.
        self.assertEqual(alice.subscribe([("home/alice/state", 1)], pid=2), [1])
        got = alice.recv_publish()
        self.assertEqual((got.topic, got.payload, got.retain), ("home/alice/state", b"hers", True))
        bob = self.login("bob")
        self.assertEqual(bob.subscribe([("home/bob/state", 1)]), [1])
        got = bob.recv_publish()
        self.assertEqual((got.payload, got.retain), (b"kept", True))


class ReloadTest(AuthCase):

    def wait_login(self, user, password, want=0, timeout=5.0):
        """Polls until CONNACK for user/password is `want` (bounded)."""
        deadline = time.monotonic() + timeout
        rc = None
        while time.monotonic() < deadline:
            rc = self.connack(username=user, password=password)
            if rc == want:
                return rc
            time.sleep(0.1)
        return rc

    def test_sighup_adds_user_without_dropping_subscriber(self):
        """The password file is rewritten with a new user carol and the broker
        gets SIGHUP: carol can log in (and use home/carol/ through the %u
        pattern), while alice's subscription, connected throughout, still
        receives afterwards."""
        alice = self.login("alice", client_id="alice-live")
        self.assertEqual(alice.subscribe([("home/alice/#", 1)]), [1])
        self.assertNotEqual(self.connack(username="carol", password="carol-pw"), 0)
        users = dict(USERS, carol="carol-pw")
        make_passwd(self.passwd + ".new", users)
        os.replace(self.passwd + ".new", self.passwd)
        self.broker.reload()
        self.assertEqual(self.wait_login("carol", "carol-pw"), 0, "carol not added by SIGHUP")
        carol = self.raw("carol-1", username="carol", password="carol-pw")
        self.assertEqual(carol.subscribe([("home/carol/#", 1)]), [1])
        admin = self.login("admin")
        admin.publish("home/alice/after", "still-here", qos=1, pid=1)
        admin.publish("home/carol/hello", "welcome", qos=1, pid=2)
        got = alice.recv_publish()
        self.assertEqual((got.topic, got.payload), ("home/alice/after", b"still-here"))
        self.assertEqual(carol.recv_publish().payload, b"welcome")
        alice.ping()

    def test_sighup_removes_user(self):
        """A user deleted from the file can no longer log in after SIGHUP."""
        self.assertEqual(self.connack(username="bob", password="bob-pw"), 0)
        users = dict(USERS)
        del users["bob"]
        make_passwd(self.passwd + ".new", users)
        os.replace(self.passwd + ".new", self.passwd)
        self.broker.reload()
        self.assertNotEqual(self.wait_login("bob", "bob-pw", want=BAD_USER_OR_PASSWORD
                                            if not IS_MOSQUITTO else NOT_AUTHORIZED), 0)

    def test_sighup_reloads_acl(self):
        """An ACL rewritten to let alice read public/ no more takes effect on
        SIGHUP for new subscriptions. Each probe has a positive control: admin
        publishes public/probe, then home/alice/control, on one connection, to
        alice subscribed to both; the control arriving first proves the probe
        was dropped (not merely slow)."""
        with open(self.acl + ".new", "w") as f:
            f.write(ACL.replace("user alice\ntopic read public/#\n", ""))
        os.replace(self.acl + ".new", self.acl)
        offset = self.broker.log_size()
        self.broker.reload()
        if not IS_MOSQUITTO:  # wisp says when the reload is done: one probe must do
            self.assertIsNotNone(self.broker.wait_log(r"configuration reloaded", offset, timeout=5),
                                 "no 'configuration reloaded' in the log")
        admin = self.login("admin")
        deadline = time.monotonic() + 5
        for attempt in itertools.count(1):
            alice = self.login("alice")
            codes = alice.subscribe([("public/#", 1), ("home/alice/#", 1)])
            admin.publish("public/probe", "p%d" % attempt, qos=1, pid=1)
            admin.publish("home/alice/control", "c%d" % attempt, qos=1, pid=2)
            got = alice.recv_publish()
            if got.topic == "home/alice/control":
                # Denied at SUBSCRIBE by wisp (0x80, section 3.9.3);
                # mosquitto 2.0.11 grants, then filters deliveries.
                self.assertEqual(codes, [1, 1] if IS_MOSQUITTO else [0x80, 1])
                self.assertEqual(got.payload, b"c%d" % attempt)
                break
            # Not reloaded yet: the probe, then the control.
            self.assertEqual((got.topic, got.payload), ("public/probe", b"p%d" % attempt))
            self.assertEqual(alice.recv_publish().payload, b"c%d" % attempt)
            self.assertEqual(codes, [1, 1])
            alice.close()
            if not IS_MOSQUITTO:
                self.fail("wisp logged the reload, yet alice still reads public/")
            self.assertLess(time.monotonic(), deadline, "ACL not reloaded by SIGHUP")

    def test_reload_with_invalid_password_file_keeps_old(self):
        """A password file with a bad line makes the reload fail: the old
        users still log in, the new one in the bad file does not, and the
        log names the file, the line and why."""
        alice = self.login("alice", client_id="alice-live")
        self.assertEqual(alice.subscribe([("home/alice/#", 1)]), [1])
        with open(self.passwd) as f:
            good = f.read()
        offset = self.broker.log_size()
        with open(self.passwd + ".new", "w") as f:
            f.write(good + "this line is not a password entry\n")
        os.replace(self.passwd + ".new", self.passwd)
        make_passwd(self.passwd + ".extra", {"dave": "dave-pw"})
        with open(self.passwd + ".extra") as f:
            dave = f.read()
        with open(self.passwd, "a") as f:
            f.write(dave)
        self.broker.reload()
        if not IS_MOSQUITTO:
            line = self.broker.wait_log(re.escape(self.passwd) + r":\d+", offset, timeout=5)
            self.assertIsNotNone(line, "the failed reload is not logged with file:line")
            self.assertEqual(self.connack(username="dave", password="dave-pw"), BAD_USER_OR_PASSWORD)
        else:
            # mosquitto skips the bad line and loads the rest: dave logging in
            # shows the reload is done (a different choice from wisp's).
            self.assertEqual(self.wait_login("dave", "dave-pw"), 0, "mosquitto did not reload")
        self.assertEqual(self.connack(username="alice", password="alice-pw"), 0)
        self.assertEqual(self.connack(username="admin", password="admin-pw"), 0)
        self.login("admin").publish("home/alice/x", "alive", qos=1)
        self.assertEqual(alice.recv_publish().payload, b"alive")

    @skip_unless_wisp("mosquitto.conf is not JSON")
    def test_reload_with_invalid_config_keeps_old(self):
        """A configuration file that fails validation on SIGHUP is ignored:
        the log names the file, the key path and the reason, and the broker
        keeps running with the old settings (users still log in)."""
        cfg = self.broker.config()
        cfg["limits"] = {"max_inflit": 5}
        offset = self.broker.log_size()
        self.broker.write_config(cfg)
        self.broker.reload()
        line = self.broker.wait_log(r"limits\.max_inflit", offset, timeout=5)
        self.assertIsNotNone(line, "the failed reload is not logged with the key path")
        self.assertIn(self.broker.config_path, line)
        self.assertRegex(line, r"unknown key.*max_inflight")
        self.assertEqual(self.connack(username="alice", password="alice-pw"), 0)
        self.assertEqual(self.connack(), NOT_AUTHORIZED)
        self.broker.write_config("{ not json")
        offset = self.broker.log_size()
        self.broker.reload()
        line = self.broker.wait_log(r"line \d+, column \d+", offset, timeout=5)
        self.assertIsNotNone(line, "the failed reload of invalid JSON is not logged")
        self.assertEqual(self.connack(username="bob", password="bob-pw"), 0)


# ---------------------------------------------------------------- configuration checking

# A name for 127.0.0.1 alone: localhost where it has no ::1 (which the
# broker would bind instead), else 127.1 (inet_aton's short form).
LOCALHOST_V4 = ("localhost" if {ai[4][0] for ai in socket.getaddrinfo("localhost", 1, 0, socket.SOCK_STREAM)}
                == {"127.0.0.1"} else "127.1")

@skip_unless_wisp("mosquitto.conf is not JSON")
class ConfigCheckTest(unittest.TestCase):
    """Bad configurations: the broker refuses to start (exit 1) and
    wisp --check-config exits 1, each with one line naming the file, the
    key path and the reason (config/README.md)."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="wisp-e2e-cfg-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write(self, cfg, name="wisp.json"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))
        return path

    def good_config(self):
        passwd = make_passwd(os.path.join(self.dir, "passwd"), {"alice": "alice-pw"})
        acl = os.path.join(self.dir, "acl")
        with open(acl, "w") as f:
            f.write(ACL)
        return {"listeners": [{"bind": "127.0.0.1", "port": free_port(),
                               "allow_anonymous": False}],
                "limits": {"max_inflight": 10, "max_queued_messages": 100},
                "auth": {"password_file": passwd, "acl_file": acl},
                "log": {"level": "info"}}

    # (name, change to the good config, key path regex, reason regex)
    BAD = [
        ("unknown_key_did_you_mean", lambda c: c["limits"].update(max_inflit=5),
         r"limits\.max_inflit", r"unknown key.*did you mean 'max_inflight'"),
        ("unknown_top_level_key", lambda c: c.update(listener=[]),
         r"listener\b", r"unknown key.*did you mean 'listeners'"),
        ("wrong_type_string_for_integer", lambda c: c["limits"].update(max_inflight="20"),
         r"limits\.max_inflight", r"expected|type|integer|number"),
        ("wrong_type_bool", lambda c: c["listeners"][0].update(allow_anonymous="no"),
         r"listeners\[0\]\.allow_anonymous", r"expected|type|boolean"),
        ("out_of_range_port", lambda c: c["listeners"][0].update(port=70000),
         r"listeners\[0\]\.port", r"out of range"),
        ("duplicate_port", lambda c: c["listeners"].append(dict(c["listeners"][0])),
         r"listeners\[1\]\.port", r"duplicate"),
        ("missing_password_file", lambda c: c["auth"].update(password_file="/nonexistent/pw"),
         r"auth\.password_file", r"not found|no such file|cannot"),
        ("unknown_log_level", lambda c: c["log"].update(level="loud"),
         r"log\.level", r"debug|info|notice|invalid|unknown|expected"),
    ]

    def check_refused(self, path, key_rx, reason_rx):
        for argv in (["--check-config", path], ["-c", path]):
            with self.subTest(argv=argv[0]):
                cp = run_wisp(argv, cwd=self.dir)
                self.assertEqual(cp.returncode, 1, cp.stdout)
                self.assertRegex(cp.stdout, re.escape(path) + r":.*" + key_rx + r".*:.*"
                                 + reason_rx)

    def test_bad_configurations_refused(self):
        for name, change, key_rx, reason_rx in self.BAD:
            with self.subTest(case=name):
                cfg = self.good_config()
                change(cfg)
                self.check_refused(self.write(cfg, name + ".json"), key_rx, reason_rx)

    def test_invalid_json_refused_with_position(self):
        path = self.write('{\n  "limits": {\n    "max_inflight": 10,\n  }\n}\n')
        cp = run_wisp(["--check-config", path], cwd=self.dir)
        self.assertEqual(cp.returncode, 1, cp.stdout)
        self.assertRegex(cp.stdout, re.escape(path) + r": line \d+, column \d+")

    def test_invalid_password_file_refused(self):
        """A password file with a malformed line: the broker does not start,
        and the message names the password file and the line."""
        cfg = self.good_config()
        with open(cfg["auth"]["password_file"], "a") as f:
            f.write("bob:plaintext-is-not-allowed\n")
        path = self.write(cfg)
        cp = run_wisp(["-c", path], cwd=self.dir)
        self.assertEqual(cp.returncode, 1, cp.stdout)
        self.assertRegex(cp.stdout, re.escape(cfg["auth"]["password_file"]) + r":2\b")

    def files(self, c, d):
        """Writes the files of START_ONLY's cases into d; returns c."""
        for name, text in (("plain.pw", "alice:secret\n"), ("bad.acl", "user alice\ntopic bogus foo\n"),
                           ("six.pw", "roger:$6$clQ4Ocu312S0qWgl$Cv2wUxgEN73c6C6jlBkswqR4AkHsvDLWvtEXZZ8NpsBLgP1W"
                                      "Ao/qA+WXcmEN/mjDNgdUwcxRAveqNMs2xUVQYA==\n")):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        return c

    # What --check-config called OK and start-up refused (the operator
    # probe's check_vs_start.sh): (name, change(cfg, dir), error regex).
    START_ONLY = [
        ("plain_text_password_file", lambda c, d: c["auth"].update(password_file=os.path.join(d, "plain.pw")),
         r"plain\.pw:1: user 'alice': not a \$pbkdf2-sha512\$ hash"),
        ("mosquitto_6_password_file", lambda c, d: c["auth"].update(password_file=os.path.join(d, "six.pw")),
         r"six\.pw:1: user 'roger': mosquitto \$6\$ hashes"),
        ("bad_acl", lambda c, d: c["auth"].update(acl_file=os.path.join(d, "bad.acl")),
         r"bad\.acl:2: unknown access 'bogus'"),
        ("unresolvable_bind", lambda c, d: c["listeners"][0].update(bind="no-such-host.invalid"),
         r"wisp\.json: listeners\[0\]\.bind: no-such-host\.invalid: "),
        ("same_port_by_name_and_address", lambda c, d: c["listeners"].append(
            dict(c["listeners"][0], bind=LOCALHOST_V4)),
         r"wisp\.json: listeners\[1\]\.port: %s port \d+: listeners\[0\] listens there" % LOCALHOST_V4),
        ("pid_file_in_missing_directory", lambda c, d: c.update(pid_file="/nonexistent/wisp.pid"),
         r"wisp\.json: pid_file: cannot write '/nonexistent/wisp\.pid': /nonexistent: No such file"),
    ]

    def test_check_config_refuses_what_start_up_refuses(self):
        """Each START_ONLY file: --check-config exits 1 with the very line
        start-up exits 1 with (after start-up's "wisp: " prefix)."""
        for name, change, error_rx in self.START_ONLY:
            with self.subTest(case=name):
                d = os.path.join(self.dir, name)
                os.mkdir(d)
                cfg = self.files(self.good_config(), d)
                change(cfg, d)
                path = self.write(cfg, os.path.join(name, "wisp.json"))
                check = run_wisp(["--check-config", path], cwd=self.dir)
                start = run_wisp(["-c", path], cwd=self.dir)
                self.assertEqual(check.returncode, 1, check.stdout)
                self.assertEqual(start.returncode, 1, start.stdout)
                self.assertRegex(check.stdout, error_rx)
                line = [ln for ln in start.stdout.splitlines() if re.search(error_rx, ln)]
                self.assertEqual(["wisp: " + check.stdout.strip()], line, start.stdout)

    def test_port_in_use_named_by_key_path_and_checked_without_binding(self):
        """A second broker on a running one's port exits 1 naming the file
        and listeners[0].port; --check-config of the same file says OK
        (it binds nothing: the running broker holds the port)."""
        cfg = self.good_config()
        b = Broker(listener={"allow_anonymous": False}, config={"auth": cfg["auth"]})
        self.addCleanup(b.cleanup)
        with b:
            cfg["listeners"][0]["port"] = b.port
            path = self.write(cfg)
            cp = run_wisp(["-c", path], cwd=self.dir)
            self.assertEqual(cp.returncode, 1, cp.stdout)
            self.assertRegex(cp.stdout, r"wisp: %s: listeners\[0\]\.port: cannot listen on 127\.0\.0\.1 port %d: "
                                        r"Address already in use" % (re.escape(path), b.port))
            cp = run_wisp(["--check-config", path], cwd=self.dir)
            self.assertEqual(cp.returncode, 0, cp.stdout)
            # An http listener's port in use is named the same way.
            cfg["listeners"][0]["port"] = 0
            cfg["listeners"].append({"protocol": "http", "bind": "127.0.0.1", "port": b.port})
            path = self.write(cfg)
            cp = run_wisp(["-c", path], cwd=self.dir)
            self.assertEqual(cp.returncode, 1, cp.stdout)
            self.assertRegex(cp.stdout, r"wisp: %s: listeners\[1\]\.port: cannot listen on 127\.0\.0\.1 port %d: "
                                        r"Address already in use" % (re.escape(path), b.port))

    def test_check_config_accepts_good_file(self):
        """wisp --check-config exits 0 on a valid file (with auth) and does
        not start a broker."""
        path = self.write(self.good_config())
        cp = run_wisp(["--check-config", path], cwd=self.dir)
        self.assertEqual(cp.returncode, 0, cp.stdout)

    def test_check_config_accepts_example_files(self):
        """The example config/default.json is valid."""
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        cp = run_wisp(["--check-config", os.path.join(repo, "config", "default.json")],
                      cwd=repo)
        self.assertEqual(cp.returncode, 0, cp.stdout)

    def test_broker_starts_with_good_file(self):
        """The same good file starts a broker that enforces it."""
        cfg = self.good_config()
        b = Broker(listener={"allow_anonymous": False}, config={"auth": cfg["auth"]})
        self.addCleanup(b.cleanup)
        with b:
            with RawClient(b.port) as c:
                self.assertEqual(c.connect("a", username="alice", password="alice-pw"), 0)
            with RawClient(b.port) as c:
                self.assertEqual(c.connect("anon"), NOT_AUTHORIZED)


if __name__ == "__main__":
    main()
