#!/usr/bin/python3
"""17 v5 SUBSCRIBE: subscription options (No Local, Retain As Published,
Retain Handling 0/1/2), Subscription Identifiers (one copy carrying both
identifiers for overlapping subscriptions) and per-filter SUBACK reason
codes. Real v5 clients: paho-mqtt MQTTv5, mosquitto_sub -V 5, MQTT.js
protocolVersion 5; raw packets where the bytes matter."""

import os
import shutil
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, MSG_PREFIX, PUBACK, PUBLISH, SUBACK, Broker, BrokerTestCase,  # noqa: E402
                      RawClient, main, skip_unless_wisp)
from v5_clients import (MqttJs, connect5, paho5, paho5_get, paho5_nothing, paho5_stop,  # noqa: E402
                        paho5_subscribe, prop_str, prop_u32, prop_user, prop_varint, publish5,
                        raw5, subscribe5)


class V5SubscribeTest(BrokerTestCase):

    LIMITS = {"max_subscriptions": 4}

    def paho5(self, client_id, **kw):
        c = paho5(self.broker.port, client_id, **kw)
        self.on_cleanup(lambda: paho5_stop(c))
        return c

    def test_no_local(self):
        """[MQTT-3.8.3-3] with No Local a client does not get its own
        messages back on that subscription; others still get them."""
        a = self.paho5("nl-a")
        b = self.paho5("nl-b")
        paho5_subscribe(a, "nl/t", qos=1, no_local=True)
        paho5_subscribe(b, "nl/t", qos=1, no_local=True)
        a.publish("nl/t", "from-a", qos=1).wait_for_publish(5)
        self.assertEqual(paho5_get(b).payload, b"from-a")
        b.publish("nl/t", "from-b", qos=1).wait_for_publish(5)
        self.assertEqual(paho5_get(a).payload, b"from-b")
        paho5_nothing(a)
        paho5_nothing(b)

    def test_mosquitto_sub_v5_sees_properties_and_identifier(self):
        """mosquitto_sub -V 5 with a Subscription Identifier receives a paho
        v5 message with its identifier, content type, response topic and
        user property (mosquitto_sub's %S %C %R %P)."""
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        s = self.sub("mv5/t", qos=1, extra=[
            "-V", "5", "-D", "subscribe", "subscription-identifier", "5",
            "-F", MSG_PREFIX + "%r %q %t %S|%C|%R|%P|%p"]).wait_subscribed()
        pub = self.paho5("mv5-pub")
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "text/csv"
        props.ResponseTopic = "mv5/reply"
        props.UserProperty = ("k", "v")
        pub.publish("mv5/t", "1,2", qos=1, properties=props).wait_for_publish(5)
        self.assertEqual(s.get(), ("mv5/t", False, 1, "5|text/csv|mv5/reply|k:v|1,2"))

    def test_retain_as_published(self):
        """[MQTT-3.3.1-12] RETAIN is 0 on forwarded messages unless Retain As
        Published [MQTT-3.3.1-13]; a retained message sent because of the
        subscription has RETAIN 1 either way."""
        rap = self.paho5("rap-1")
        plain = self.paho5("rap-0")
        paho5_subscribe(rap, "rap/t", qos=1, rap=True)
        paho5_subscribe(plain, "rap/t", qos=1)
        pub = self.paho5("rap-pub")
        pub.publish("rap/t", "kept", qos=1, retain=True).wait_for_publish(5)
        self.assertEqual(paho5_get(rap).retain, 1)
        self.assertEqual(paho5_get(plain).retain, 0)
        late = self.paho5("rap-late")
        paho5_subscribe(late, "rap/t", qos=1)
        self.assertEqual(paho5_get(late).retain, 1)

    def test_retain_handling(self):
        """[MQTT-3.3.1-9] 0: retained messages on every SUBSCRIBE;
        [MQTT-3.3.1-10] 1: only when the subscription is new;
        [MQTT-3.3.1-11] 2: never."""
        pub = self.paho5("rh-pub")
        pub.publish("rh/t", "r", qos=1, retain=True).wait_for_publish(5)
        c = self.paho5("rh-c")
        paho5_subscribe(c, "rh/t", qos=1, handling=0)
        self.assertEqual(paho5_get(c).payload, b"r")
        paho5_subscribe(c, "rh/t", qos=1, handling=0)
        self.assertEqual(paho5_get(c).payload, b"r")
        paho5_subscribe(c, "rh/t", qos=1, handling=1)  # exists: nothing
        paho5_nothing(c)
        paho5_subscribe(c, "rh/+", qos=1, handling=1)  # new: sent
        self.assertEqual(paho5_get(c).payload, b"r")
        paho5_subscribe(c, "rh/#", qos=1, handling=2)  # never
        paho5_nothing(c)

    def test_overlapping_subscriptions_one_copy_with_both_identifiers(self):
        """[MQTT-3.3.4-3] [MQTT-3.3.4-4] overlapping subscriptions with
        identifiers 1 and 2: one copy carrying both (Mosquitto 2.0 sends
        two copies)."""
        c = self.paho5("ids")
        paho5_subscribe(c, "ids/#", qos=1, sub_id=1)
        paho5_subscribe(c, "ids/+", qos=1, sub_id=2)
        paho5_subscribe(c, "ids/x", qos=1)  # a third, without identifier
        pub = self.paho5("ids-pub")
        pub.publish("ids/x", "one", qos=1).wait_for_publish(5)
        got = paho5_get(c)
        self.assertEqual(sorted(got.properties.SubscriptionIdentifier), [1, 2])
        paho5_nothing(c)
        # A retained message sent on subscribe carries that subscription's.
        pub.publish("ids/r", "kept", qos=1, retain=True).wait_for_publish(5)
        paho5_get(c)
        late = self.paho5("ids-late")
        paho5_subscribe(late, "ids/r", qos=1, sub_id=77)
        self.assertEqual(paho5_get(late).properties.SubscriptionIdentifier, [77])

    def test_subscription_identifier_with_mqttjs(self):
        """MQTT.js protocolVersion 5 subscribes with an identifier; the
        message it receives carries it."""
        js = MqttJs(self.broker.port, """
const c = mqtt.connect({host: '127.0.0.1', port: PORT, protocolVersion: 5, clientId: 'js-ids'});
c.on('connect', () => c.subscribe('jsid/t', {qos: 1, properties: {subscriptionIdentifier: 9}},
  (err) => { if (err) process.exit(1); say('SUBSCRIBED'); }));
c.on('message', (topic, payload, packet) => { c.end(); done({payload: payload.toString(),
  props: packet.properties || {}}); });
""")
        self.on_cleanup(js.kill)
        js.wait_line("SUBSCRIBED")
        self.pub("jsid/t", "hi", qos=1, extra=["-V", "5"])
        r = js.result()
        self.assertEqual(r["payload"], "hi")
        ids = r["props"].get("subscriptionIdentifier")
        self.assertEqual(ids if isinstance(ids, list) else [ids], [9])

    @skip_unless_wisp("per-filter codes follow Wisp's limits")
    def test_suback_reason_codes(self):
        """[MQTT-3.9.3-1] one code per filter, in order: granted QoS, 0x8F
        invalid filter, a shared subscription granted (it counts as one of
        the session's subscriptions), 0x97 over limits.max_subscriptions."""
        c = raw5(self, "codes")
        c.send(subscribe5(5, [("ok/1", 1), ("bad/#/x", 0), ("$share/g/t", 1), ("ok/2", 2),
                              ("ok/3", 0), ("ok/4", 0), ("ok/5", 0)],
                          props=prop_varint(0x0B, 3)))
        ack = c.expect(SUBACK)
        self.assertEqual(ack.body, b"\x00\x05\x00" + bytes([0x01, 0x8F, 0x01, 0x02, 0x00, 0x97, 0x97]))

    def test_suback_codes_stay_311_for_311(self):
        """A 3.1.1 client keeps 0x80 for every refusal [MQTT-3.9.3]."""
        c = self.raw("old-codes")
        codes = c.subscribe([("ok/a", 1), ("bad/#/x", 0)])
        self.assertEqual(list(codes), [1, 0x80])


