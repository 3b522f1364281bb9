"""Harness for the Wisp end-to-end tests (tests/e2e/NN_*.py import it).

What it provides:
- Broker: a context manager that runs the broker under test on 127.0.0.1 on a
  free port with a generated config, and stops it with SIGTERM. A non-zero
  exit status (a crash, a sanitizer report, a leak found at exit) fails the
  test, and the broker log is printed whenever a test fails.
- BrokerTestCase: a unittest.TestCase that starts one broker per test method,
  so tests never see each other's retained messages or sessions.
- RawClient: a socket MQTT 3.1.1 client built from hand-made packets, for
  exact return codes and malformed input.
- MosqSub / mosquitto_pub(): the Debian mosquitto clients, always bounded.
- paho_client(): a connected paho-mqtt 1.6 client with its network loop running.
- TLS and auth (07_tls, 09_acl): Broker(listener=..., config=...) takes extra
  listener and top-level keys in wisp's JSON schema (translated to
  mosquitto.conf for the reference broker); make_certs() runs
  certs/make-certs.sh into a temp dir; client_tls_context() and RawClient(tls=)
  speak MQTT over TLS; make_passwd() writes a password file with wisp_passwd
  (WISP_PASSWD) or mosquitto_passwd; run_wisp() runs the binary to completion
  (--check-config, configurations that must be refused).

Environment:
- WISP_BIN: the wisp binary (set by CTest to $<TARGET_FILE:wisp>).
- WISP_PASSWD: the wisp_passwd tool (set by CTest to $<TARGET_FILE:wisp_passwd>).
- WISP_E2E_BROKER=mosquitto: run /usr/sbin/mosquitto with an equivalent
  mosquitto.conf instead, to check the suite itself against the reference
  broker. Tests that assert wisp-only choices skip there (skip_unless_wisp).

Every wait is bounded: sockets have timeouts and subprocesses run with
timeout=. Run with /usr/bin/python3 (Debian's, which has paho).
"""

import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True

BROKER_KIND = os.environ.get("WISP_E2E_BROKER", "wisp")
IS_MOSQUITTO = BROKER_KIND == "mosquitto"
MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_CERTS = os.path.join(REPO_ROOT, "certs", "make-certs.sh")

START_TIMEOUT = 10.0  # seconds for the broker to accept a TCP connection
STOP_TIMEOUT = 10.0   # seconds for the broker to exit after SIGTERM (ASan leak check included)
IO_TIMEOUT = 5.0      # default wait for an expected packet

# Packet types (MQTT 3.1.1 section 2.2.1)
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

PACKET_NAMES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
    7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
    12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH",
}


def keepalive_close_bound(keepalive):
    """Seconds within which a silent client with this keepalive must be closed.
    The spec says 1.5 periods [MQTT-3.1.2-24]; we allow 2.5 s of slack on top.
    mosquitto 2.0 checks keepalives only every few seconds (measured: 5.4 s
    for keepalive 1), so it gets a wider bound; the suite still checks that it
    closes, and not too early."""
    return 1.5 * keepalive + (8.0 if IS_MOSQUITTO else 2.5)


def skip_unless_wisp(reason):
    """Decorator for tests of choices the spec leaves to the broker, where
    mosquitto chose differently (reason says how)."""
    return unittest.skipIf(IS_MOSQUITTO, "mosquitto: " + reason)


# ---------------------------------------------------------------- packets

