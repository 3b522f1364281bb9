"""MQTT 5 clients for the 17_v5_* end-to-end tests: paho-mqtt 1.6 with
MQTTv5 (connected, network loop running, everything it receives queued),
raw v5 packet builders for byte-exact checks, and MQTT.js run by node from
tests/js/node_modules. Every wait is bounded by IO_TIMEOUT."""

import json
import os
import queue
import struct
import subprocess
import threading
import time

from wisp_e2e import CONNACK, IO_TIMEOUT, mqtt_str, packet, varint

JS_MODULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "js", "node_modules")


def paho5(port, client_id, clean_start=True, session_expiry=None):
    """A connected paho MQTTv5 client. .received holds messages, .subacks
    (mid, [ReasonCodes]), .pubacks mids."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes

    c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
    c.received = queue.Queue()
    c.subacks = queue.Queue()
    c.pubacks = queue.Queue()
    connack = queue.Queue()
    c.on_connect = lambda cl, ud, flags, rc, props=None: connack.put(rc)
    c.on_message = lambda cl, ud, msg: cl.received.put(msg)
    c.on_subscribe = lambda cl, ud, mid, codes, props=None: cl.subacks.put((mid, codes))
    c.on_publish = lambda cl, ud, mid: cl.pubacks.put(mid)
    props = None
    if session_expiry is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
    c.connect("127.0.0.1", port, 60, clean_start=clean_start, properties=props)
    c.loop_start()
    try:
        rc = connack.get(timeout=IO_TIMEOUT)
    except queue.Empty:
        c.loop_stop()
        raise AssertionError("paho v5: no CONNACK within %ss" % IO_TIMEOUT)
    if rc != 0:
        c.loop_stop()
        raise AssertionError("paho v5: CONNACK %s" % rc)
    return c


def paho5_stop(c):
    try:
        c.disconnect()
    finally:
        c.loop_stop()


def paho5_subscribe(c, topic, qos=1, no_local=False, rap=False, handling=0, sub_id=None):
    """Subscribes and waits for the SUBACK; returns its reason codes' values."""
    from paho.mqtt.subscribeoptions import SubscribeOptions
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes

    props = None
    if sub_id is not None:
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = sub_id
    opts = SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=rap, retainHandling=handling)
    _, mid = c.subscribe(topic, options=opts, properties=props)
    try:
        got, codes = c.subacks.get(timeout=IO_TIMEOUT)
    except queue.Empty:
        raise AssertionError("paho v5: no SUBACK within %ss" % IO_TIMEOUT)
    assert got == mid, (got, mid)
    return [rc.value for rc in codes]


def paho5_get(c, timeout=IO_TIMEOUT):
    try:
        return c.received.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("paho v5: no message within %ss" % timeout)


def paho5_nothing(c, wait=0.5):
    try:
        msg = c.received.get(timeout=wait)
    except queue.Empty:
        return
    raise AssertionError("paho v5: unexpected message on %s: %r" % (msg.topic, msg.payload))


# ---- raw v5 packets

def props_block(props=b""):
    return varint(len(props)) + props


def connect5(client_id, clean=True, keepalive=60, props=b""):
    var = mqtt_str("MQTT") + bytes([5, 0x02 if clean else 0]) + struct.pack("!H", keepalive)
    return packet(0x10, var + props_block(props) + mqtt_str(client_id))


def publish5(topic, payload=b"", qos=0, retain=False, pid=1, props=b""):
    if isinstance(payload, str):
        payload = payload.encode()
    body = mqtt_str(topic) + (struct.pack("!H", pid) if qos else b"") + props_block(props) + payload
    return packet(0x30 | (qos << 1) | (1 if retain else 0), body)


def subscribe5(pid, filters, props=b""):
    """filters: [(filter, options byte)]."""
    body = struct.pack("!H", pid) + props_block(props)
    for f, opts in filters:
        body += mqtt_str(f) + bytes([opts])
    return packet(0x82, body)


def prop_u8(pid, v):
    return bytes([pid, v])


def prop_u32(pid, v):
    return bytes([pid]) + struct.pack("!I", v)


def prop_str(pid, s):
    return bytes([pid]) + mqtt_str(s)


def prop_varint(pid, v):
    return bytes([pid]) + varint(v)


def prop_user(k, v):
    return bytes([0x26]) + mqtt_str(k) + mqtt_str(v)


def raw5(case, client_id):
    """A RawClient of the test case, connected with MQTT 5 (CONNACK reason 0)."""
    c = case.raw(connect=False)
    c.send(connect5(client_id))
    ack = c.expect(CONNACK)
    assert ack.body[1] == 0, "CONNACK reason %#x" % ack.body[1]
    return c


# ---- MQTT.js

class MqttJs:
    """`script` (JavaScript; `mqtt`, `PORT`, `say(line)` and `done(result)`
    are defined) run under node with MQTT.js in the background. say()
    prints a line the test can wait for (wait_line); done() prints the
    result as JSON and exits (result())."""

    def __init__(self, port, script, timeout=IO_TIMEOUT * 3):
        prelude = ("const mqtt = require(%s); const PORT = %d;\n"
                   "const timer = setTimeout(() => { console.error('mqttjs: timed out'); process.exit(2); }, %d);\n"
                   "function say(l) { console.log(l); }\n"
                   "function done(r) { clearTimeout(timer); console.log('RESULT ' + JSON.stringify(r)); "
                   "process.exit(0); }\n"
                   % (json.dumps(os.path.join(JS_MODULES, "mqtt")), port, int(timeout * 1000)))
        self.proc = subprocess.Popen(["node", "-e", prelude + script], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = queue.Queue()
        self.output = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_line(self, text, timeout=IO_TIMEOUT * 2):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = None
            if line is not None and line.startswith(text):
                return line
            if line is None or time.monotonic() >= deadline:
                raise AssertionError("MQTT.js never said %r:\n%s" % (text, "\n".join(self.output)))

    def result(self, timeout=IO_TIMEOUT * 2):
        line = self.wait_line("RESULT ", timeout)
        return json.loads(line[len("RESULT "):])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=IO_TIMEOUT)
        self.reader.join(timeout=IO_TIMEOUT)
        self.proc.stdout.close()
