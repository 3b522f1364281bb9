"""Shared helpers for the wisp_pub/wisp_sub comparison tests.

Every test runs one command line twice, once with the wisp tool and once
with Debian's mosquitto tool, against the same broker, and compares stdout,
stderr (program names normalised) and the exit status.

Nothing here waits a fixed time for something to happen: a subscriber is
known to be subscribed when a retained sentinel published beforehand shows
up in its output (BgTool.wait_for), or, for mosquitto_sub run as a probe,
when its -d trace shows the SUBACK (MosqSub). Every broker started here is
checked when it stops: it must not have died, must exit 0 on SIGTERM and
its log must be free of sanitizer reports (Broker.stop).

Environment (set by CTest): WISP_PUB, WISP_SUB (the tools under test),
BROKER=mosquitto|wisp and WISP_BROKER (path of the wisp broker when
BROKER=wisp). Brokers listen on 127.0.0.1 on a free port.
"""
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

WISP_PUB = os.environ.get("WISP_PUB", "wisp_pub")
WISP_SUB = os.environ.get("WISP_SUB", "wisp_sub")
BROKER = os.environ.get("BROKER", "mosquitto")
TIMEOUT = 20
STOP_TIMEOUT = 10  # seconds for a broker to exit after SIGTERM (ASan leak check included)

# As tests/e2e/wisp_e2e.py: what a sanitizer writes when it finds something.
SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|runtime error:|"
                          r"SUMMARY: (Address|Undefined|Leak)")


# Servers' ports (tests/support/loopback_ports.py: outside the outgoing range).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from loopback_ports import free_port, refused_port  # noqa: E402,F401