def varint(n):
    """Remaining Length encoding (MQTT 3.1.1 section 2.2.3), minimal form."""
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def mqtt_str(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return struct.pack("!H", len(s)) + s


def packet(first_byte, body):
    return bytes([first_byte]) + varint(len(body)) + body


def connect_pkt(client_id="", clean=True, keepalive=60, proto_name="MQTT", level=4,
                will=None, username=None, password=None):
    """will = (topic, payload, qos, retain) or None."""
    flags = 0
    if clean:
        flags |= 0x02
    payload = mqtt_str(client_id)
    if will is not None:
        wtopic, wpayload, wqos, wretain = will
        flags |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
        payload += mqtt_str(wtopic) + mqtt_str(wpayload)
    if username is not None:
        flags |= 0x80
        payload += mqtt_str(username)
    if password is not None:
        flags |= 0x40
        payload += mqtt_str(password)
    var = mqtt_str(proto_name) + bytes([level, flags]) + struct.pack("!H", keepalive)
    return packet(0x10, var + payload)


def publish_pkt(topic, payload=b"", qos=0, retain=False, dup=False, pid=None):
    if isinstance(payload, str):
        payload = payload.encode()
    first = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = mqtt_str(topic)
    if qos > 0:
        body += struct.pack("!H", pid if pid is not None else 1)
    return packet(first, body + payload)


def subscribe_pkt(pid, filters):
    """filters: list of (filter, qos)."""
    body = struct.pack("!H", pid)
    for f, q in filters:
        body += mqtt_str(f) + bytes([q])
    return packet(0x82, body)


def unsubscribe_pkt(pid, filters):
    body = struct.pack("!H", pid)
    for f in filters:
        body += mqtt_str(f)
    return packet(0xA2, body)


def ack_pkt(ptype, pid):
    """PUBACK, PUBREC, PUBREL (flags 0b0010 as [MQTT-3.6.1-1] requires) or PUBCOMP."""
    first = (ptype << 4) | (0x02 if ptype == PUBREL else 0)
    return packet(first, struct.pack("!H", pid))


PINGREQ_PKT = b"\xc0\x00"
DISCONNECT_PKT = b"\xe0\x00"


class Packet:
    def __init__(self, first, body):
        self.first = first
        self.type = first >> 4
        self.flags = first & 0x0F
        self.body = body

    @property
    def name(self):
        return PACKET_NAMES.get(self.type, "type%d" % self.type)

    # PUBLISH fields
    @property
    def qos(self):
        return (self.flags >> 1) & 3

    @property
    def retain(self):
        return bool(self.flags & 1)

    @property
    def dup(self):
        return bool(self.flags & 8)

    def publish_fields(self):
        """(topic bytes, packet id or None, payload bytes) of a PUBLISH."""
        (tlen,) = struct.unpack("!H", self.body[:2])
        topic = self.body[2:2 + tlen]
        pos = 2 + tlen
        pid = None
        if self.qos > 0:
            (pid,) = struct.unpack("!H", self.body[pos:pos + 2])
            pos += 2
        return topic, pid, self.body[pos:]

    @property
    def topic(self):
        return self.publish_fields()[0].decode("utf-8")

    @property
    def payload(self):
        return self.publish_fields()[2]

    @property
    def pid(self):
        if self.type == PUBLISH:
            return self.publish_fields()[1]
        return struct.unpack("!H", self.body[:2])[0]

    def __repr__(self):
        return "<%s flags=%#x body=%r>" % (self.name, self.flags, self.body[:64])


class Closed(Exception):
    """The broker closed the connection while a packet was expected."""


class RawClient:
    """A blocking socket MQTT client. All reads have a timeout."""

    def __init__(self, port, timeout=IO_TIMEOUT, tls=None, server_hostname="localhost"):
        """tls: an ssl.SSLContext to speak MQTT over TLS (the handshake is
        done here, bounded by timeout)."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
            except BaseException:
                self.sock.close()
                raise
        self.buf = b""
        self.timeout = timeout
        self.stash = []  # packets read ahead while waiting for a PUBREL
        self.session_present = None  # from the last CONNACK

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            chunk = b""
        if not chunk:
            raise Closed("connection closed by broker")
        self.buf += chunk

    def recv_packet(self, timeout=None):
        """The next packet; raises Closed on EOF and socket.timeout on timeout."""
        if self.stash:
            return self.stash.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 2:
                mult, length, pos = 1, 0, 1
                complete = False
                while pos < len(self.buf) and pos <= 4:
                    b = self.buf[pos]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    pos += 1
                    if not b & 0x80:
                        complete = True
                        break
                if complete and len(self.buf) >= pos + length:
                    pkt = Packet(self.buf[0], self.buf[pos:pos + length])
                    self.buf = self.buf[pos + length:]
                    return pkt
            self._fill(deadline)

    def expect(self, ptype, timeout=None):
        try:
            pkt = self.recv_packet(timeout)
        except socket.timeout:
            raise AssertionError("expected %s, got nothing within %ss"
                                 % (PACKET_NAMES[ptype], self.timeout if timeout is None
                                    else timeout)) from None
        if pkt.type != ptype:
            raise AssertionError("expected %s, got %r" % (PACKET_NAMES[ptype], pkt))
        return pkt

    def connect(self, client_id="", clean=True, keepalive=60, **kw):
        """Sends CONNECT and returns the CONNACK return code."""
        self.send(connect_pkt(client_id, clean, keepalive, **kw))
        ack = self.expect(CONNACK)
        if len(ack.body) != 2:
            raise AssertionError("CONNACK body must be 2 bytes: %r" % ack)
        if ack.body[0] & 0xFE:
            raise AssertionError("CONNACK flags bits 7-1 are reserved [MQTT-3.2.2]: %r" % ack)
        self.session_present = bool(ack.body[0] & 1)
        return ack.body[1]

    def subscribe(self, filters, pid=1):
        """filters: [(filter, qos)] or a single filter string (QoS 0).
        Returns the SUBACK return codes."""
        if isinstance(filters, str):
            filters = [(filters, 0)]
        self.send(subscribe_pkt(pid, filters))
        ack = self.expect(SUBACK)
        if ack.pid != pid:
            raise AssertionError("SUBACK packet id %d != %d [MQTT-3.8.4-2]" % (ack.pid, pid))
        return list(ack.body[2:])

    def unsubscribe(self, filters, pid=1):
        self.send(unsubscribe_pkt(pid, filters))
        ack = self.expect(UNSUBACK)
        if ack.pid != pid:
            raise AssertionError("UNSUBACK packet id %d != %d [MQTT-3.10.4-4]" % (ack.pid, pid))

    def ping(self, timeout=None):
        self.send(PINGREQ_PKT)
        self.expect(PINGRESP, timeout)

    def publish(self, topic, payload=b"", qos=0, retain=False, pid=1):
        """Publishes and completes the QoS flow as the sender."""
        self.send(publish_pkt(topic, payload, qos, retain, pid=pid))
        if qos == 1:
            ack = self.expect(PUBACK)
            assert ack.pid == pid, "PUBACK for %d, expected %d" % (ack.pid, pid)
        elif qos == 2:
            rec = self.expect(PUBREC)
            assert rec.pid == pid, "PUBREC for %d, expected %d" % (rec.pid, pid)
            self.send(ack_pkt(PUBREL, pid))
            comp = self.expect(PUBCOMP)
            assert comp.pid == pid, "PUBCOMP for %d, expected %d" % (comp.pid, pid)

    def recv_publish(self, timeout=None):
        """The next PUBLISH, acknowledging QoS 1/2 as a receiver."""
        pkt = self.expect(PUBLISH, timeout)
        if pkt.qos == 1:
            self.send(ack_pkt(PUBACK, pkt.pid))
        elif pkt.qos == 2:
            self.send(ack_pkt(PUBREC, pkt.pid))
            # Other packets may come before the PUBREL; keep them for later.
            ahead = []
            for _ in range(1000):
                nxt = self.recv_packet(timeout)
                if nxt.type == PUBREL and nxt.pid == pkt.pid:
                    break
                ahead.append(nxt)
            else:
                raise AssertionError("no PUBREL for packet id %d" % pkt.pid)
            self.stash.extend(ahead)
            assert nxt.flags == 0x2, "PUBREL flags must be 0010 [MQTT-3.6.1-1]"
            self.send(ack_pkt(PUBCOMP, nxt.pid))
        return pkt

    def assert_no_packet(self, wait=0.5):
        """Nothing arrives within `wait` seconds (used only to prove absence,
        after a positive control has shown delivery works)."""
        try:
            pkt = self.recv_packet(wait)
        except socket.timeout:
            return
        raise AssertionError("unexpected packet %r" % pkt)

    def wait_closed(self, timeout=IO_TIMEOUT):
        """True when the broker closes the connection within timeout (packets
        arriving first are discarded), False on timeout."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.recv_packet(max(0.001, deadline - time.monotonic()))
        except Closed:
            return True
        except socket.timeout:
            return False

    def is_open(self, timeout=2.0):
        """The connection still answers PINGREQ."""
        try:
            self.ping(timeout)
            return True
        except (Closed, socket.timeout, OSError, AssertionError):
            return False


# ---------------------------------------------------------------- broker

# Servers' ports (tests/support/loopback_ports.py: outside the outgoing range).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from loopback_ports import free_port, refused_port  # noqa: E402,F401


SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|runtime error:|"
                          r"SUMMARY: (Address|Undefined|Leak)")


