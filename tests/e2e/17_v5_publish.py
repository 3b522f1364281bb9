#!/usr/bin/python3
"""17 v5 PUBLISH: what an MQTT 5 publisher sends reaches MQTT 5 subscribers
as it was sent (properties unchanged and in order, the Message Expiry
Interval as the time left), expired messages leave queues and the retained
store, and PUBACK/PUBREC say what happened (0x10 no matching subscribers,
0x87 not authorised, 0x99 payload format invalid; the two-byte short form
for success). Real v5 clients: paho-mqtt MQTTv5, mosquitto_pub -V 5,
MQTT.js protocolVersion 5; raw packets where the bytes matter."""

import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, PUBACK, PUBCOMP, PUBLISH, PUBREC, BrokerTestCase, main, mqtt_str,  # noqa: E402
                      packet, skip_unless_wisp)
from v5_clients import (MqttJs, connect5, paho5, paho5_get, paho5_nothing, paho5_stop,  # noqa: E402
                        paho5_subscribe, prop_str, prop_u8, prop_u32, prop_user, publish5,
                        raw5, subscribe5)


def v5_properties(pkt):
    """The property block and the payload of a raw v5 PUBLISH."""
    body = pkt.body
    (tlen,) = struct.unpack("!H", body[:2])
    pos = 2 + tlen + (2 if pkt.qos else 0)
    n, shift, plen = 0, 0, 0
    while True:
        b = body[pos + n]
        plen |= (b & 0x7F) << shift
        n += 1
        shift += 7
        if not b & 0x80:
            break
    start = pos + n
    return body[start:start + plen], body[start + plen:]


