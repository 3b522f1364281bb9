#!/usr/bin/python3
# ctest: TIMEOUT 180
"""20 mosquitto_conf: an existing Mosquitto configuration runs unchanged.

One realistic mosquitto.conf (a listener, a password file made with
mosquitto_passwd, an ACL file, persistence, a log file, limits in an
include_dir) runs under Debian's mosquitto and under wisp, one after the
other on the same port, and the same client commands (mosquitto_pub,
mosquitto_sub) must give the same results under both: anonymous and wrong
passwords refused, authenticated publish/subscribe delivered, what the ACL
denies not delivered. Then `wisp --convert-mosquitto-conf` prints JSON that
`wisp --check-config` accepts and that behaves the same again; a key wisp
does not support stops it at start with file:line and the reason; and
`wisp -p PORT` without a configuration keeps the embedded default.

Runs wisp directly (not through Broker, which writes JSON): the file under
test is the configuration.
"""

import json
import os
import pwd
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (MOSQUITTO_BIN, MOSQUITTO_PUB, MOSQUITTO_SUB, SANITIZER_RE, START_TIMEOUT,  # noqa: E402
                      STOP_TIMEOUT, MosqSub, free_port, main, run_wisp, wisp_binary)

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

ACL = """\
# Mosquitto ACL: alice publishes sensor data, bob reads it
user alice
topic readwrite sensors/#
topic deny sensors/secret

user bob
topic read sensors/#

pattern readwrite clients/%u/#
"""

CONF = """\
# Site broker, as it runs under Mosquitto today.
per_listener_settings false

listener {port} 127.0.0.1
max_connections -1

allow_anonymous false
password_file {dir}/passwd
acl_file {dir}/acl

persistence true
persistence_location {dir}/data/
autosave_interval 60

log_dest file {dir}/broker.log
log_type error
log_type warning
log_type notice
log_type information
log_timestamp true

sys_interval 10

include_dir {dir}/conf.d
"""

LIMITS = """\
# Limits, kept apart as Debian's conf.d suggests.
max_inflight_messages 20
max_queued_messages 1000
max_packet_size 1048576
max_keepalive 600
"""


