/*
 * wisp: wiring only. Arguments, configuration, logging, signals, the
 * broker, the loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "broker.h"
#include "bridge.h"
#include "cluster.h"
#include "config.h"
#include "err.h"
#include "file.h"
#include "http_server.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "mosquitto_conf.h"

#ifndef WISP_VERSION
#define WISP_VERSION "0.0.0"
#endif

/* What the command line says over the file, at start and at every reload. */
struct overrides {
	bool verbose;   /* -v: level debug */
	bool have_port; /* -p */
	uint16_t port;
};

struct signals {
	struct loop_io io;
	struct broker *b;
	const char *config_path; /* NULL: the embedded default, nothing to reload */
	const struct overrides *cli;
};

/* -p: the first listener's port, or every default listener's, as
 * Mosquitto moves both 127.0.0.1 and ::1 of its local-only mode. */
static void apply_overrides(struct config *cfg, const struct overrides *cli)
{
	for (size_t i = 0; i < cfg->listener_count && cli->have_port; i++)
		if (i == 0 || cfg->default_listeners)
			cfg->listeners[i].port = cli->port;
	if (cli->verbose)
		cfg->log.level = LOG_DEBUG;
}

/* SIGHUP: reopen the log file, then re-read the configuration file;
 * broker_reload applies it or keeps the old one. */
static void reload(struct signals *sig)
{
	/* First, and whatever becomes of the new configuration: logrotate has
	 * renamed the file and expects the next line in a new one. */
	if (log_reopen() != 0)
		log_msg(LOG_WARNING, "main", "SIGHUP: cannot reopen the log file; still writing to the old one");
	if (!sig->config_path || !sig->b) {
		log_msg(LOG_NOTICE, "main", "SIGHUP: running on the embedded default, nothing to reload");
		return;
	}
	char err[512];
	struct config *next = NULL;
	if (config_load(sig->config_path, &next, err, sizeof err) != 0) {
		log_msg(LOG_ERROR, "main", "reload refused, keeping the running configuration: %s", err);
		return;
	}
	/* Else -p reads as a listener moved and -v is lost at the first reload. */
	apply_overrides(next, sig->cli);
	broker_reload(sig->b, next);
	config_free(next);
}

static void usage(FILE *out)
{
	fprintf(out,
		"wisp %s, an MQTT broker for IoT sensors\n"
		"\n"
		"Usage: wisp [-c FILE] [-p PORT] [-v]\n"
		"       wisp --check-config FILE\n"
		"       wisp --convert-mosquitto-conf FILE\n"
		"\n"
		" -c, --config FILE    load the configuration FILE: Wisp's JSON, or a Mosquitto\n"
		"                      mosquitto.conf (default: the embedded default,\n"
		"                      anonymous MQTT on 127.0.0.1:1883)\n"
		" -p, --port PORT      listen on PORT instead of the first listener's port\n"
		"                      (every default listener's when FILE names none)\n"
		" -v, --verbose        log everything (level debug)\n"
		"     --check-config FILE  validate FILE, print the result, exit 0 or 1: what\n"
		"                      start-up checks (password file, ACL, TLS files, bind\n"
		"                      addresses, pid_file directory) except taking the\n"
		"                      ports and the store, which a running broker holds\n"
		"     --convert-mosquitto-conf FILE  print the Wisp JSON equivalent to the\n"
		"                      mosquitto.conf FILE (validated as --check-config does)\n"
		" -h, --help           show this help\n"
		"     --version        print the version\n"
		"\n"
		"Signals: SIGINT/SIGTERM stop the broker cleanly; SIGHUP reloads the\n"
		"configuration; SIGUSR1 only logs (the store is always up to date); SIGUSR2\n"
		"logs the counts of sessions, subscriptions and retained messages.\n",
		WISP_VERSION);
}

static void on_signal(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)events;
	struct signals *sig = container_of(io, struct signals, io);
	struct signalfd_siginfo si;
	while (read(io->fd, &si, sizeof si) == (ssize_t)sizeof si) {
		if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
			log_msg(LOG_NOTICE, "main", "signal %s received, shutting down",
				si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
			loop_stop(l);
		} else if (si.ssi_signo == SIGHUP) {
			reload(sig);
		} else if (si.ssi_signo == SIGUSR1) {
			/* Mosquitto writes its in-memory database here; Wisp's is never
			 * behind, so an operator's habit must not cost the broker. */
			log_msg(LOG_NOTICE, "main", "SIGUSR1 received: nothing to save, %s",
				sig->b && sig->b->persist.store ? "the store writes every change as it happens"
								 : "persistence is off");
		} else if (si.ssi_signo == SIGUSR2) {
			/* Mosquitto prints its subscription tree; the counts are what an
			 * operator can act on, and a tree of millions would flood the log. */
			if (sig->b)
				metrics_log_summary(sig->b, "SIGUSR2 received");
			else
				log_msg(LOG_NOTICE, "main", "SIGUSR2 received: the broker is not running yet");
		}
	}
}

