/*
 * A tiny Eclipse Paho C client (Debian's libpaho-mqtt3as, the asynchronous
 * API) for tests/e2e/18_websocket.py: connects to a ws:// or wss:// URI
 * with MQTT 3.1.1, subscribes to a topic at QoS 2, publishes one message at
 * each QoS 0, 1 and 2 to it back to back, and waits for the three to come
 * back. Prints "ok" and exits 0 when every message came back with its
 * payload and QoS; exits 1 with the reason on stderr otherwise. Every wait
 * is bounded.
 *
 * The asynchronous API, because Paho C 1.3.11's synchronous MQTTClient
 * reads a WebSocket frame that holds several MQTT packets only up to the
 * first one and then waits for the socket to become readable again
 * ([MQTT-6.0.0-2] says frames and packets need not align; Wisp puts every
 * packet queued in a loop turn into one frame).
 *
 *   paho_ws_client URI CLIENT_ID TOPIC [CA_FILE]
 */
#include <MQTTAsync.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile int seen, subscribed, failed;

static void note_fail(const char *what, int code)
{
	fprintf(stderr, "paho_ws_client: %s: %d\n", what, code);
	__atomic_store_n(&failed, 1, __ATOMIC_SEQ_CST);
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
	(void)ctx;
	(void)topic_len;
	for (int qos = 0; qos <= 2; qos++) {
		char want[32];
		snprintf(want, sizeof want, "paho-c qos %d", qos);
		if (m->payloadlen == (int)strlen(want) && memcmp(m->payload, want, strlen(want)) == 0 &&
		    m->qos == qos)
			__atomic_or_fetch(&seen, 1 << qos, __ATOMIC_SEQ_CST);
	}
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void on_lost(void *ctx, char *cause)
{
	(void)ctx;
	fprintf(stderr, "paho_ws_client: connection lost: %s\n", cause ? cause : "?");
	__atomic_store_n(&failed, 1, __ATOMIC_SEQ_CST);
}

static void on_subscribed(void *ctx, MQTTAsync_successData *d)
{
	(void)ctx;
	(void)d;
	__atomic_store_n(&subscribed, 1, __ATOMIC_SEQ_CST);
}

static void on_sub_failed(void *ctx, MQTTAsync_failureData *d)
{
	(void)ctx;
	note_fail("subscribe", d ? d->code : -1);
}

static void on_connect_failed(void *ctx, MQTTAsync_failureData *d)
{
	(void)ctx;
	note_fail("connect", d ? d->code : -1);
}

static void on_connected(void *ctx, MQTTAsync_successData *d)
{
	MQTTAsync client = *(MQTTAsync *)ctx;
	(void)d;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	ro.onSuccess = on_subscribed;
	ro.onFailure = on_sub_failed;
	int rc = MQTTAsync_subscribe(client, getenv("PAHO_TOPIC"), 2, &ro);
	if (rc != MQTTASYNC_SUCCESS)
		note_fail("subscribe", rc);
}

/* Polls `flag` every 50 ms for up to 10 s; false on timeout or failure. */
static bool wait_for(volatile int *flag, int value)
{
	for (int i = 0; i < 200; i++) {
		if (__atomic_load_n(&failed, __ATOMIC_SEQ_CST))
			return false;
		if (__atomic_load_n(flag, __ATOMIC_SEQ_CST) == value)
			return true;
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return false;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s URI CLIENT_ID TOPIC [CA_FILE]\n", argv[0]);
		return 2;
	}
	const char *uri = argv[1], *id = argv[2], *topic = argv[3];
	setenv("PAHO_TOPIC", topic, 1);
	MQTTAsync client;
	int rc = MQTTAsync_create(&client, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
	if (rc != MQTTASYNC_SUCCESS)
		return note_fail("create", rc), 1;
	if ((rc = MQTTAsync_setCallbacks(client, &client, on_lost, on_message, NULL)) != MQTTASYNC_SUCCESS)
		return note_fail("callbacks", rc), 1;
	MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
	MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
	co.keepAliveInterval = 30;
	co.cleansession = 1;
	co.MQTTVersion = MQTTVERSION_3_1_1;
	co.connectTimeout = 10;
	co.onSuccess = on_connected;
	co.onFailure = on_connect_failed;
	co.context = &client;
	if (argc > 4) {
		ssl.trustStore = argv[4];
		ssl.enableServerCertAuth = 1;
		co.ssl = &ssl;
	}
	if ((rc = MQTTAsync_connect(client, &co)) != MQTTASYNC_SUCCESS)
		return note_fail("connect", rc), 1;
	if (!wait_for(&subscribed, 1))
		return note_fail("no SUBACK", 0), 1;
	/* Back to back, so the broker's answers share frames. */
	for (int qos = 0; qos <= 2; qos++) {
		char payload[32];
		snprintf(payload, sizeof payload, "paho-c qos %d", qos);
		MQTTAsync_message m = MQTTAsync_message_initializer;
		m.payload = payload;
		m.payloadlen = (int)strlen(payload);
		m.qos = qos;
		if ((rc = MQTTAsync_sendMessage(client, topic, &m, NULL)) != MQTTASYNC_SUCCESS)
			return note_fail("publish", rc), 1;
	}
	if (!wait_for(&seen, 7)) {
		fprintf(stderr, "paho_ws_client: received mask %d of 7\n", seen);
		return 1;
	}
	MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer;
	dopt.timeout = 1000;
	MQTTAsync_disconnect(client, &dopt);
	struct timespec ts = {0, 200 * 1000 * 1000};
	nanosleep(&ts, NULL);
	MQTTAsync_destroy(&client);
	printf("ok\n");
	return 0;
}
