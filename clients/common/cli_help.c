/*
 * Help texts. Same layout and option set as mosquitto_pub/sub 2.0 so that
 * scripts grepping --help keep working; the wording is ours.
 */
#include "cli_help.h"

#include <stdio.h>

#define WISP_CLIENTS_VERSION "0.1.0"

static const char COMMON_OPTS[] =
	" -A : bind the outgoing socket to this host/ip address.\n"
	" -c : disable clean session (persistent session); needs -i.\n"
	" -d : enable debug messages.\n"
	" -D : MQTT v5 property: -D command identifier value (user-property: -D command\n"
	"      user-property name value). Commands: connect, publish (pub), subscribe,\n"
	"      unsubscribe (sub), disconnect, will. Repeatable; selects MQTT v5.\n"
	" -h : broker host to connect to. Defaults to localhost.\n"
	" -i : client id. Defaults to a random id.\n"
	" -I : client id prefix, completed with the process id.\n"
	" -k : keepalive in seconds. Defaults to 60.\n"
	" -L : mqtt(s)://[username[:password]@]host[:port]/topic\n"
	" -M : maximum number of QoS 1/2 messages in flight. Defaults to 20.\n"
	" -p : network port. Defaults to 1883, or 8883 with TLS.\n"
	" -P : password.\n"
	" -q : quality of service (0, 1 or 2). Defaults to 0.\n"
	" -t : topic.\n"
	" -u : username.\n"
	" -V : MQTT protocol version: 5, 311 or 31 (or mqttv5, mqttv311, mqttv31).\n"
	"      Defaults to mqttv311.\n"
	" -x : session expiry interval (MQTT v5 only); -1 or 4294967295 for never.\n"
	" --help : display this message.\n"
	" --nodelay : disable Nagle's algorithm.\n"
	" --quiet : don't print error messages.\n"
	" --will-payload : payload of the client will.\n"
	" --will-qos : QoS of the client will.\n"
	" --will-retain : make the client will retained.\n"
	" --will-topic : topic of the client will.\n"
	" --cafile : file of trusted CA certificates (enables TLS).\n"
	" --capath : directory of trusted CA certificates (enables TLS).\n"
	" --cert : client certificate, for mutual TLS (with --key).\n"
	" --key : client private key, for mutual TLS (with --cert).\n"
	" --ciphers : TLS ciphersuites, colon separated.\n"
	" --insecure : do not check the server certificate's host name.\n"
	" --tls-version : TLS protocol version: tlsv1.2.\n"
	" --tls-use-os-certs : trust the system CA certificates.\n";

void cli_print_usage(enum cli_kind kind)
{
	if (kind == CLI_PUB) {
		printf("wisp_pub is a simple mqtt client that will publish a message on a single topic and exit.\n"
		       "wisp_pub version " WISP_CLIENTS_VERSION ".\n\n"
		       "Usage: wisp_pub {[-h host] [-p port] [-u username] [-P password] -t topic | -L URL}\n"
		       "                {-f file | -l | -n | -m message}\n"
		       "                [-c] [-k keepalive] [-q qos] [-r] [--repeat N] [--repeat-delay time] [-x session-expiry]\n"
		       "                [-A bind_address] [--nodelay]\n"
		       "                [-i id] [-I id_prefix]\n"
		       "                [-d] [--quiet]\n"
		       "                [-M max_inflight]\n"
		       "                [-u username [-P password]]\n"
		       "                [--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]\n"
		       "                [{--cafile file | --capath dir} [--cert file] [--key file]\n"
		       "                  [--ciphers ciphers] [--insecure] [--tls-version version]]\n"
		       "                [--tls-use-os-certs]\n"
		       "                [-V protocol-version] [-D command identifier value]\n"
		       "       wisp_pub --help\n\n"
		       " -f : send the contents of a file as the message.\n"
		       " -l : read messages from stdin, sending a separate message for each line.\n"
		       " -m : message payload to send.\n"
		       " -n : send a null (zero length) message.\n"
		       " -r : message should be retained.\n"
		       " -s : read message from stdin, sending the entire input as a message.\n"
		       " --repeat : publish the message this many times.\n"
		       " --repeat-delay : seconds between repeats, may be fractional.\n"
		       "%s\nSee mosquitto_pub(1); wisp_pub takes the same options.\n",
		       COMMON_OPTS);
		return;
	}
	printf("wisp_sub is a simple mqtt client that will subscribe to a set of topics and print all messages it receives.\n"
	       "wisp_sub version " WISP_CLIENTS_VERSION ".\n\n"
	       "Usage: wisp_sub {[-h host] [-p port] [-u username] [-P password] -t topic | -L URL [-t topic]}\n"
	       "                [-c] [-k keepalive] [-q qos] [-x session-expiry-interval]\n"
	       "                [-C msg_count] [-E] [-R] [--retained-only] [--remove-retained] [-T filter_out] [-U topic ...]\n"
	       "                [-F format]\n"
	       "                [-W timeout_secs]\n"
	       "                [-A bind_address] [--nodelay]\n"
	       "                [-i id] [-I id_prefix]\n"
	       "                [-d] [-N] [--quiet] [-v]\n"
	       "                [--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]\n"
	       "                [{--cafile file | --capath dir} [--cert file] [--key file]\n"
	       "                  [--ciphers ciphers] [--insecure] [--tls-version version]]\n"
	       "                [--tls-use-os-certs]\n"
	       "                [-V protocol-version] [-D command identifier value] [--retain-as-published]\n"
	       "       wisp_sub --help\n\n"
	       " -C : disconnect and exit after receiving msg_count messages.\n"
	       " -E : exit once all subscriptions have been acknowledged by the broker.\n"
	       " -F : output format (see mosquitto_sub(1)); MQTT v5 properties: %%P user properties,\n"
	       "      %%C content type, %%D correlation data, %%E message expiry, %%F payload format,\n"
	       "      %%R response topic, %%S subscription identifier, %%A topic alias.\n"
	       " -N : do not add an end of line character when printing the payload.\n"
	       " -R : do not print stale (retained) messages.\n"
	       " -T : topic filter to leave out of the output. May be repeated.\n"
	       " -U : unsubscribe from a topic. May be repeated.\n"
	       " -v : print the topic before each payload.\n"
	       " -W : exit with status 27 after this many seconds.\n"
	       " --pretty : indented JSON for %%j and %%J.\n"
	       " --random-filter : print only this percentage of messages.\n"
	       " --retained-only : only print retained messages; exit at the first live one.\n"
	       " --remove-retained : clear each retained message received.\n"
	       " --retain-as-published : (MQTT v5) keep the retain flag as the publisher set it.\n"
	       "%s\nSee mosquitto_sub(1); wisp_sub takes the same options.\n",
	       COMMON_OPTS);
}

void cli_print_version(enum cli_kind kind)
{
	printf("%s version " WISP_CLIENTS_VERSION " (compatible with mosquitto %s 2.0.11).\n",
	       kind == CLI_PUB ? "wisp_pub" : "wisp_sub", kind == CLI_PUB ? "mosquitto_pub" : "mosquitto_sub");
}