static int watch_signals(struct loop *l, struct signals *sig)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &set, NULL) == -1)
		return WISP_EIO;
	int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd == -1)
		return WISP_EIO;
	signal(SIGPIPE, SIG_IGN); /* write errors come back as EPIPE instead */
	return loop_io_start(l, &sig->io, fd, LOOP_READ, on_signal);
}

/* Many sensors means many sockets: use all the descriptors we may. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* --convert-mosquitto-conf: the translation -c uses, validated as
 * --check-config validates, printed only when Wisp would run it. */
static int convert_mosquitto(const char *path)
{
	char err[512];
	char *buf = NULL;
	size_t len = 0;
	int rc = wisp_read_file(path, 4u * 1024u * 1024u, &buf, &len);
	if (rc) {
		fprintf(stderr, "%s: cannot read: %s\n", path, rc == WISP_ELIMIT ? "file too large" : strerror(errno));
		return 1;
	}
	if (!mosq_conf_detect(buf ? buf : "", len)) {
		fprintf(stderr, "%s: already a JSON configuration (its first character is '{' or '[')\n", path);
		wisp_free(buf);
		return 1;
	}
	struct config *cfg = NULL;
	char *json = NULL;
	int status = 1;
	if (mosq_conf_parse(path, buf, len, &cfg, err, sizeof err) != 0 ||
	    server_check_tls(cfg, err, sizeof err) != 0 || bridges_check_tls(cfg, err, sizeof err) != 0 ||
	    cluster_check_config(cfg, err, sizeof err) != 0 || mosq_conf_convert(path, buf, len, &json, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
	} else {
		fputs(json, stdout);
		status = fflush(stdout) == 0 ? 0 : 1;
	}
	wisp_free(json);
	config_free(cfg);
	wisp_free(buf);
	return status;
}

/* Mosquitto's pid_file: written once the listeners are open, so a script
 * that waits for it can connect. 0, or -1 with errno. */
static int write_pid_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	char line[24];
	int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
	if (write(fd, line, (size_t)n) != (ssize_t)n) {
		int e = errno ? errno : EIO;
		close(fd);
		unlink(path);
		errno = e;
		return -1;
	}
	return close(fd);
}

/* The pid_file's directory exists and is writable: a missing one would
 * otherwise stop the broker only after everything else had started. */
static int check_pid_dir(const struct config *cfg, char *err, size_t errlen)
{
	if (!cfg->pid_file)
		return 0;
	const char *slash = strrchr(cfg->pid_file, '/');
	char dir[4096];
	if (!slash)
		snprintf(dir, sizeof dir, ".");
	else
		snprintf(dir, sizeof dir, "%.*s", slash == cfg->pid_file ? 1 : (int)(slash - cfg->pid_file),
			 cfg->pid_file);
	struct stat st;
	if (stat(dir, &st) == -1 || (!S_ISDIR(st.st_mode) && (errno = ENOTDIR)) || access(dir, W_OK | X_OK) == -1) {
		snprintf(err, errlen, "%s: pid_file: cannot write '%s': %s: %s", cfg->path, cfg->pid_file, dir,
			 strerror(errno));
		return WISP_ECONFIG;
	}
	return 0;
}

/* --check-config: everything start-up checks except what needs the
 * resources a running broker holds (binding the ports, the store's lock). */