@skip_unless_wisp("Wisp's ACL file")
class V5AclTest(BrokerTestCase):
    """What the ACL refuses a v5 client is answered 0x87 [MQTT-3.9.3]."""

    def broker_options(self):
        self.dir = tempfile.mkdtemp(prefix="wisp-v5-acl-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        acl = os.path.join(self.dir, "acl")
        with open(acl, "w") as f:
            f.write("topic readwrite open/#\n")
        return {"config": {"auth": {"acl_file": acl}}}

    def test_acl_refusals_are_0x87(self):
        c = raw5(self, "acl-v5")
        c.send(subscribe5(1, [("open/#", 1), ("closed/#", 1)]))
        self.assertEqual(c.expect(SUBACK).body, b"\x00\x01\x00\x01\x87")
        c.send(publish5("closed/x", b"no", qos=1, pid=2))
        self.assertEqual(c.expect(PUBACK).body, b"\x00\x02\x87")
        c.send(publish5("open/x", b"yes", qos=1, pid=3))
        self.assertEqual(c.expect(PUBLISH).body, b"\x00\x06open/x\x00\x01\x00yes")  # routed to its own subscription,
        self.assertEqual(c.expect(PUBACK).body, b"\x00\x03")  # then acknowledged
        old = self.raw("acl-311")
        self.assertEqual(old.subscribe([("closed/#", 1)]), [0x80])


@skip_unless_wisp("kills and restarts the broker on its own store")
class V5DurabilityTest(BrokerTestCase):
    """Every v5 field of a subscription and of a queued message survives
    kill -9: the ack came after the records were written."""

    def broker_options(self):
        return {"config": {"persistence": {"enabled": True, "dir": self.data, "fsync": "no"}}}

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="wisp-v5-store-")
        self.killed = []
        super().setUp()

    def tearDown(self):
        super().tearDown()
        for b in self.killed:
            b.cleanup()
        shutil.rmtree(self.data, ignore_errors=True)

    def restart_after_kill9(self):
        self.broker.proc.send_signal(signal.SIGKILL)
        self.assertEqual(self.broker.proc.wait(timeout=10), -signal.SIGKILL)
        self.broker.exit_status = -signal.SIGKILL
        self.killed.append(self.broker)
        self.broker = Broker(**self.broker_options())
        self.broker.start()

    def test_kill9_keeps_subscription_options_and_message_fields(self):
        sub = paho5(self.broker.port, "k9-sub", clean_start=False, session_expiry=3600)
        self.assertEqual(paho5_subscribe(sub, "k9/#", qos=1, no_local=True, rap=True, sub_id=11), [1])
        paho5_stop(sub)
        pub = RawClient(self.broker.port)
        self.on_cleanup(pub.close)
        pub.send(connect5("k9-pub"))
        pub.expect(CONNACK)
        props = prop_u32(0x02, 3600) + prop_user("k", "v") + prop_str(0x03, "text/k9")
        pub.send(publish5("k9/t", b"survives", qos=1, pid=3, retain=True, props=props))
        self.assertEqual(pub.expect(PUBACK).body, b"\x00\x03")
        pub.close()

        self.restart_after_kill9()

        sub = paho5(self.broker.port, "k9-sub", clean_start=False, session_expiry=3600)
        self.on_cleanup(lambda: paho5_stop(sub))
        got = paho5_get(sub)
        self.assertEqual((got.topic, got.payload, got.retain), ("k9/t", b"survives", 1))  # Retain As Published
        p = got.properties
        self.assertEqual(p.UserProperty, [("k", "v")])
        self.assertEqual(p.ContentType, "text/k9")
        self.assertEqual(p.SubscriptionIdentifier, [11])
        self.assertTrue(1 <= p.MessageExpiryInterval <= 3600, p.MessageExpiryInterval)
        # No Local survived too: its own message does not come back; another's does.
        sub.publish("k9/own", "own", qos=1).wait_for_publish(5)
        other = paho5(self.broker.port, "k9-other")
        self.on_cleanup(lambda: paho5_stop(other))
        other.publish("k9/other", "other", qos=1).wait_for_publish(5)
        self.assertEqual(paho5_get(sub).payload, b"other")
        paho5_nothing(sub)


if __name__ == "__main__":
    main()
