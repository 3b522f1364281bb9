#!/usr/bin/python3
"""23 enhanced authentication (MQTT 5, 4.12): SCRAM-SHA-256 against the
real broker, with a password file written by wisp_passwd -H scram-sha-256.

Clients: a small SCRAM client in Python over RawClient (paho-mqtt 1.6 has
no way to answer an AUTH packet), and MQTT.js 5 (tests/js) with its
authenticationMethod property and handleAuth hook. A client checks the
broker's ServerSignature in the CONNACK's Authentication Data, so the
broker proves it knows the user's keys too.

Covers: success and a QoS 1 round trip afterwards; a wrong password gets
CONNACK 0x86 and is logged once; an unknown method 0x8C [MQTT-4.12.0-1];
AUTH naming another method 0x82 [MQTT-4.12.0-5]; an exchange left
unfinished is closed by limits.connect_timeout; the same user logs in with
the password in a 3.1.1 CONNECT; re-authentication is refused with
DISCONNECT 0x87 [MQTT-4.12.1-2]; past auth.max_exchanges exchanges under way
a CONNECT naming a method gets 0x89, counted in $SYS and logged once, and an
honest client logs in again once the stalled exchanges are gone.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, PUBACK, BrokerTestCase, Closed, main, mqtt_str, packet,  # noqa: E402
                      skip_unless_wisp, varint)
from v5_clients import JS_MODULES, MqttJs, connect5, publish5, subscribe5  # noqa: E402

AUTH = 15
DISCONNECT = 14
METHOD = "SCRAM-SHA-256"
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
ITERATIONS = 4096  # RFC 7677's minimum: quick logins in tests


def read_props(body, pos):
    """{id: value} of the v5 property block at body[pos:]; the end offset."""
    length, mult = 0, 1
    while True:
        b = body[pos]
        pos += 1
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    end, props = pos + length, {}
    sizes = {0x01: 1, 0x17: 1, 0x19: 1, 0x24: 1, 0x25: 1, 0x28: 1, 0x29: 1, 0x2A: 1,
             0x13: 2, 0x21: 2, 0x22: 2, 0x23: 2, 0x02: 4, 0x11: 4, 0x18: 4, 0x27: 4}
    while pos < end:
        pid = body[pos]
        pos += 1
        if pid in sizes:
            props[pid] = int.from_bytes(body[pos:pos + sizes[pid]], "big")
            pos += sizes[pid]
        elif pid == 0x26:
            for _ in range(2):
                n = struct.unpack("!H", body[pos:pos + 2])[0]
                pos += 2 + n
        else:
            n = struct.unpack("!H", body[pos:pos + 2])[0]
            props[pid] = bytes(body[pos + 2:pos + 2 + n])
            pos += 2 + n
    return props, end


def auth_props(method, data=None):
    p = bytes([0x15]) + mqtt_str(method)
    if data is not None:
        p += bytes([0x16]) + struct.pack("!H", len(data)) + data
    return p


def auth_pkt(reason, method, data=None):
    p = auth_props(method, data)
    return packet(0xF0, bytes([reason]) + varint(len(p)) + p)


class Scram:
    """The client's half of SCRAM-SHA-256 (RFC 5802), without channel binding."""

    def __init__(self, user, password):
        self.user, self.password = user, password
        self.cnonce = base64.b64encode(os.urandom(18)).decode()
        self.bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"), self.cnonce)

    def first(self):
        return ("n,," + self.bare).encode()

    def final(self, server_first):
        sf = server_first.decode()
        attrs = dict(a.split("=", 1) for a in sf.split(","))
        assert attrs["r"].startswith(self.cnonce), sf
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored = hashlib.sha256(client_key).digest()
        without_proof = "c=biws,r=" + attrs["r"]
        am = ",".join([self.bare, sf, without_proof]).encode()
        sig = hmac.new(stored, am, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.expect_v = b"v=" + base64.b64encode(hmac.new(server_key, am, "sha256").digest())
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()


class ScramCase(BrokerTestCase):
    """A broker whose password file has USERS in the SCRAM form."""
    LIMITS = {"connect_timeout": 2}
    AUTH = {}
    CONFIG = {}

    def broker_options(self):
        d = tempfile.mkdtemp(prefix="wisp-e2e-scram-")
        self.addCleanup(shutil.rmtree, d, True)
        self.passwd = os.path.join(d, "passwd")
        tool = os.environ.get("WISP_PASSWD")
        if not tool:
            raise unittest.SkipTest("WISP_PASSWD is not set (the wisp_passwd tool)")
        for i, (user, pw) in enumerate(USERS.items()):
            cmd = [tool, "-H", "scram-sha-256", "-I", str(ITERATIONS)] + (["-c"] if i == 0 else []) + \
                  ["-b", self.passwd, user, pw]
            subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        return {"listener": {"allow_anonymous": False},
                "config": dict({"auth": dict({"password_file": self.passwd}, **self.AUTH)}, **self.CONFIG)}

    def start_exchange(self, user, password, client_id):
        """A raw client that sent client-first: (client, scram, server-first)."""
        c = self.raw(connect=False)
        s = Scram(user, password)
        c.send(connect5(client_id, props=auth_props(METHOD, s.first())))
        a = c.expect(AUTH)
        self.assertEqual(a.body[0], 0x18, "[MQTT-4.12.0-2] AUTH from the server says continue")
        props, _ = read_props(a.body, 1)
        self.assertEqual(props[0x15], METHOD.encode(), "[MQTT-4.12.0-5]")
        return c, s, props[0x16]

    def scram_login(self, user, password, client_id):
        c, s, sf = self.start_exchange(user, password, client_id)
        c.send(auth_pkt(0x18, METHOD, s.final(sf)))
        ack = c.expect(CONNACK)
        return c, s, ack


@skip_unless_wisp("enhanced authentication (SCRAM-SHA-256) is Wisp's; Mosquitto has no SCRAM method")
class EnhancedAuthTest(ScramCase):

    def test_scram_success_then_qos1_round_trip(self):
        c, s, ack = self.scram_login("alice", USERS["alice"], "scram-ok")
        self.assertEqual(ack.body[1], 0, "CONNACK reason")
        props, _ = read_props(ack.body, 2)
        self.assertEqual(props.get(0x15), METHOD.encode(), "[MQTT-4.12.0-5] method in CONNACK")
        self.assertEqual(props.get(0x16), s.expect_v, "server-final proves the broker's ServerKey")
        c.send(subscribe5(1, [("scram/t", 1)]))
        c.expect(0x9)
        c.send(publish5("scram/t", b"after scram", qos=1, pid=7))
        got = {c.recv_packet().type, c.recv_packet().type}
        self.assertEqual(got, {PUBACK, 3})
        self.broker.wait_log(r"client scram-ok connected .*u'alice'")

    def test_wrong_password_refused_0x86_and_logged(self):
        c, _, ack = self.scram_login("alice", "not-alice-pw", "scram-bad")
        self.assertEqual(ack.body[1], 0x86)
        self.assertTrue(c.wait_closed(), "[MQTT-4.12.0-4] closed after the refusal")
        self.broker.wait_log(r"enhanced authentication failed: bad user name or password")
        # An unknown user looks the same: a salt, then 0x86.
        c, _, ack = self.scram_login("mallory", "x", "scram-who")
        self.assertEqual(ack.body[1], 0x86)
        # An honest client is still served.
        c, _, ack = self.scram_login("bob", USERS["bob"], "scram-bob")
        self.assertEqual(ack.body[1], 0)

    def test_unknown_method_0x8c(self):
        c = self.raw(connect=False)
        c.send(connect5("kerb", props=auth_props("GS2-KRB5", b"")))
        ack = c.expect(CONNACK)
        self.assertEqual(ack.body[1], 0x8C, "[MQTT-4.12.0-1]")
        self.assertTrue(c.wait_closed())

    def test_auth_with_another_method_0x82(self):
        c, s, sf = self.start_exchange("alice", USERS["alice"], "scram-mix")
        c.send(auth_pkt(0x18, "SCRAM-SHA-1", s.final(sf)))
        ack = c.expect(CONNACK)
        self.assertEqual(ack.body[1], 0x82, "[MQTT-4.12.0-5]")
        self.assertTrue(c.wait_closed())

    def test_unfinished_exchange_closed_by_connect_timeout(self):
        c, _, _ = self.start_exchange("alice", USERS["alice"], "scram-stall")
        self.assertTrue(c.wait_closed(timeout=10), "limits.connect_timeout covers the exchange")
        self.broker.wait_log(r"connect_timeout|CONNECT timeout|no CONNECT", timeout=5)

    def test_reauthentication_refused_0x87(self):
        c, s, ack = self.scram_login("alice", USERS["alice"], "scram-re")
        self.assertEqual(ack.body[1], 0)
        c.send(auth_pkt(0x19, METHOD, Scram("alice", USERS["alice"]).first()))
        d = c.expect(0xE)
        self.assertEqual(d.body[0], 0x87, "[MQTT-4.12.1-2]")
        self.assertTrue(c.wait_closed())

    def test_password_in_connect_for_scram_user(self):
        """A SCRAM entry also serves the password of a 3.1.1 CONNECT."""
        c = self.raw("plain-alice", username="alice", password="alice-pw")
        c.ping()
        self.assertNotEqual(self.raw(connect=False).connect("plain-bad", username="alice",
                                                            password="wrong"), 0)

    def test_mqttjs_scram(self):
        self.assertTrue(os.path.isdir(os.path.join(JS_MODULES, "mqtt")), "npm ci --prefix tests/js first")
        script = """
const crypto = require('crypto');
const user = 'alice', password = %s;
const cnonce = crypto.randomBytes(18).toString('base64');
const bare = 'n=' + user + ',r=' + cnonce;
let expectV = null;
const c = mqtt.connect('mqtt://127.0.0.1:' + PORT, {protocolVersion: 5, clientId: 'mqttjs-scram',
  reconnectPeriod: 0, properties: {authenticationMethod: 'SCRAM-SHA-256',
  authenticationData: Buffer.from('n,,' + bare)}});
c.handleAuth = (packet, cb) => {
  const sf = packet.properties.authenticationData.toString();
  const a = Object.fromEntries(sf.split(',').map(x => [x[0], x.slice(2)]));
  const salted = crypto.pbkdf2Sync(password, Buffer.from(a.s, 'base64'), Number(a.i), 32, 'sha256');
  const hm = (k, m) => crypto.createHmac('sha256', k).update(m).digest();
  const clientKey = hm(salted, 'Client Key');
  const stored = crypto.createHash('sha256').update(clientKey).digest();
  const wp = 'c=biws,r=' + a.r;
  const am = bare + ',' + sf + ',' + wp;
  const sig = hm(stored, am);
  const proof = Buffer.from(clientKey.map((b, i) => b ^ sig[i]));
  expectV = 'v=' + hm(hm(salted, 'Server Key'), am).toString('base64');
  cb(null, {cmd: 'auth', reasonCode: 24, properties: {authenticationMethod: 'SCRAM-SHA-256',
    authenticationData: Buffer.from(wp + ',p=' + proof.toString('base64'))}});
};
c.on('error', (e) => done({error: String(e)}));
c.on('connect', (ack) => {
  const v = ack.properties && ack.properties.authenticationData;
  c.subscribe('js/scram', {qos: 1}, () => c.publish('js/scram', 'hi', {qos: 1}));
  c.on('message', (t, m) => { c.end(); done({rc: ack.reasonCode, serverFinalOk: v && v.toString() === expectV,
    method: ack.properties.authenticationMethod, message: m.toString()}); });
});
""" % json.dumps(USERS["alice"])
        js = MqttJs(self.broker.port, script)
        self.addCleanup(js.kill)
        r = js.result()
        self.assertEqual(r, {"rc": 0, "serverFinalOk": True, "method": METHOD, "message": "hi"})


@skip_unless_wisp("enhanced authentication (SCRAM-SHA-256) is Wisp's; Mosquitto has no SCRAM method")
class ExchangeBoundTest(ScramCase):
    """auth.max_exchanges: stalled exchanges cannot pile up state."""
    LIMITS = {"connect_timeout": 60}
    AUTH = {"max_exchanges": 2}
    CONFIG = {"sys_interval": 1}

    def test_exchanges_over_the_bound_refused_0x89(self):
        watcher = self.raw("sys-watch", username="bob", password=USERS["bob"])
        watcher.subscribe([("$SYS/broker/clients/login_checks/refused_exchanges", 0)])
        stalled = [self.start_exchange("alice", USERS["alice"], "stall-%d" % i)[0] for i in range(2)]
        for i in range(3):
            c = self.raw(connect=False)
            c.send(connect5("over-%d" % i, props=auth_props(METHOD, Scram("alice", "x").first())))
            ack = c.expect(CONNACK)
            self.assertEqual(ack.body[1], 0x89, "server busy past auth.max_exchanges")
            self.assertTrue(c.wait_closed())
        self.broker.wait_log(r"enhanced-authentication exchanges under way \(auth.max_exchanges\)")
        self.assertEqual(len(re.findall(r"auth.max_exchanges\); further", self.broker.log())), 1,
                         "logged once per episode")
        deadline = time.monotonic() + 15
        while True:
            p = watcher.recv_publish(timeout=max(deadline - time.monotonic(), 0.1))
            if p.payload == b"3":
                break
            self.assertLess(time.monotonic(), deadline, "refused_exchanges never reached 3")
        for c in stalled:
            c.close()
        # The stalled exchanges' state goes with their connections.
        deadline = time.monotonic() + 10
        while True:
            c, _, ack = self.scram_login("bob", USERS["bob"], "after-%d" % time.monotonic_ns())
            if ack.body[1] == 0:
                break
            self.assertEqual(ack.body[1], 0x89)
            self.assertLess(time.monotonic(), deadline, "exchanges never freed")


if __name__ == "__main__":
    main()