def wait_port(port, proc, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("broker exited with %d" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("broker did not listen on %d" % port)


def read_packet(f):
    """(first byte, body) of the next MQTT packet on a binary file object
    (a fake broker's socket), or (None, None) at EOF."""
    head = f.read(1)
    if not head:
        return None, None
    n, mult = 0, 1
    while True:
        b = f.read(1)[0]
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return head[0], f.read(n)


class FakeBroker:
    """A loopback listener serving scripted clients one at a time on its own
    thread: a subclass sets its fields, calls this __init__ (which starts
    listening and serving), and defines session(conn). What a session
    raises is kept in `errors` for the test to assert on."""

    def __init__(self):
        self.errors = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen(8)
        self.port = str(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def close(self):
        self.sock.close()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(TIMEOUT)
                try:
                    self.session(conn)
                except (OSError, ValueError, IndexError) as e:
                    self.errors.append(repr(e))

    read_packet = staticmethod(read_packet)

    def session(self, conn):
        raise NotImplementedError


def broker_env():
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    return env


class BrokerProcess:
    """The start and checked stop shared by Broker and test_tls.TlsBroker:
    subclasses set self.dir and self.port and call self.spawn(cmd)."""

    def spawn(self, cmd):
        self.log_path = os.path.join(self.dir, "broker.log")
        self.log = open(self.log_path, "w")
        # cwd: the wisp broker keeps its store in ./wisp-data.
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir,
                                     env=broker_env())
        wait_port(self.port, self.proc)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """SIGTERM and a bounded wait. Raises AssertionError (with the log)
        when the broker died before, did not exit 0 on SIGTERM or wrote a
        sanitizer report: a client test must not pass over a broken broker."""
        problem = None
        status = self.proc.poll()
        if status is not None:
            problem = "the %s broker died during the tests (status %s)" % (self.kind, status)
        else:
            self.proc.terminate()
            try:
                status = self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problem = "the %s broker did not exit within %ss of SIGTERM" % (self.kind, STOP_TIMEOUT)
            else:
                if status != 0:
                    problem = "the %s broker exited with status %s after SIGTERM" % (self.kind, status)
        self.log.close()
        log = self.log_text()
        excerpt = log[-30000:]
        report = SANITIZER_RE.search(log)
        if report:  # the report itself, wherever it is in a long log
            excerpt = log[max(0, report.start() - 2000):report.start() + 28000]
            problem = (problem + "; " if problem else "") + "sanitizer report in the %s broker log" % self.kind
        shutil.rmtree(self.dir, ignore_errors=True)
        if problem:
            raise AssertionError("%s\n----- broker log (excerpt) -----\n%s\n----- end of broker log -----"
                                 % (problem, excerpt))


class Broker(BrokerProcess):
    """A private broker on a free loopback port (mosquitto or wisp)."""

    def __init__(self, extra_conf="", kind=None, wisp_limits=None):
        self.kind = kind or BROKER
        self.dir = tempfile.mkdtemp(prefix="wisp-e2e-clients-")
        self.port = free_port()
        if self.kind == "wisp":
            cmd = [os.environ["WISP_BROKER"], "-p", str(self.port)]
            if wisp_limits:
                conf = os.path.join(self.dir, "wisp.json")
                with open(conf, "w") as f:
                    json.dump({"listeners": [{"bind": "127.0.0.1", "port": self.port, "protocol": "mqtt",
                                              "allow_anonymous": True}],
                               "limits": wisp_limits}, f)
                cmd += ["-c", conf]
        else:
            conf = os.path.join(self.dir, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write("listener %d 127.0.0.1\n" % self.port)
                f.write(extra_conf or "allow_anonymous true\n")
            cmd = ["mosquitto", "-c", conf]
        self.spawn(cmd)


def tools(kind):
    if kind == "pub":
        return {"wisp": WISP_PUB, "mosquitto": "mosquitto_pub"}
    return {"wisp": WISP_SUB, "mosquitto": "mosquitto_sub"}


def normalise(text, prog):
    """Program names differ by design; everything else must not."""
    return text.replace(os.path.basename(prog), "TOOL")


def run(prog, args, stdin=None, env=None, timeout=TIMEOUT):
    p = subprocess.run([prog] + args, input=stdin, capture_output=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


class BgTool:
    """A client tool running in the background. Its stdout and stderr are
    collected as they come, so that a test can wait for a given output (a
    retained sentinel, a SUBACK line) instead of sleeping."""

    def __init__(self, argv, stdin=subprocess.DEVNULL):
        self.argv = list(argv)
        self.proc = subprocess.Popen(self.argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out, self.err = bytearray(), bytearray()
        self.closed = 0  # pipes at EOF
        self.cond = threading.Condition()
        self.threads = [threading.Thread(target=self._pump, args=(f, b), daemon=True)
                        for f, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.threads:
            t.start()

    def _pump(self, f, buf):
        while True:
            chunk = os.read(f.fileno(), 65536)
            with self.cond:
                if chunk:
                    buf += chunk
                else:
                    self.closed += 1
                self.cond.notify_all()
            if not chunk:
                return

    def describe(self):
        return "%s\nstdout: %r\nstderr: %r" % (" ".join(self.argv), bytes(self.out), bytes(self.err))

    def wait_for(self, needle, timeout=TIMEOUT):
        """Waits until stdout contains needle (bytes), or until
        needle(stdout) is true (a callable). Fails on exit or timeout."""
        test = needle if callable(needle) else (lambda out: needle in out)
        deadline = time.monotonic() + timeout
        with self.cond:
            while not test(bytes(self.out)):
                if self.closed == 2:
                    raise AssertionError("exited (status %s) before printing %r:\n%s"
                                         % (self.proc.wait(timeout=TIMEOUT), needle, self.describe()))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no %r within %ss:\n%s" % (needle, timeout, self.describe()))
                self.cond.wait(remaining)
        return self

    def finish(self, timeout=TIMEOUT):
        """(exit status, stdout, stderr) once the tool exits; killed and
        failed when it does not within timeout."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("did not exit within %ss:\n%s" % (timeout, self.describe()))
        self._close()
        return rc, bytes(self.out), bytes(self.err)

    def kill(self):
        """Kills it if it still runs (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        self._close()

    def _close(self):
        for t in self.threads:
            t.join(timeout=TIMEOUT)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


MSG_MARK = "MSG|"


class MosqSub(BgTool):
    """mosquitto_sub as a probe (not a tool under comparison): -d and a
    line-buffered stdout, so the SUBACK can be awaited and its return codes
    checked; -F MSG_MARK + fmt so messages are told from the trace."""

    def __init__(self, port, topics, fmt, extra=()):
        argv = ["stdbuf", "-oL", "mosquitto_sub", "-p", str(port), "-d", "-F", MSG_MARK + fmt]
        for t in topics:
            argv += ["-t", t]
        super().__init__(argv + list(extra))

    def wait_subscribed(self, granted, timeout=TIMEOUT):
        """Waits for the SUBACK; its return codes must be exactly granted."""
        rx = re.compile(rb"^Subscribed \(mid: \d+\): ([0-9, ]+)$", re.M)
        self.wait_for(lambda out: rx.search(out), timeout)
        codes = [int(c) for c in rx.search(bytes(self.out)).group(1).split(b",")]
        if codes != list(granted):
            self.kill()
            raise AssertionError("SUBACK %r, expected %r:\n%s" % (codes, list(granted), self.describe()))
        return self

    def messages(self, out):
        """The message lines of stdout, without the mark; the -d trace is left out."""
        return [line[len(MSG_MARK):] for line in out.decode("utf-8", "replace").splitlines()
                if line.startswith(MSG_MARK)]


_sentinels = itertools.count(1)


TIME_RE = [
    (re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z[+-]\d{4}"), b"<TST>"),
    (re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"), b"<ISO>"),
    (re.compile(rb"\d{10}\.\d{9}"), b"<UNIX>"),
]


def mask_times(b):
    for rx, rep in TIME_RE:
        b = rx.sub(rep, b)
    return b


class CompareCase(unittest.TestCase):
    """Base class: one broker per test class."""

    broker_conf = ""
    wisp_limits = None

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker(cls.broker_conf, wisp_limits=cls.wisp_limits)
        cls.port = str(cls.broker.port)

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()

    def bg(self, tool):
        """tool (a BgTool or MosqSub), killed at the end of the test whatever happens."""
        self.addCleanup(tool.kill)
        return tool

    def topic(self):
        return "e2e/%s/%d" % (self.id().split(".")[-1], os.getpid())

    def pub(self, topic, payload, *extra):
        """mosquitto_pub, which must exit 0; payload None sends -n."""
        msg = ["-n"] if payload is None else ["-m", payload]
        rc, out, err = run("mosquitto_pub", ["-p", self.port, "-t", topic] + msg + list(extra))
        self.assertEqual(rc, 0, err)

    def clear(self, topic):
        rc, out, err = run("mosquitto_pub", ["-p", self.port, "-t", topic, "-r", "-n"])
        self.assertEqual(rc, 0, err)

    def sentinel(self, topic, extra=()):
        """Publishes a unique retained message on topic (clean it up with
        clear(topic)) and returns the unique part of its payload. A subscriber whose output
        shows it is subscribed [MQTT-3.3.1-6]: retained messages are sent
        after the subscription is in place. It also counts towards -C."""
        mark = "sentinel-%d-%d" % (os.getpid(), next(_sentinels))
        payload = '{"s":"%s"}' % mark  # JSON, for -F %j/%J
        rc, out, err = run("mosquitto_pub", ["-p", self.port, "-t", topic, "-m", payload, "-r", "-q", "1"]
                           + list(extra))
        self.assertEqual(rc, 0, err)
        return mark.encode()

    def compare(self, kind, args, stdin=None, mask=False, check_stderr=True, check_stdout=True):
        results = {}
        for name, prog in tools(kind).items():
            rc, out, err = run(prog, args, stdin=stdin)
            if mask == "digits":  # strftime fields: the clocks differ
                out = re.sub(rb"[0-9]", b"D", out)
            elif mask:
                out = mask_times(out)
            results[name] = (rc, normalise(out.decode("utf-8", "replace"), prog),
                             normalise(err.decode("utf-8", "replace"), prog))
        w, m = results["wisp"], results["mosquitto"]
        self.assertEqual(w[0], m[0], "exit status for %s %r\nwisp: %r\nmosq: %r" % (kind, args, w, m))
        if check_stdout:
            self.assertEqual(w[1], m[1], "stdout for %s %r" % (kind, args))
        else:  # usage text: ours is worded differently, by design
            self.assertEqual(bool(w[1]), bool(m[1]), "stdout presence for %s %r" % (kind, args))
        if check_stderr:
            self.assertEqual(w[2], m[2], "stderr for %s %r" % (kind, args))
        return w
