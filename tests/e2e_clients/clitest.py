"""Shared helpers for the wisp_pub/wisp_sub comparison tests.

Every test runs one command line twice, once with the wisp tool and once
with Debian's mosquitto tool, against the same broker, and compares stdout,
stderr (program names normalised) and the exit status.

Environment (set by CTest): WISP_PUB, WISP_SUB (the tools under test),
BROKER=mosquitto|wisp and WISP_BROKER (path of the wisp broker when
BROKER=wisp). Brokers listen on 127.0.0.1 on a free port.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

WISP_PUB = os.environ.get("WISP_PUB", "wisp_pub")
WISP_SUB = os.environ.get("WISP_SUB", "wisp_sub")
BROKER = os.environ.get("BROKER", "mosquitto")
TIMEOUT = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class Broker:
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
        self.log = open(os.path.join(self.dir, "broker.log"), "w")
        # cwd: the wisp broker keeps its store in ./wisp-data.
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        wait_port(self.port, self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


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

    def topic(self):
        return "e2e/%s/%d" % (self.id().split(".")[-1], os.getpid())

    def pub(self, topic, payload, *extra):
        rc, out, err = run("mosquitto_pub", ["-p", self.port, "-t", topic, "-m", payload] + list(extra))
        self.assertEqual(rc, 0, err)

    def clear(self, topic):
        run("mosquitto_pub", ["-p", self.port, "-t", topic, "-r", "-n"])

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