class BrokerError(AssertionError):
    pass


def wisp_binary():
    """WISP_BIN, or SkipTest when it is not set."""
    binary = os.environ.get("WISP_BIN")
    if not binary:
        raise unittest.SkipTest("WISP_BIN is not set (or set WISP_E2E_BROKER=mosquitto)")
    if not os.access(binary, os.X_OK):
        raise BrokerError("WISP_BIN=%s is not executable" % binary)
    return binary


def run_wisp(args, cwd=None, timeout=20):
    """Runs wisp with args until it exits (bounded); returns the
    CompletedProcess with stdout and stderr merged into .stdout (text)."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    try:
        return subprocess.run([wisp_binary()] + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("wisp %s did not exit within %ss" % (" ".join(args), timeout))


class Broker:
    """Runs the broker under test. limits: dict of the config "limits" keys;
    listener: extra keys of the (only) listener, e.g. protocol, tls,
    allow_anonymous; config: extra top-level keys, e.g. auth. Both follow
    wisp's JSON schema (config/README.md); for the reference broker the
    keys mosquitto also has are translated to mosquitto.conf.
    asan_options: appended to ASAN_OPTIONS (e.g. a small quarantine for
    memory measurements)."""

    def __init__(self, limits=None, listener=None, config=None, asan_options=None):
        self.limits = dict(limits or {})
        self.listener = dict(listener or {})
        self.extra_config = dict(config or {})
        self.asan_options = asan_options
        self.config_path = None
        self.proc = None
        self.port = None
        self.dir = tempfile.mkdtemp(prefix="wisp-e2e-")
        self.log_path = os.path.join(self.dir, "broker.log")
        self.exit_status = None
        self.reported = False  # the log went out inside a BrokerError already

    @property
    def pid(self):
        return self.proc.pid

    @property
    def is_wisp(self):
        return not IS_MOSQUITTO

    def _write_config(self):
        if IS_MOSQUITTO:
            path = os.path.join(self.dir, "mosquitto.conf")
            auth = self.extra_config.get("auth", {})
            anonymous = self.listener.get("allow_anonymous", "password_file" not in auth)
            lines = ["listener %d 127.0.0.1" % self.port,
                     "allow_anonymous %s" % ("true" if anonymous else "false"),
                     "persistence false", "log_dest stderr", "log_type all",
                     "connection_messages true"]
            if os.geteuid() == 0:
                # Stay root so the temp files (mode 0600/0700) stay readable.
                lines.append("user root")
            tls = self.listener.get("tls")
            if tls:
                lines += ["certfile %s" % tls["cert"], "keyfile %s" % tls["key"]]
                if "ca" in tls:
                    lines.append("cafile %s" % tls["ca"])
                for key in ("require_certificate", "use_identity_as_username"):
                    if key in tls:
                        lines.append("%s %s" % (key, "true" if tls[key] else "false"))
            if "password_file" in auth:
                lines.append("password_file %s" % auth["password_file"])
            if "acl_file" in auth:
                lines.append("acl_file %s" % auth["acl_file"])
            lim = self.limits
            if "max_packet_size" in lim:
                lines.append("max_packet_size %d" % lim["max_packet_size"])
            if "max_keepalive" in lim:
                lines.append("max_keepalive %d" % lim["max_keepalive"])
            if "max_inflight" in lim:
                lines.append("max_inflight_messages %d" % lim["max_inflight"])
            if "max_queued_messages" in lim:
                lines.append("max_queued_messages %d" % lim["max_queued_messages"])
            # connect_timeout and max_output_buffer have no mosquitto equivalent.
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            self.config_path = path
            return [MOSQUITTO_BIN, "-c", path]
        binary = wisp_binary()
        path = os.path.join(self.dir, "wisp.json")
        self.write_config(self.config())
        return [binary, "-c", path, "-v"]

    def config(self):
        """wisp's JSON configuration (a dict) for the current port."""
        listener = {"bind": "127.0.0.1", "port": self.port}
        listener.update(self.listener)
        cfg = {"listeners": [listener], "log": {"level": "debug"}}
        if self.limits:
            cfg["limits"] = self.limits
        cfg.update(self.extra_config)
        return cfg

    def write_config(self, cfg):
        """(Re)writes wisp's configuration file: a dict, or raw text (to
        feed it invalid JSON). Takes effect at start or on reload()."""
        path = os.path.join(self.dir, "wisp.json")
        text = cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # the broker never reads half a file
        self.config_path = path

    def reload(self):
        """SIGHUP: the broker re-reads its configuration, password, ACL and TLS files."""
        if not self.alive():
            raise BrokerError("cannot reload: broker not running\n%s" % self.log_banner())
        self.proc.send_signal(signal.SIGHUP)

    def start_failing(self, timeout=20):
        """Starts the broker with a configuration it must refuse: returns
        (exit status, log) once it exits; fails if it keeps running."""
        self.port = free_port()
        argv = self._write_config()
        cp = None
        with open(self.log_path, "ab") as logf:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, env=self._env(), cwd=self.dir)
            try:
                cp = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        if cp is None:
            raise BrokerError("broker kept running with a configuration it should refuse\n%s"
                              % self.log_banner())
        self.exit_status = cp
        return cp, self.log()

    def _env(self):
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        if self.asan_options:
            env["ASAN_OPTIONS"] += ":" + self.asan_options
        return env

    def start(self):
        last_err = None
        # A port picked free can be taken by a parallel test before the
        # broker binds it; retry with another port in that case.
        for _attempt in range(3):
            self.port = free_port()
            argv = self._write_config()
            logf = open(self.log_path, "ab")
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, env=self._env(), cwd=self.dir)
            logf.close()
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
                raise BrokerError("broker did not accept connections on port %d within %ss\n%s"
                                  % (self.port, START_TIMEOUT, self.log_banner()))
            last_err = "broker exited with status %s at start-up" % self.proc.returncode
            if "in use" not in self.log():
                break
        raise BrokerError("%s\n%s" % (last_err, self.log_banner()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM, bounded wait; raises BrokerError unless the exit status is 0
        and the log is free of sanitizer reports."""
        if self.proc is None or self.exit_status is not None:
            return
        self.reported = True  # every error below carries the log
        status = self.proc.poll()
        died_early = status is not None
        if not died_early:
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
                self.exit_status = "hung"
                raise BrokerError("broker did not exit within %ss of SIGTERM\n%s"
                                  % (STOP_TIMEOUT, self.log_banner()))
        self.exit_status = status
        if died_early:
            raise BrokerError("broker died during the test (status %s)\n%s"
                              % (status, self.log_banner()))
        if status != 0:
            raise BrokerError("broker exited with status %s after SIGTERM\n%s"
                              % (status, self.log_banner()))
        if SANITIZER_RE.search(self.log()):
            raise BrokerError("sanitizer report in the broker log\n%s" % self.log_banner())
        self.reported = False

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern, offset=0, timeout=3.0):
        """The first log line after byte `offset` matching regex `pattern`, or None."""
        rx = re.compile(pattern, re.I)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_since(offset).splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def log_banner(self, max_chars=60000):
        text = self.log()
        if len(text) > max_chars:
            text = "[... %d bytes cut ...]\n" % (len(text) - max_chars) + text[-max_chars:]
        return "----- %s log (%s) -----\n%s----- end of broker log -----" % (
            BROKER_KIND, self.log_path, text)

    def status_kib(self, field):
        """A /proc/PID/status size field in KiB, e.g. "VmRSS" or "VmData"."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise BrokerError("no %s for pid %d" % (field, self.pid))

    def rss_kib(self):
        return self.status_kib("VmRSS")

    def unread_bytes(self):
        """(sockets, bytes) of input waiting, unread, in the receive queues of
        the broker's established connections on its port (/proc/net/tcp*)."""
        socks = total = 0
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(name) as f:
                    lines = f.readlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port != self.port or fields[3] != "01":  # 01: ESTABLISHED
                    continue
                socks += 1
                total += int(fields[4].split(":")[1], 16)
        return socks, total

    def wait_input_read(self, timeout=10.0):
        """Waits until the broker has read everything its clients sent (no
        byte left in any receive queue of its port), so a measurement taken
        next sees what that input cost. Fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            socks, unread = self.unread_bytes()
            if unread == 0:
                return socks
            if time.monotonic() > deadline:
                raise AssertionError("the broker left %d bytes unread on %d sockets" % (unread, socks))
            time.sleep(0.02)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        try:
            self.stop()
        except BrokerError:
            if exc_type is None:
                raise
        if exc_type is not None and not self.reported:
            sys.stderr.write(self.log_banner() + "\n")
        self.cleanup()
        return False


_client_ids = itertools.count(1)


class BrokerTestCase(unittest.TestCase):
    """One fresh broker per test method, as self.broker. Override LIMITS.
    A failing test prints the broker log; a broker that crashes or exits
    non-zero on SIGTERM fails the test."""

    LIMITS = None

    def broker_options(self):
        """Extra Broker() keyword arguments (listener=, config=, ...) for
        this test; override for TLS or auth."""
        return {}

    def setUp(self):
        self._closers = []
        self.broker = Broker(self.LIMITS, **self.broker_options())
        self.broker.start()

    def tearDown(self):
        for c in reversed(self._closers):
            try:
                c()
            except Exception:  # noqa: BLE001 - cleanup must not hide the test result
                pass
        self.broker.stop()

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        super().run(result)
        broker = getattr(self, "broker", None)
        if broker is not None:
            if len(result.failures) + len(result.errors) > before and not broker.reported:
                sys.stderr.write("\n%s: %s\n" % (self.id(), broker.log_banner()))
            broker.cleanup()
        return result

    def on_cleanup(self, fn):
        self._closers.append(fn)
        return fn

    def raw(self, client_id=None, keepalive=60, clean=True, connect=True, tls=None, **kw):
        """A RawClient to self.broker, connected (CONNACK 0 asserted) unless
        connect=False; tls: an ssl.SSLContext for a TLS listener."""
        c = RawClient(self.broker.port, tls=tls)
        self.on_cleanup(c.close)
        if connect:
            rc = c.connect(client_id if client_id is not None else "raw-%d" % next(_client_ids),
                           clean=clean, keepalive=keepalive, **kw)
            self.assertEqual(rc, 0, "CONNACK return code")
        return c

    def sub(self, *args, **kw):
        s = MosqSub(self.broker.port, *args, **kw)
        self.on_cleanup(s.kill)
        return s

    def pub(self, *args, **kw):
        return mosquitto_pub(self.broker.port, *args, **kw)

    def pub_lines(self, *args, **kw):
        p = MosqPubLines(self.broker.port, *args, **kw)
        self.on_cleanup(p.kill)
        return p

    def paho(self, *args, **kw):
        c = paho_client(self.broker.port, *args, **kw)
        self.on_cleanup(lambda: paho_stop(c))
        return c

    def assert_broker_alive(self):
        self.assertTrue(self.broker.alive(), "broker process died\n" + self.broker.log_banner())


# ---------------------------------------------------------------- mosquitto clients

def mosquitto_pub(port, topic, message=None, qos=0, retain=False, extra=(), timeout=10,
                  check=True):
    """Runs mosquitto_pub once; returns the CompletedProcess. message=None sends -n."""
    argv = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", str(qos)]
    argv += ["-n"] if message is None else ["-m", message]
    if retain:
        argv.append("-r")
    argv += list(extra)
    cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if check and cp.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (" ".join(argv), cp.returncode,
                                                   cp.stderr.decode(errors="replace")))
    return cp


MSG_PREFIX = "=MSG= "


class MosqSub:
    """mosquitto_sub in the background, with -d so the SUBACK can be awaited
    (publishing before it would race). Messages come as (topic, retain, qos, payload)."""

    def __init__(self, port, topics, qos=0, extra=(), count=None):
        if isinstance(topics, str):
            topics = [topics]
        argv = ["stdbuf", "-oL", MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-d",
                "-q", str(qos), "-F", MSG_PREFIX + "%r %q %t %p"]
        for t in topics:
            argv += ["-t", t]
        if count is not None:
            argv += ["-C", str(count)]
        argv += list(extra)
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines = queue.Queue()
        self.output = []
        self.subscribed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.output.append(line)
            if line.startswith(MSG_PREFIX):
                retain, qos, rest = line[len(MSG_PREFIX):].split(" ", 2)
                topic, _, payload = rest.partition(" ")
                self.lines.put((topic, retain == "1", int(qos), payload))
            elif "received SUBACK" in line:
                self.subscribed.set()
        self.lines.put(None)

    def wait_subscribed(self, timeout=IO_TIMEOUT):
        if not self.subscribed.wait(timeout):
            raise AssertionError("mosquitto_sub got no SUBACK within %ss:\n%s"
                                 % (timeout, "\n".join(self.output)))
        return self

    def get(self, timeout=IO_TIMEOUT):
        """The next message, or AssertionError on timeout or exit."""
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("mosquitto_sub received nothing within %ss:\n%s"
                                 % (timeout, "\n".join(self.output)))
        if item is None:
            self.lines.put(None)
            raise AssertionError("mosquitto_sub exited (%s) before a message arrived:\n%s"
                                 % (self.proc.poll(), "\n".join(self.output)))
        return item

    def assert_nothing(self, wait=0.5):
        try:
            item = self.lines.get(timeout=wait)
        except queue.Empty:
            return
        if item is not None:
            raise AssertionError("unexpected message %r" % (item,))
        self.lines.put(None)

    def wait_exit(self, timeout=IO_TIMEOUT):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("mosquitto_sub did not exit within %ss" % timeout)

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=IO_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=IO_TIMEOUT)
        self.reader.join(timeout=IO_TIMEOUT)
        if self.proc.stdout:
            self.proc.stdout.close()


class MosqPubLines:
    """mosquitto_pub -l in the background: it stays connected until stdin
    closes, so tests can kill it (will messages). Started with -d so that
    the CONNACK can be awaited."""

    def __init__(self, port, topic, extra=()):
        argv = ["stdbuf", "-oL", MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "-d",
                "-t", topic, "-l"] + list(extra)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.output = []
        self.connected = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.output.append(line)
            if "received CONNACK (0)" in line:
                self.connected.set()

    def wait_connected(self, timeout=IO_TIMEOUT):
        if not self.connected.wait(timeout):
            raise AssertionError("mosquitto_pub got no CONNACK 0 within %ss:\n%s"
                                 % (timeout, "\n".join(self.output)))
        return self

    def send_line(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=IO_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=IO_TIMEOUT)
        self.reader.join(timeout=IO_TIMEOUT)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


# ---------------------------------------------------------------- paho

def paho_client(port, client_id="", clean_session=True, protocol=None, keepalive=60,
                tls=None, username=None, password=None, host="127.0.0.1"):
    """A paho 1.6 client, connected (CONNACK 0 asserted) with loop_start().
    Received messages are appended to client.received (a queue.Queue).
    tls: keyword arguments of Client.tls_set (ca_certs, certfile, keyfile)."""
    import paho.mqtt.client as mqtt

    if protocol is None:
        protocol = mqtt.MQTTv311
    c = mqtt.Client(client_id=client_id, clean_session=clean_session, protocol=protocol)
    if tls is not None:
        c.tls_set(**tls)
    if username is not None:
        c.username_pw_set(username, password)
    c.received = queue.Queue()
    c.connack = queue.Queue()
    c.subacks = queue.Queue()
    c.unsubacks = queue.Queue()
    c.session_present = None

    def on_connect(cl, _userdata, flags, rc):
        cl.session_present = flags.get("session present")
        cl.connack.put(rc)

    c.on_connect = on_connect
    c.on_message = lambda cl, ud, msg: cl.received.put(msg)
    c.on_subscribe = lambda cl, ud, mid, granted: cl.subacks.put((mid, tuple(granted)))
    c.on_unsubscribe = lambda cl, ud, mid: cl.unsubacks.put(mid)
    c.connect(host, port, keepalive)
    c.loop_start()
    try:
        rc = c.connack.get(timeout=IO_TIMEOUT)
    except queue.Empty:
        paho_stop(c)
        raise AssertionError("paho: no CONNACK within %ss" % IO_TIMEOUT)
    if rc != 0:
        paho_stop(c)
        raise AssertionError("paho: CONNACK %d" % rc)
    return c


def paho_subscribe(c, topics):
    """topics: [(filter, qos)]; returns the granted list from SUBACK."""
    rc, mid = c.subscribe(topics)
    if rc != 0:
        raise AssertionError("paho subscribe rc %d" % rc)
    try:
        got_mid, granted = c.subacks.get(timeout=IO_TIMEOUT)
    except queue.Empty:
        raise AssertionError("paho: no SUBACK within %ss" % IO_TIMEOUT)
    if got_mid != mid:
        raise AssertionError("SUBACK mid %d, expected %d" % (got_mid, mid))
    return list(granted)


def paho_unsubscribe(c, topics):
    rc, mid = c.unsubscribe(topics)
    if rc != 0:
        raise AssertionError("paho unsubscribe rc %d" % rc)
    try:
        got = c.unsubacks.get(timeout=IO_TIMEOUT)
    except queue.Empty:
        raise AssertionError("paho: no UNSUBACK within %ss" % IO_TIMEOUT)
    if got != mid:
        raise AssertionError("UNSUBACK mid %d, expected %d" % (got, mid))


def paho_get(c, timeout=IO_TIMEOUT):
    try:
        return c.received.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("paho: no message within %ss" % timeout)


def paho_stop(c):
    try:
        c.disconnect()
    except Exception:  # noqa: BLE001
        pass
    c.loop_stop()


# ---------------------------------------------------------------- TLS and auth

def make_certs(directory, *args):
    """Runs certs/make-certs.sh --dir directory args... (bounded); returns
    the directory. make_certs(d) makes ca.crt/ca.key and server.crt/.key;
    make_certs(d, "client", NAME) makes NAME.crt/NAME.key."""
    cp = subprocess.run(["sh", MAKE_CERTS, "--dir", directory] + list(args),
                        stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if cp.returncode != 0:
        raise AssertionError("make-certs.sh %s failed (%d): %s"
                             % (" ".join(args), cp.returncode,
                                cp.stderr.decode(errors="replace")))
    return directory


def client_tls_context(cafile, certfile=None, keyfile=None, verify=True):
    """A TLS client context trusting cafile, with an optional client
    certificate; verify=False accepts any server certificate."""
    ctx = ssl.create_default_context(cafile=cafile)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def make_passwd(path, users, iterations=1000):
    """Writes a password file for users {name: password}: with wisp_passwd
    (WISP_PASSWD) for wisp, which writes $pbkdf2-sha512$ lines; with
    mosquitto_passwd for the reference broker ($7$ lines, which wisp also
    reads). A low iteration count keeps logins fast in tests."""
    if IS_MOSQUITTO:
        argv = [shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"]
    else:
        tool = os.environ.get("WISP_PASSWD")
        if not tool:
            raise unittest.SkipTest("WISP_PASSWD is not set (the wisp_passwd tool)")
        argv = [tool, "-I", str(iterations)]
    if os.path.exists(path):
        os.unlink(path)
    for i, (user, password) in enumerate(users.items()):
        cmd = argv + (["-c"] if i == 0 else []) + ["-b", path, user, password]
        cp = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        if cp.returncode != 0:
            raise AssertionError("%s exited %d: %s" % (" ".join(cmd), cp.returncode,
                                                       cp.stderr.decode(errors="replace")))
    return path


SKIP_EXIT_CODE = 77  # CTest's SKIP_RETURN_CODE for the e2e tests (tests/e2e/CMakeLists.txt)


def main():
    """Runs the calling script's tests. Exit status: 1 when a test failed
    or errored (or none ran), SKIP_EXIT_CODE when none failed but one was
    skipped, so CTest reports the script as skipped rather than passed; 0
    otherwise. Against mosquitto, the skip_unless_wisp skips are expected
    and do not count."""
    result = unittest.main(verbosity=2, exit=False).result
    if not result.wasSuccessful():
        sys.exit(1)
    skipped = [(test, why) for test, why in result.skipped
               if not (IS_MOSQUITTO and why.startswith("mosquitto: "))]
    if skipped:
        sys.stderr.write("\n%d test(s) skipped, reported as a skip (exit %d):\n%s\n" % (
            len(skipped), SKIP_EXIT_CODE,
            "\n".join("  %s: %s" % (test.id(), why) for test, why in skipped)))
        sys.exit(SKIP_EXIT_CODE)
    sys.exit(0 if result.testsRun else 1)