static int check_config(const char *path)
{
	char err[512];
	struct config *cfg = NULL;
	if (config_load(path, &cfg, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* What start-up would refuse, the check refuses, in the same words. */
	struct auth_state auth = {0};
	int rc = server_check_tls(cfg, err, sizeof err);
	if (!rc)
		rc = bridges_check_tls(cfg, err, sizeof err);
	if (!rc)
		rc = cluster_check_config(cfg, err, sizeof err);
	if (!rc && (rc = auth_load(cfg, &auth, err, sizeof err)) == 0)
		auth_release(&auth);
	if (!rc)
		rc = server_check_listeners(cfg, err, sizeof err);
	if (!rc)
		rc = check_pid_dir(cfg, err, sizeof err);
	if (rc)
		fprintf(stderr, "%s\n", err);
	else
		printf("%s: configuration OK\n", path);
	config_free(cfg);
	return rc ? 1 : 0;
}

static int parse_port(const char *s, uint16_t *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < 1 || v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

int main(int argc, char **argv)
{
	const char *config_path = NULL;
	const char *check_path = NULL;
	struct overrides cli = {0};

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has_value = i + 1 < argc;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--version")) {
			printf("wisp %s\n", WISP_VERSION);
			return 0;
		} else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			cli.verbose = true;
		} else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && has_value) {
			config_path = argv[++i];
		} else if (!strcmp(a, "--check-config") && has_value) {
			check_path = argv[++i];
		} else if (!strcmp(a, "--convert-mosquitto-conf") && has_value) {
			return convert_mosquitto(argv[++i]);
		} else if ((!strcmp(a, "-p") || !strcmp(a, "--port")) && has_value) {
			if (parse_port(argv[++i], &cli.port) != 0) {
				fprintf(stderr, "wisp: invalid port '%s' (1-65535)\n", argv[i]);
				return 1;
			}
			cli.have_port = true;
		} else {
			fprintf(stderr, "wisp: %s '%s'\n", a[0] == '-' && !has_value ? "missing value or unknown option" : "unknown option", a);
			usage(stderr);
			return 1;
		}
	}

	char err[512];
	struct config *cfg = NULL;
	if (check_path)
		return check_config(check_path);
	if (config_path) {
		if (config_load(config_path, &cfg, err, sizeof err) != 0) {
			fprintf(stderr, "wisp: %s\n", err);
			return 1;
		}
	} else {
		cfg = config_default();
		if (!cfg) {
			fprintf(stderr, "wisp: out of memory\n");
			return 1;
		}
	}
	apply_overrides(cfg, &cli);
	if (server_check_listeners(cfg, err, sizeof err) != 0 || check_pid_dir(cfg, err, sizeof err) != 0) {
		fprintf(stderr, "wisp: %s\n", err);
		config_free(cfg);
		return 1;
	}

	log_set_level((enum log_level)cfg->log.level);
	log_set_format((enum log_format)cfg->log.format);
	if (cfg->log.destination && log_set_destination(cfg->log.destination) != 0) {
		fprintf(stderr, "wisp: %s: log.destination: cannot open '%s'\n", cfg->path, cfg->log.destination);
		config_free(cfg);
		return 1;
	}
	if (cfg->limits.memory_limit)
		wisp_mem_set_limit(cfg->limits.memory_limit);
	raise_fd_limit();

	int status = 1;
	struct loop *l = loop_new();
	struct broker b;
	struct http_server http;
	bool http_open = false;
	struct signals sig = {.io.fd = -1};
	if (!l) {
		fprintf(stderr, "wisp: cannot create the event loop\n");
		goto out;
	}
	if (watch_signals(l, &sig) != 0) {
		fprintf(stderr, "wisp: cannot watch signals: %s\n", strerror(errno));
		goto out;
	}
	if (broker_init(&b, l, cfg, err, sizeof err) != 0) {
		fprintf(stderr, "wisp: %s\n", err);
		goto out;
	}
	struct cluster *cluster = NULL;
	if (cluster_start(&b, &cluster, err, sizeof err) != 0) {
		fprintf(stderr, "wisp: %s\n", err);
		broker_free(&b);
		goto out;
	}
	struct bridges *bridges = NULL;
	if (bridges_start(&b, &bridges, err, sizeof err) != 0) {
		fprintf(stderr, "wisp: %s\n", err);
		cluster_stop(cluster);
		broker_free(&b);
		goto out;
	}
	if (http_server_open(&http, &b, err, sizeof err) != 0) {
		fprintf(stderr, "wisp: %s\n", err);
		bridges_stop(bridges);
		cluster_stop(cluster);
		broker_free(&b);
		bridges_free(bridges);
		goto out;
	}
	http_open = true;
	if (cfg->pid_file && write_pid_file(cfg->pid_file) != 0) {
		fprintf(stderr, "wisp: %s: pid_file: cannot write '%s': %s\n", cfg->path, cfg->pid_file, strerror(errno));
		http_server_close(&http);
		bridges_stop(bridges);
		cluster_stop(cluster);
		broker_free(&b);
		bridges_free(bridges);
		goto out;
	}
	sig.b = &b;
	sig.config_path = config_path;
	sig.cli = &cli;
	log_msg(LOG_NOTICE, "main", "wisp %s running (config %s)", WISP_VERSION, cfg->path);
	int rc = loop_run(l);
	if (rc != 0)
		log_msg(LOG_ERROR, "main", "event loop failed: %s", wisp_strerror(rc));
	sig.b = NULL;
	if (http_open)
		http_server_close(&http);
	bridges_stop(bridges);
	cluster_stop(cluster);
	broker_free(&b);
	bridges_free(bridges);
	if (cfg->pid_file)
		unlink(cfg->pid_file);
	log_msg(LOG_NOTICE, "main", "wisp stopped");
	status = rc == 0 ? 0 : 1;
out:
	if (sig.io.fd >= 0) {
		loop_io_stop(l, &sig.io);
		close(sig.io.fd);
	}
	loop_free(l);
	config_free(cfg);
	return status;
}