class V5PublishTest(BrokerTestCase):

    def paho5(self, client_id, **kw):
        c = paho5(self.broker.port, client_id, **kw)
        self.on_cleanup(lambda: paho5_stop(c))
        return c

    def test_properties_forwarded_unchanged_and_in_order(self):
        """[MQTT-3.3.2-17] [MQTT-3.3.2-18] Response Topic, Correlation Data,
        User Properties (in order), Content Type and Payload Format
        Indicator reach a v5 subscriber unchanged; a 3.1.1 subscriber gets
        the same message without them."""
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        sub = self.paho5("v5-sub")
        self.assertEqual(paho5_subscribe(sub, "req/#", qos=1), [1])
        old = self.raw("v311-sub")
        old.subscribe([("req/#", 1)])
        pub = self.paho5("v5-pub")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "resp/42"
        props.CorrelationData = b"\x00corr\xff"
        props.UserProperty = ("b", "2")
        props.UserProperty = ("a", "1")
        props.UserProperty = ("b", "3")
        props.ContentType = "text/plain"
        props.PayloadFormatIndicator = 1
        pub.publish("req/x", "héllo", qos=1, properties=props).wait_for_publish(5)
        msg = paho5_get(sub)
        self.assertEqual(msg.payload, "héllo".encode())
        p = msg.properties
        self.assertEqual(p.ResponseTopic, "resp/42")
        self.assertEqual(p.CorrelationData, b"\x00corr\xff")
        self.assertEqual(p.UserProperty, [("b", "2"), ("a", "1"), ("b", "3")])
        self.assertEqual(p.ContentType, "text/plain")
        self.assertEqual(p.PayloadFormatIndicator, 1)
        self.assertFalse(hasattr(p, "MessageExpiryInterval"))
        got = old.recv_publish()
        self.assertEqual((got.topic, got.payload), ("req/x", "héllo".encode()))

    def test_raw_properties_keep_their_bytes(self):
        """The forwarded block is byte for byte the publisher's, after the
        subscriber's own properties (none here); the publisher's Message
        Expiry Interval is rewritten as the time left [MQTT-3.3.2-6]."""
        sub = raw5(self, "raw-sub")
        sub.send(subscribe5(1, [("raw/t", 1)]))
        sub.expect(9)
        pub = raw5(self, "raw-pub")
        forwarded = prop_user("k", "v") + prop_str(0x03, "ct") + prop_user("k", "w")
        pub.send(publish5("raw/t", b"x", qos=1, pid=7, props=prop_u32(0x02, 3600) + forwarded))
        self.assertEqual(pub.expect(PUBACK).body, b"\x00\x07")  # short form: success, no properties
        got = sub.expect(PUBLISH)
        props, payload = v5_properties(got)
        self.assertEqual(payload, b"x")
        self.assertEqual(props[0], 0x02)  # Message Expiry Interval first, then the block as sent
        left = struct.unpack("!I", props[1:5])[0]
        self.assertTrue(3599 <= left <= 3600, left)
        self.assertEqual(props[5:], forwarded)

    def mqttjs(self, script):
        js = MqttJs(self.broker.port, script)
        self.on_cleanup(js.kill)
        return js

    def test_mosquitto_pub_v5_properties_reach_mqttjs(self):
        """mosquitto_pub -V 5 -D publish ... reaches an MQTT.js v5
        subscriber with its properties."""
        js = self.mqttjs("""
const c = mqtt.connect({host: '127.0.0.1', port: PORT, protocolVersion: 5, clientId: 'js-sub'});
c.on('connect', () => c.subscribe('js/t', {qos: 1}, (err) => { if (err) process.exit(1); say('SUBSCRIBED'); }));
c.on('message', (topic, payload, packet) => { c.end(); done({topic, payload: payload.toString(),
  props: packet.properties || {}}); });
""")
        js.wait_line("SUBSCRIBED")
        self.pub("js/t", "from-mosquitto", qos=1,
                 extra=["-V", "5", "-D", "publish", "user-property", "who", "mosq",
                        "-D", "publish", "content-type", "text/x",
                        "-D", "publish", "response-topic", "js/reply"])
        r = js.result()
        self.assertEqual((r["topic"], r["payload"]), ("js/t", "from-mosquitto"))
        self.assertEqual(r["props"].get("userProperties"), {"who": "mosq"})
        self.assertEqual(r["props"].get("contentType"), "text/x")
        self.assertEqual(r["props"].get("responseTopic"), "js/reply")

    def test_client_maximum_packet_size_and_receive_maximum_with_mqttjs(self):
        """[MQTT-3.1.2-25] MQTT.js with Maximum Packet Size 64 never gets the
        200-byte message (dropped for it alone; a paho subscriber gets it);
        with Receive Maximum 1 [MQTT-3.3.4-9] it still gets every small
        QoS 1 message, one in flight at a time."""
        js = self.mqttjs("""
const c = mqtt.connect({host: '127.0.0.1', port: PORT, protocolVersion: 5, clientId: 'js-small',
  properties: {maximumPacketSize: 64, receiveMaximum: 1}});
const got = [];
c.on('connect', () => c.subscribe('mps/t', {qos: 1}, (err) => { if (err) process.exit(1); say('SUBSCRIBED'); }));
c.on('message', (topic, payload) => { got.push(payload.toString());
  if (payload.toString() === 'end') { c.end(); done({got}); } });
""")
        js.wait_line("SUBSCRIBED")
        other = self.paho5("mps-other")
        paho5_subscribe(other, "mps/t", qos=1)
        self.pub("mps/t", "x" * 200, qos=1, extra=["-V", "5"])
        for i in range(3):
            self.pub("mps/t", "small%d" % i, qos=1, extra=["-V", "5"])
        self.pub("mps/t", "end", qos=1, extra=["-V", "5"])
        self.assertEqual(js.result()["got"], ["small0", "small1", "small2", "end"])
        self.assertEqual(paho5_get(other).payload, b"x" * 200)

    def test_outbound_topic_aliases_with_mqttjs(self):
        """[MQTT-3.3.2-9..11] MQTT.js accepts 2 topic aliases: Wisp sends
        repeated topics as aliases (the raw packets show empty topics) and
        MQTT.js resolves every message to its topic."""
        js = self.mqttjs("""
const c = mqtt.connect({host: '127.0.0.1', port: PORT, protocolVersion: 5, clientId: 'js-alias',
  properties: {topicAliasMaximum: 2}});
const got = []; let aliased = 0;
c.on('packetreceive', (p) => { if (p.cmd === 'publish' && p.topic === '') aliased++; });
c.on('connect', () => c.subscribe('al/#', {qos: 1}, (err) => { if (err) process.exit(1); say('SUBSCRIBED'); }));
c.on('message', (topic, payload) => { got.push(topic + '=' + payload.toString());
  if (got.length === 6) { c.end(); done({got, aliased}); } });
""")
        js.wait_line("SUBSCRIBED")
        pub = raw5(self, "al-pub")
        sent = [("al/1", "a"), ("al/1", "b"), ("al/2", "c"), ("al/3", "d"), ("al/2", "e"), ("al/1", "f")]
        for i, (t, m) in enumerate(sent):
            pub.send(publish5(t, m, qos=1, pid=i + 1))
            pub.expect(PUBACK)
        r = js.result()
        self.assertEqual(r["got"], ["%s=%s" % tm for tm in sent])
        self.assertGreaterEqual(r["aliased"], 2)

    def test_will_properties_and_expiry_from_publication(self):
        """A v5 will's properties reach the subscriber unchanged; its Message
        Expiry Interval (2 s) starts when the will is published (section
        3.1.3.2.4), not at CONNECT: a will whose client lived longer than
        that still reaches an offline subscriber that comes back at once."""
        sub = self.paho5("will-sub", clean_start=False, session_expiry=300)
        paho5_subscribe(sub, "will/t", qos=1)
        paho5_stop(sub)
        wprops = prop_u32(0x02, 2) + prop_user("why", "gone") + prop_str(0x03, "text/w")
        var = mqtt_str("MQTT") + bytes([5, 0x02 | 0x04 | 0x08]) + struct.pack("!H", 60) + b"\x00"
        payload = mqtt_str("will-client") + bytes([len(wprops)]) + wprops + mqtt_str("will/t") + mqtt_str("bye")
        w = self.raw(connect=False)
        w.send(packet(0x10, var + payload))
        self.assertEqual(w.expect(CONNACK).body[1], 0)
        time.sleep(2.5)  # longer than the will's expiry: it must count from publication
        w.close()
        self.broker.wait_log("will-client.*disconnected", timeout=5)
        sub = self.paho5("will-sub", clean_start=False, session_expiry=300)
        got = paho5_get(sub)
        self.assertEqual((got.topic, got.payload), ("will/t", b"bye"))
        self.assertEqual(got.properties.UserProperty, [("why", "gone")])
        self.assertEqual(got.properties.ContentType, "text/w")
        self.assertTrue(1 <= got.properties.MessageExpiryInterval <= 2)

    def test_puback_no_matching_subscribers(self):
        """PUBACK 0x10 when nobody subscribed; a PUBREC too (QoS 2 then
        goes on); the short form when there was a subscriber."""
        pub = raw5(self, "lonely")
        pub.send(publish5("nobody/here", b"x", qos=1, pid=3))
        self.assertEqual(pub.expect(PUBACK).body, b"\x00\x03\x10")
        pub.send(publish5("nobody/here", b"x", qos=2, pid=4))
        self.assertEqual(pub.expect(PUBREC).body, b"\x00\x04\x10")
        sub = raw5(self, "someone")
        sub.send(subscribe5(1, [("nobody/here", 0)]))
        sub.expect(9)
        pub.send(publish5("nobody/here", b"x", qos=1, pid=5))
        self.assertEqual(pub.expect(PUBACK).body, b"\x00\x05")

    @skip_unless_wisp("$SYS/ write refusal is Wisp's")
    def test_puback_not_authorised(self):
        """PUBACK/PUBREC 0x87 for a publish the broker refuses ($SYS/ is the
        broker's); a PUBREC with a failure ends the QoS 2 flow, so the id is
        free at once [MQTT-4.3.3-8]."""
        pub = raw5(self, "sysw")
        pub.send(publish5("$SYS/mine", b"x", qos=1, pid=8))
        self.assertEqual(pub.expect(PUBACK).body, b"\x00\x08\x87")
        pub.send(publish5("$SYS/mine", b"x", qos=2, pid=9))
        self.assertEqual(pub.expect(PUBREC).body, b"\x00\x09\x87")
        pub.send(publish5("ok/topic", b"x", qos=2, pid=9))  # the id is usable again
        self.assertEqual(pub.expect(PUBREC).body[:2], b"\x00\x09")

    def test_topic_alias_never_costs_a_message_under_maximum_packet_size(self):
        """[MQTT-3.1.2-25] only a packet too large to send may be discarded.
        With Topic Alias Maximum 2, a QoS 1 PUBLISH on a 62-byte topic is
        69 + payload bytes with its name, 3 more with a new alias, 10 +
        payload as the alias alone [MQTT-3.3.2-9..11] (QoS 0: 2 bytes less
        each, so its Maximum Packet Size here is 78 instead of 80).
        A 10-byte payload goes without an alias (with one it would be 82);
        a 5-byte one takes the alias; the next 10-byte one goes as the alias
        alone. Before, the alias was counted twice (QoS 0) or the name
        counted for an alias-only packet (QoS 1): both 10-byte messages were
        dropped for this client."""
        for qos, topic, most in ((0, "q0/" + "x" * 59, 78), (1, "q1/" + "y" * 59, 80)):
            with self.subTest(qos=qos):
                sub = self.raw(connect=False)
                sub.send(connect5("alias-mps-%d" % qos, props=prop_u32(0x27, most) + bytes([0x22, 0, 2])))
                self.assertEqual(sub.expect(CONNACK).body[1], 0)
                sub.send(subscribe5(1, [(topic, qos)]))
                sub.expect(9)
                pub = raw5(self, "alias-mps-pub-%d" % qos)
                got = []
                for pid, body in enumerate((b"ten-bytes!", b"five!", b"ten-bytes?"), 1):
                    pub.send(publish5(topic, body, qos=1, pid=pid))
                    pub.expect(PUBACK)
                    p = sub.expect(PUBLISH)
                    self.assertLessEqual(len(p.body) + 2, most)
                    (tlen,) = struct.unpack("!H", p.body[:2])
                    props, payload = v5_properties(p)
                    got.append((p.body[2:2 + tlen].decode(), 0x23 in props[:1], payload))
                    if p.qos:
                        sub.send(packet(0x40, struct.pack("!H", p.publish_fields()[1])))
                self.assertEqual(got, [(topic, False, b"ten-bytes!"), (topic, True, b"five!"),
                                       ("", True, b"ten-bytes?")])

    def test_subscriber_pubrec_error_ends_the_flow(self):
        """A subscriber refusing a QoS 2 message with PUBREC 0x80 gets no
        PUBREL [MQTT-4.3.3-4]; its Receive Maximum of 1 has room again
        (4.9), so the next message comes at once."""
        sub = self.raw(connect=False)
        sub.send(connect5("rec-err-sub", props=bytes([0x21]) + struct.pack("!H", 1)))
        self.assertEqual(sub.expect(CONNACK).body[1], 0)
        sub.send(subscribe5(1, [("rec/err", 2)]))
        sub.expect(9)
        pub = raw5(self, "rec-err-pub")
        for pid, body in ((1, b"refused"), (2, b"next")):
            pub.send(publish5("rec/err", body, qos=2, pid=pid))
            pub.expect(PUBREC)
            pub.send(packet(0x62, struct.pack("!H", pid)))
            pub.expect(PUBCOMP)
        first = sub.expect(PUBLISH)
        self.assertEqual(v5_properties(first)[1], b"refused")
        sub.send(packet(0x50, struct.pack("!H", first.publish_fields()[1]) + b"\x80"))
        second = sub.expect(PUBLISH)  # not a PUBREL
        self.assertEqual(v5_properties(second)[1], b"next")

    def test_more_than_65535_user_properties(self):
        """A PUBLISH under the maximum packet size may carry any number of
        user properties: 70,000 empty pairs (350 KB) reach the subscriber,
        in order and unchanged (they were refused as "packet exceeds the
        maximum packet size", the codec counting them in 16 bits)."""
        sub = raw5(self, "many-props-sub")
        sub.send(subscribe5(1, [("mp/t", 0)]))
        sub.expect(9)
        props = b"".join(prop_user("", "%d" % (i % 10)) for i in range(70000))
        pub = raw5(self, "many-props-pub")
        pub.send(publish5("mp/t", b"many", qos=1, pid=5, props=props))
        self.assertEqual(pub.expect(PUBACK).body[:2], b"\x00\x05")
        got = sub.expect(PUBLISH)
        self.assertEqual(v5_properties(got), (props, b"many"))

    def test_payload_format_invalid(self):
        """[MQTT-3.3.2-4] Payload Format Indicator 1 with a payload that is
        not UTF-8: PUBACK 0x99, nothing routed; a valid one is routed."""
        sub = self.paho5("pfi-sub")
        paho5_subscribe(sub, "pfi/t", qos=1)
        pub = raw5(self, "pfi-pub")
        pub.send(publish5("pfi/t", b"\xff\xfe", qos=1, pid=2, props=prop_u8(0x01, 1)))
        self.assertEqual(pub.expect(PUBACK).body, b"\x00\x02\x99")
        pub.send(publish5("pfi/t", b"\xff\xfe", qos=0, props=prop_u8(0x01, 1)))
        pub.send(publish5("pfi/t", b"bin\xff", qos=1, pid=3, props=prop_u8(0x01, 0)))  # binary: fine
        self.assertEqual(pub.expect(PUBACK).body, b"\x00\x03")
        self.assertEqual(paho5_get(sub).payload, b"bin\xff")
        paho5_nothing(sub)

    def test_expired_message_leaves_queue_and_retained_store(self):
        """[MQTT-3.3.2-5] a message whose Message Expiry Interval has passed
        is not delivered: not from an offline session's queue, not as a
        retained message; the control messages without expiry are."""
        sub = self.paho5("exp-sub", clean_start=False, session_expiry=300)
        paho5_subscribe(sub, "exp/#", qos=1)
        paho5_stop(sub)
        pub = raw5(self, "exp-pub")
        pub.send(publish5("exp/q", b"short", qos=1, pid=1, props=prop_u32(0x02, 1)))
        pub.expect(PUBACK)
        pub.send(publish5("exp/r", b"short-retained", qos=1, pid=2, retain=True, props=prop_u32(0x02, 1)))
        pub.expect(PUBACK)
        pub.send(publish5("exp/q", b"control", qos=1, pid=3, props=prop_u32(0x02, 600)))
        pub.expect(PUBACK)
        pub.send(publish5("exp/k", b"control-retained", qos=1, pid=4, retain=True))
        pub.expect(PUBACK)
        time.sleep(2.2)  # the interval is wall-clock time: let the 1 s ones lapse
        sub = self.paho5("exp-sub", clean_start=False, session_expiry=300)
        got = paho5_get(sub)
        self.assertEqual(got.payload, b"control")
        self.assertTrue(1 <= got.properties.MessageExpiryInterval <= 600)
        self.assertEqual(paho5_get(sub).payload, b"control-retained")
        late = self.paho5("exp-late")
        paho5_subscribe(late, "exp/#", qos=1)
        got = paho5_get(late)
        self.assertEqual((got.topic, got.payload, got.retain), ("exp/k", b"control-retained", 1))
        paho5_nothing(late)
        paho5_nothing(sub)


if __name__ == "__main__":
    main()