class ConfBroker:
    """Runs argv + [config] until stop(); waits (bounded) for the port."""

    def __init__(self, argv, port, log_path, cwd=None):
        self.argv = argv
        self.cwd = cwd
        self.port = port
        self.log_path = log_path
        self.proc = None

    def start(self):
        out = open(self.log_path + ".stderr", "ab")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop(check=False)
        raise AssertionError("%s did not accept connections on port %d:\n%s"
                             % (" ".join(self.argv), self.port, self.output()))

    def output(self):
        text = ""
        for path in (self.log_path, self.log_path + ".stderr"):
            try:
                with open(path, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except OSError:
                pass
        return text[-20000:]

    def stop(self, check=True):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
                raise AssertionError("%s hung at SIGTERM" % self.argv[0])
        status = self.proc.returncode
        self.proc = None
        if check and status != 0:
            raise AssertionError("%s exited %s:\n%s" % (self.argv[0], status, self.output()))
        if check and SANITIZER_RE.search(self.output()):
            raise AssertionError("sanitizer report:\n%s" % self.output())


def client_args(port, user=None, password=None):
    args = ["-h", "127.0.0.1", "-p", str(port), "-V", "mqttv311"]
    if user:
        args += ["-u", user, "-P", password]
    return args


def pub(port, topic, message, user=None, password=None, qos=1):
    """mosquitto_pub once: (exit status, what it printed)."""
    argv = [MOSQUITTO_PUB] + client_args(port, user, password) + ["-t", topic, "-m", message,
                                                                   "-q", str(qos)]
    cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
    return cp.returncode, (cp.stdout + cp.stderr).decode("utf-8", "replace").strip()


def connack_properties(port, user, password):
    """Maximum QoS and Topic Alias Maximum from a v5 CONNACK (paho)."""
    import paho.mqtt.client as mqtt
    got = queue.Queue()
    client = mqtt.Client(client_id="v5-probe", protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    client.on_connect = lambda c, u, f, rc, props=None: got.put((rc, props))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        rc, props = got.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
    assert rc == 0, "CONNACK %s" % rc
    return {name: getattr(props, name) for name in ("MaximumQoS", "TopicAliasMaximum") if hasattr(props, name)}


def stop_sub(sub):
    sub.proc.kill()
    sub.proc.wait(timeout=10)
    sub.reader.join(timeout=10)
    sub.proc.stdout.close()


def scenario(port):
    """The same client commands, whatever the broker; returns what a user
    sees at each step, for comparison between the brokers."""
    results = []
    results.append(("anonymous publish", pub(port, "sensors/t", "x")))
    results.append(("wrong password", pub(port, "sensors/t", "x", "alice", "wrong")))
    results.append(("unknown user", pub(port, "sensors/t", "x", "mallory", "alicepw")))

    bob = MosqSub(port, "sensors/#", qos=1, extra=client_args(port, "bob", "bobpw")[4:])
    try:
        bob.wait_subscribed()
        results.append(("alice publishes", pub(port, "sensors/temp", "21.5", "alice", "alicepw")))
        topic, _retain, _qos, payload = bob.get()
        results.append(("bob receives", (topic, payload)))

        # Denied by "topic deny": acknowledged, not delivered. The next
        # message, published after it, is the one bob gets.
        results.append(("alice publishes denied topic",
                        pub(port, "sensors/secret", "s", "alice", "alicepw")))
        results.append(("alice publishes after", pub(port, "sensors/after", "a", "alice", "alicepw")))
        topic, _retain, _qos, payload = bob.get()
        results.append(("bob receives only the allowed one", (topic, payload)))

        # bob may read, not write.
        results.append(("bob publishes", pub(port, "sensors/bob", "b", "bob", "bobpw")))
        results.append(("alice publishes mark", pub(port, "sensors/mark", "m", "alice", "alicepw")))
        topic, _retain, _qos, payload = bob.get()
        results.append(("bob's own publish was not delivered", (topic, payload)))
    finally:
        stop_sub(bob)

    # pattern readwrite clients/%u/#
    mine = MosqSub(port, "clients/bob/#", qos=1, extra=client_args(port, "bob", "bobpw")[4:])
    try:
        mine.wait_subscribed()
        results.append(("alice writes into bob's pattern", pub(port, "clients/bob/x", "x", "alice", "alicepw")))
        results.append(("bob writes into his pattern", pub(port, "clients/bob/y", "y", "bob", "bobpw")))
        topic, _retain, _qos, payload = mine.get()
        results.append(("pattern delivers bob's only", (topic, payload)))
    finally:
        stop_sub(mine)

    # A subscription the ACL does not grant: SUBACK 0x80.
    argv = [MOSQUITTO_SUB] + client_args(port, "bob", "bobpw") + ["-t", "admin/#", "-C", "1", "-W", "5"]
    cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
    results.append(("bob subscribes where he may not",
                    (cp.returncode, (cp.stdout + cp.stderr).decode("utf-8", "replace").strip())))
    return results


EXPECTED = {
    "alice publishes": (0, ""),
    "bob receives": ("sensors/temp", "21.5"),
    "alice publishes denied topic": (0, ""),
    "bob receives only the allowed one": ("sensors/after", "a"),
    "bob's own publish was not delivered": ("sensors/mark", "m"),
    "pattern delivers bob's only": ("clients/bob/y", "y"),
}


# Where Wisp answers differently on the wire (the outcome is the same; both
# are README.md's "Migrating from Mosquitto" differences): a refused login
# gets CONNACK 4 "bad user name or password" from Wisp, 5 "not authorised"
# from Mosquitto 2.0.11; a subscription the ACL does not grant gets SUBACK
# 0x80 from Wisp, while Mosquitto 2.0.11 grants it and delivers nothing.
LOGIN_STEPS = ("anonymous publish", "wrong password", "unknown user")
REFUSED_LOGIN = {
    4: "Connection error: Connection Refused: bad user name or password.\nError: The connection was refused.",
    5: "Connection error: Connection Refused: not authorised.\nError: The connection was refused.",
}
NOTHING_DELIVERED = {(27, "Timed out"), (0, "All subscription requests were denied.")}


def outcome(step, got):
    """What a user sees, with the known wire differences folded."""
    if step in LOGIN_STEPS and REFUSED_LOGIN.get(got[0]) == got[1]:
        return "login refused"
    if step == "bob subscribes where he may not" and got in NOTHING_DELIVERED:
        return "nothing delivered"
    return got


class MosquittoConfTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.wisp = wisp_binary()
        cls.dir = tempfile.mkdtemp(prefix="wisp-e2e-mosqconf-")
        os.mkdir(os.path.join(cls.dir, "data"))
        os.mkdir(os.path.join(cls.dir, "conf.d"))
        passwd = os.path.join(cls.dir, "passwd")
        for i, (user, password) in enumerate((("alice", "alicepw"), ("bob", "bobpw"))):
            subprocess.run([MOSQUITTO_PASSWD] + (["-c"] if i == 0 else []) + ["-b", passwd, user, password],
                           check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        with open(os.path.join(cls.dir, "acl"), "w") as f:
            f.write(ACL)
        with open(os.path.join(cls.dir, "conf.d", "limits.conf"), "w") as f:
            f.write(LIMITS)
        with open(os.path.join(cls.dir, "conf.d", "README"), "w") as f:
            f.write("Only files ending in .conf are read.\n")
        if os.geteuid() == 0:
            # Run as root, mosquitto drops to its own user (the `user` key,
            # default "mosquitto"), as the Debian service does: give that
            # user what the Debian package gives it.
            try:
                pw = pwd.getpwnam("mosquitto")
            except KeyError:
                pw = pwd.getpwnam("nobody")
            os.chmod(cls.dir, 0o755)
            for name in ("passwd", "acl", "conf.d", "conf.d/limits.conf"):
                os.chmod(os.path.join(cls.dir, name), 0o755 if name == "conf.d" else 0o644)
            os.chown(os.path.join(cls.dir, "data"), pw.pw_uid, pw.pw_gid)
            log = os.path.join(cls.dir, "broker.log")
            open(log, "a").close()
            os.chown(log, pw.pw_uid, pw.pw_gid)
        cls.port = free_port()
        cls.conf = os.path.join(cls.dir, "mosquitto.conf")
        with open(cls.conf, "w") as f:
            f.write(CONF.format(port=cls.port, dir=cls.dir))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def run_under(self, argv):
        broker = ConfBroker(argv, self.port, os.path.join(self.dir, "broker.log"))
        broker.start()
        try:
            results = scenario(self.port)
        except BaseException:
            broker.stop(check=False)
            sys.stderr.write(broker.output())
            raise
        broker.stop()
        return results

    def check_expected(self, results):
        got = dict(results)
        for step, want in EXPECTED.items():
            self.assertEqual(got[step], want, step)
        for step in LOGIN_STEPS:
            self.assertEqual(outcome(step, got[step]), "login refused", step)
        self.assertEqual(got["bob publishes"], (0, ""), "a denied publish is still acknowledged")
        step = "bob subscribes where he may not"
        self.assertEqual(outcome(step, got[step]), "nothing delivered", step)

    def compare(self, reference, results):
        for (step, want), (step2, got) in zip(reference, results):
            self.assertEqual(step, step2)
            self.assertEqual(outcome(step, got), outcome(step, want),
                             "%s: mosquitto gave %r, wisp %r" % (step, want, got))
        self.assertEqual(len(reference), len(results))

    def test_same_file_same_results_under_mosquitto_and_wisp(self):
        reference = self.run_under([MOSQUITTO_BIN, "-c", self.conf])
        self.check_expected(reference)
        results = self.run_under([self.wisp, "-c", self.conf])
        self.check_expected(results)
        self.compare(reference, results)
        # Wisp's store sits next to Mosquitto's, in persistence_location.
        names = os.listdir(os.path.join(self.dir, "data"))
        self.assertTrue(any(n.startswith("log.") for n in names), names)

    def test_converted_json_is_accepted_and_behaves_the_same(self):
        cp = run_wisp(["--convert-mosquitto-conf", self.conf])
        self.assertEqual(cp.returncode, 0, cp.stdout)
        doc = json.loads(cp.stdout)
        self.assertEqual(doc["listeners"], [{"port": self.port, "bind": "127.0.0.1", "max_connections": 0,
                                             "allow_anonymous": False}])
        self.assertEqual(doc["auth"], {"password_file": self.dir + "/passwd", "acl_file": self.dir + "/acl"})
        self.assertEqual(doc["limits"]["max_keepalive"], 600)
        self.assertEqual(doc["persistence"], {"enabled": True, "dir": self.dir + "/data/", "fsync": "everysec"})
        path = os.path.join(self.dir, "wisp.json")
        with open(path, "w") as f:
            f.write(cp.stdout)
        check = run_wisp(["--check-config", path])
        self.assertEqual(check.returncode, 0, check.stdout)
        self.assertIn("configuration OK", check.stdout)
        self.check_expected(self.run_under([self.wisp, "-c", path]))
        # and a JSON file is not converted again
        again = run_wisp(["--convert-mosquitto-conf", path])
        self.assertEqual(again.returncode, 1)
        self.assertIn("already a JSON configuration", again.stdout)

    def test_unsupported_key_is_refused_with_file_line_and_reason(self):
        path = os.path.join(self.dir, "bridged.conf")
        with open(self.conf) as f:
            text = f.read()
        lines = text.count("\n")
        with open(path, "w") as f:
            f.write(text + "connection uplink\naddress 192.0.2.1:1883\nlocal_clientid gw\n")
        want = ("%s:%d: local_clientid: not supported by Wisp's bridges: the local session is $bridge/<connection>"
                % (path, lines + 3))
        cp = run_wisp(["-c", path])
        self.assertEqual(cp.returncode, 1, cp.stdout)
        self.assertIn(want, cp.stdout)
        check = run_wisp(["--check-config", path])
        self.assertEqual(check.returncode, 1)
        self.assertIn(want, check.stdout)
        # an included file names itself
        inc = os.path.join(self.dir, "conf.d", "zz-bad.conf")
        with open(inc, "w") as f:
            f.write("# added later\nqueue_qos0_messages true\n")
        try:
            cp = run_wisp(["-c", self.conf])
        finally:
            os.unlink(inc)
        self.assertEqual(cp.returncode, 1, cp.stdout)
        self.assertIn("%s:2: queue_qos0_messages: not supported by Wisp" % inc, cp.stdout)

    def test_sighup_rereads_the_mosquitto_conf_under_both(self):
        """A reload reads the mosquitto.conf again (allow_anonymous turned
        on), under both brokers alike."""
        path = os.path.join(self.dir, "reload.conf")
        with open(self.conf) as f:
            text = f.read()
        for argv in ([MOSQUITTO_BIN, "-c", path], [self.wisp, "-c", path]):
            with open(path, "w") as f:
                f.write(text)
            broker = ConfBroker(argv, self.port, os.path.join(self.dir, "broker.log"))
            broker.start()
            try:
                self.assertEqual(outcome("anonymous publish", pub(self.port, "sensors/t", "x")),
                                 "login refused")
                with open(path, "w") as f:
                    f.write(text.replace("allow_anonymous false", "allow_anonymous true"))
                broker.proc.send_signal(signal.SIGHUP)
                # The reload is asynchronous: retry, bounded in count and time.
                deadline = time.monotonic() + 10
                for _ in range(100):
                    got = pub(self.port, "anon/t", "x", qos=0)
                    if got[0] == 0 or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                self.assertEqual(got, (0, ""), "%s: anonymous still refused after SIGHUP" % argv[0])
            finally:
                broker.stop()

    def test_mqtt5_listener_limits_are_announced_alike(self):
        """max_qos and max_topic_alias on the listener reach a v5 client's
        CONNACK the same way under both brokers."""
        path = os.path.join(self.dir, "v5.conf")
        with open(self.conf) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("max_connections -1\n", "max_connections -1\nmax_qos 1\nmax_topic_alias 5\n"))
        seen = []
        for argv in ([MOSQUITTO_BIN, "-c", path], [self.wisp, "-c", path]):
            broker = ConfBroker(argv, self.port, os.path.join(self.dir, "broker.log"))
            broker.start()
            try:
                seen.append(connack_properties(self.port, "alice", "alicepw"))
            finally:
                broker.stop()
        self.assertEqual(seen[0], {"MaximumQoS": 1, "TopicAliasMaximum": 5})
        self.assertEqual(seen[1], seen[0])

    def test_debian_stock_file_runs_unchanged(self):
        """Debian's own /etc/mosquitto/mosquitto.conf (pid_file, persistence,
        log file, include_dir), with only its absolute paths moved into the
        test directory, runs under Wisp: the pid file holds the broker's pid
        while it runs and is gone after SIGTERM."""
        with open("/etc/mosquitto/mosquitto.conf") as f:
            stock = f.read()
        root = os.path.join(self.dir, "stock")
        for d in ("run/mosquitto", "var/lib/mosquitto", "var/log/mosquitto", "etc/mosquitto/conf.d"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        for d in ("/run/", "/var/lib/", "/var/log/", "/etc/mosquitto/"):
            self.assertIn(d, stock)
            stock = stock.replace(" " + d, " " + root + d)
        conf = os.path.join(root, "etc/mosquitto/mosquitto.conf")
        with open(conf, "w") as f:
            f.write(stock)
        port = free_port()
        with open(os.path.join(root, "etc/mosquitto/conf.d/local.conf"), "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\n" % port)
        pid_file = os.path.join(root, "run/mosquitto/mosquitto.pid")
        broker = ConfBroker([self.wisp, "-c", conf], port, os.path.join(root, "var/log/mosquitto/mosquitto.log"))
        broker.start()
        try:
            # The port accepts (into its backlog) just before the file is written.
            deadline = time.monotonic() + START_TIMEOUT
            text = ""
            while not text.endswith("\n") and time.monotonic() < deadline:
                try:
                    with open(pid_file) as f:
                        text = f.read()
                except FileNotFoundError:
                    time.sleep(0.01)
            self.assertEqual(text.strip(), str(broker.proc.pid))
            self.assertEqual(pub(port, "stock/topic", "x"), (0, ""))
        finally:
            broker.stop()
        self.assertFalse(os.path.exists(pid_file), "the pid_file was left behind")
        self.assertTrue(os.listdir(os.path.join(root, "var/lib/mosquitto")), "nothing persisted")

    def test_port_without_configuration_keeps_the_embedded_default(self):
        port = free_port()
        # cwd: the default store, ./wisp-data, goes there
        broker = ConfBroker([self.wisp, "-p", str(port)], port, os.path.join(self.dir, "default.log"),
                            cwd=self.dir)
        broker.start()
        try:
            # anonymous MQTT on 127.0.0.1, as before
            self.assertEqual(pub(port, "any/topic", "x"), (0, ""))
        finally:
            broker.stop()

    def test_port_moves_both_local_only_listeners_under_both(self):
        """A mosquitto.conf with no listener (Mosquitto 2.0's local-only
        mode: 127.0.0.1 and ::1) run with -p PORT: both brokers listen on
        PORT at both addresses (Wisp moved 127.0.0.1 alone, the probe's
        p_localonly.sh)."""
        path = os.path.join(self.dir, "localonly.conf")
        with open(path, "w") as f:
            f.write("persistence false\n")
        port = free_port()
        for argv in ([MOSQUITTO_BIN, "-c", path, "-p", str(port)], [self.wisp, "-c", path, "-p", str(port)]):
            broker = ConfBroker(argv, port, os.path.join(self.dir, "localonly.log"), cwd=self.dir)
            broker.start()
            try:
                socket.create_connection(("::1", port), timeout=5).close()
            except OSError as e:
                self.fail("%s -p %d: nothing on [::1]:%d (%s)" % (argv[0], port, port, e))
            finally:
                broker.stop()


if __name__ == "__main__":
    main()
