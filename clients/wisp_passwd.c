/*
 * wisp_passwd: manage a Wisp password file, the way mosquitto_passwd manages
 * Mosquitto's (same options, messages and exit codes where they make sense):
 *
 *   wisp_passwd [-H hash] [-I iterations] [-c | -D] passwordfile username
 *   wisp_passwd [-H hash] [-I iterations] [-c] -b passwordfile username password
 *   wisp_passwd [-I iterations] -U passwordfile
 *
 * Lines are "username:$pbkdf2-sha512$<iterations>$<salt>$<hash>" (format in
 * config/README.md), or with -H scram-sha-256
 * "username:$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>" for
 * users who log in with MQTT 5 enhanced authentication (SCRAM-SHA-256). Editing keeps every other line as it was (comments,
 * Mosquitto $7$ lines) and replaces the file atomically: a temporary file in
 * the same directory, fsync, rename. New files are created mode 0600; an
 * edited file keeps its mode, owner and group (the service reads it through
 * its group: README's root:wisp 0640), as mosquitto_passwd's rewrite in
 * place does. A symbolic link is followed and its target replaced, the link
 * left as it is. Exit status 0 on success, 1 on any error.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "passwd.h"
#include "scram.h"

#define PW_MAX 65535 /* an MQTT password is at most 65535 bytes */

/* SCRAM-SHA-256's PBKDF2 runs on the client at every login (the broker
 * stores only StoredKey and ServerKey), so its default is MongoDB's 15000
 * (RFC 7677 asks at least 4096), not the 210000 the broker spends once per
 * user on a $pbkdf2-sha512$ line. */
#define SCRAM_ITERATIONS_DEFAULT 15000u

static bool hash_scram; /* -H scram-sha-256 */

static struct termios saved_tty;
static volatile sig_atomic_t tty_saved;

static void usage(void)
{
	printf("wisp_passwd is a tool for managing password files for the Wisp MQTT broker.\n\n");
	printf("Usage: wisp_passwd [-H hash] [-I iterations] [-c | -D] passwordfile username\n");
	printf("       wisp_passwd [-H hash] [-I iterations] [-c] -b passwordfile username password\n");
	printf("       wisp_passwd [-I iterations] -U passwordfile\n");
	printf(" -b : run in batch mode to allow passing passwords on the command line.\n");
	printf(" -c : create a new password file. This will overwrite existing files.\n");
	printf(" -D : delete the username rather than adding/updating its password.\n");
	printf(" -H : hash algorithm: sha512-pbkdf2 (the default) or scram-sha-256 (for MQTT 5\n"
	       "      SCRAM-SHA-256 enhanced authentication; also accepted as a CONNECT password).\n");
	printf(" -I : PBKDF2 iteration count (1..%u, default %u; scram-sha-256: %u..%u, default %u).\n",
	       PASSWD_ITERATIONS_MAX, PASSWD_ITERATIONS_DEFAULT, SCRAM_ITERATIONS_MIN, PASSWD_ITERATIONS_MAX,
	       SCRAM_ITERATIONS_DEFAULT);
	printf(" -U : update a plain text password file to use hashed passwords.\n");
	printf("\nThe file format is described in config/README.md.\n");
}

/* ---- password prompt ---- */

static void restore_tty(void)
{
	if (tty_saved) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
		tty_saved = 0;
	}
}

static void on_signal(int sig)
{
	/* tcsetattr is async-signal-safe: give the terminal its echo back. */
	restore_tty();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Reads one line from stdin into buf without the newline; echo is off when
 * stdin is a terminal. Returns the length, or -1 on EOF/error/too long. */
static long read_password(const char *prompt, char *buf, size_t cap)
{
	bool tty = isatty(STDIN_FILENO);
	if (tty) {
		struct termios t;
		if (tcgetattr(STDIN_FILENO, &saved_tty) == 0) {
			t = saved_tty;
			t.c_lflag &= (tcflag_t)~(ECHO | ECHONL);
			t.c_lflag |= ICANON;
			tty_saved = 1;
			signal(SIGINT, on_signal);
			signal(SIGTERM, on_signal);
			signal(SIGHUP, on_signal);
			tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
		}
		printf("%s", prompt);
		fflush(stdout);
	}
	size_t n = 0;
	bool ok = false;
	for (;;) {
		int c = getchar();
		if (c == EOF)
			break;
		if (c == '\n') {
			ok = true;
			break;
		}
		if (n + 1 >= cap) {
			n = cap; /* too long: drain the line, then fail */
			continue;
		}
		buf[n++] = (char)c;
	}
	if (tty) {
		restore_tty();
		printf("\n");
	}
	if (n && n < cap && buf[n - 1] == '\r')
		n--;
	if (n >= cap) {
		fprintf(stderr, "Error: Password too long.\n");
		return -1;
	}
	buf[n] = '\0';
	if (!ok && n == 0) {
		/* Input ended before a password: mosquitto_passwd's words. */
		fprintf(stderr, "Error: Empty password.\n");
		return -1;
	}
	return (long)n;
}

static int get_password(char *pw, size_t cap)
{
	static char again[PW_MAX + 2];
	long n = read_password("Password: ", pw, cap);
	if (n < 0)
		return -1;
	long m = read_password("Reenter password: ", again, sizeof again);
	if (m < 0)
		return -1;
	if (n != m || memcmp(pw, again, (size_t)n) != 0) {
		memset(again, 0, sizeof again);
		fprintf(stderr, "Error: Passwords do not match.\n");
		return -1;
	}
	memset(again, 0, sizeof again);
	if (n == 0) {
		fprintf(stderr, "Error: Empty password.\n");
		return -1;
	}
	return 0;
}

/* ---- file handling ---- */

struct lines {
	char **v;
	size_t n, cap;
};

static void lines_free(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

static int lines_push(struct lines *l, char *s)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		char **v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return -1;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = s;
	return 0;
}

/* What an edit keeps of the file it replaces; a new file is 0600, the
 * user's own. */
struct file_meta {
	mode_t mode;
	uid_t uid;
	gid_t gid;
	bool exists;
};

static void meta_from_stat(const struct stat *st, struct file_meta *out)
{
	*out = (struct file_meta){.mode = st->st_mode & 07777, .uid = st->st_uid, .gid = st->st_gid, .exists = true};
}

/* Reads the file as lines without their terminators. */
static int read_lines(const char *path, struct lines *out, struct file_meta *meta)
{
	FILE *fp = fopen(path, "r");
	if (!fp) {
		fprintf(stderr, "Error: Unable to open file %s for reading. %s.\n", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fileno(fp), &st) == 0)
		meta_from_stat(&st, meta);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;
	while ((n = getline(&line, &cap, fp)) != -1) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		char *copy = strdup(line);
		if (!copy || lines_push(out, copy)) {
			free(copy);
			fprintf(stderr, "Error: Out of memory.\n");
			rc = -1;
			break;
		}
	}
	if (!rc && ferror(fp)) {
		fprintf(stderr, "Error: Unable to read file %s. %s.\n", path, strerror(errno));
		rc = -1;
	}
	free(line);
	fclose(fp);
	return rc;
}

/* Writes lines to a temporary file next to `path` and renames it over
 * `path`, so a crash leaves either the old or the new file, never half.
 * `path` is no symbolic link (resolve_path). A file that cannot keep its
 * owner and group is not replaced: the service could no longer read it. */
static int write_lines(const char *path, const struct lines *l, const struct file_meta *meta)
{
	size_t plen = strlen(path);
	char *tmp = malloc(plen + 16);
	if (!tmp) {
		fprintf(stderr, "Error: Out of memory.\n");
		return -1;
	}
	snprintf(tmp, plen + 16, "%s.tmpXXXXXX", path);
	int fd = mkstemp(tmp);
	if (fd == -1) {
		fprintf(stderr, "Error: Unable to open file %s for writing. %s.\n", path, strerror(errno));
		free(tmp);
		return -1;
	}
	FILE *fp = fdopen(fd, "w");
	if (!fp) {
		close(fd);
		goto fail;
	}
	if (meta->exists && fchown(fd, meta->uid, meta->gid) == -1) {
		fprintf(stderr, "Error: Unable to keep the owner and group of %s. %s.\n", path, strerror(errno));
		fclose(fp);
		unlink(tmp);
		free(tmp);
		return -1;
	}
	/* After fchown, which may clear the set-id bits. */
	if (fchmod(fd, meta->mode) == -1)
		goto fail_fp;
	for (size_t i = 0; i < l->n; i++)
		if (fprintf(fp, "%s\n", l->v[i]) < 0)
			goto fail_fp;
	if (fflush(fp) != 0 || fsync(fd) == -1)
		goto fail_fp;
	if (fclose(fp) != 0)
		goto fail;
	if (rename(tmp, path) == -1)
		goto fail;
	free(tmp);
	return 0;
fail_fp:
	fclose(fp);
fail:
	fprintf(stderr, "Error: Unable to write file %s. %s.\n", path, strerror(errno));
	unlink(tmp);
	free(tmp);
	return -1;
}

static bool line_is_user(const char *line, const char *user)
{
	size_t ul = strlen(user);
	return strncmp(line, user, ul) == 0 && line[ul] == ':';
}

static bool is_comment_or_blank(const char *line)
{
	const char *p = line;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == '\0' || line[0] == '#';
}

static char *make_line(const char *user, const char *pw, size_t plen, unsigned iterations)
{
	char enc[PASSWD_ENCODED_MAX];
	int n = hash_scram ? passwd_hash_scram(pw, plen, iterations, enc, sizeof enc)
			   : passwd_hash(pw, plen, iterations, enc, sizeof enc);
	if (n < 0) {
		fprintf(stderr, "Error: Unable to hash password.\n");
		return NULL;
	}
	size_t len = strlen(user) + 1 + (size_t)n + 1;
	char *line = malloc(len);
	if (!line) {
		fprintf(stderr, "Error: Out of memory.\n");
		return NULL;
	}
	snprintf(line, len, "%s:%s", user, enc);
	return line;
}

static int check_username(const char *user)
{
	if (user[0] == '\0') {
		fprintf(stderr, "Error: Empty username.\n");
		return -1;
	}
	if (strchr(user, ':')) {
		fprintf(stderr, "Error: Username must not contain the ':' character.\n");
		return -1;
	}
	for (const char *p = user; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7F) {
			fprintf(stderr, "Error: Username must not contain control characters.\n");
			return -1;
		}
	}
	if (strlen(user) > PASSWD_USERNAME_MAX) {
		fprintf(stderr, "Error: Username longer than %u bytes.\n", PASSWD_USERNAME_MAX);
		return -1;
	}
	if (user[0] == '#') {
		/* The broker would read the line as a comment: the user could
		 * never log in, and -D could not find it again. */
		fprintf(stderr, "Error: Username must not start with '#'.\n");
		return -1;
	}
	/* Whatever else the broker's loader refuses: a file it cannot load
	 * locks everyone out at the next start or reload. */
	char why[128];
	if (passwd_check_username(user, strlen(user), why, sizeof why) != 0) {
		fprintf(stderr, "Error: Username refused: %s.\n", why);
		return -1;
	}
	return 0;
}

/* The file to edit: `path`, or the file a symbolic link at `path` points
 * to, so the rename replaces the target (the temporary file is made in
 * its directory) and the link stays. NULL after an error message. The
 * caller frees. */
static char *resolve_path(const char *path)
{
	struct stat st;
	if (lstat(path, &st) == -1 || !S_ISLNK(st.st_mode))
		return strdup(path);
	char *real = realpath(path, NULL);
	if (!real)
		fprintf(stderr, "Error: Unable to follow the symbolic link %s. %s.\n", path, strerror(errno));
	return real;
}

/* ---- commands ---- */

/* A Mosquitto $6$ line is a hash the broker refuses (one round of
 * SHA-512), not a plain-text password: -U would hash the hash, and the
 * user's real password would no longer work. The lines are named and
 * nothing is changed; their users need new passwords. 0, or 1. */
static int refuse_mosquitto_6(const char *path, const struct lines *l)
{
	size_t found = 0;
	for (size_t i = 0; i < l->n; i++) {
		const char *colon = is_comment_or_blank(l->v[i]) ? NULL : strchr(l->v[i], ':');
		if (!colon || strncmp(colon + 1, "$6$", 3) != 0)
			continue;
		if (!found++)
			fprintf(stderr, "Error: %s has Mosquitto $6$ hashes, which Wisp refuses as too weak and cannot "
				"convert; nothing was changed. Set these users' passwords again "
				"(wisp_passwd %s USER):\n", path, path);
		fprintf(stderr, "  %.*s (line %zu)\n", (int)(colon - l->v[i]), l->v[i], i + 1);
	}
	return found ? 1 : 0;
}

static int upgrade_file(const char *path, unsigned iterations)
{
	struct lines l = {0};
	struct file_meta meta = {.mode = 0600};
	if (read_lines(path, &l, &meta)) {
		lines_free(&l);
		return 1;
	}
	int rc = refuse_mosquitto_6(path, &l);
	for (size_t i = 0; i < l.n && !rc; i++) {
		char err[256];
		const char *line = l.v[i];
		if (is_comment_or_blank(line) || passwd_check_line(line, strlen(line), err, sizeof err) == 0)
			continue; /* already hashed: hashing again would lock the user out */
		const char *colon = strchr(line, ':');
		if (!colon) {
			fprintf(stderr, "Error: Line %zu of %s has no ':' (expected username:password).\n",
				i + 1, path);
			rc = 1;
			break;
		}
		char *user = strndup(line, (size_t)(colon - line));
		if (!user || check_username(user)) {
			free(user);
			rc = 1;
			break;
		}
		char *nl = make_line(user, colon + 1, strlen(colon + 1), iterations);
		free(user);
		if (!nl) {
			rc = 1;
			break;
		}
		memset(l.v[i], 0, strlen(l.v[i])); /* the plain-text password */
		free(l.v[i]);
		l.v[i] = nl;
	}
	if (!rc && write_lines(path, &l, &meta))
		rc = 1;
	lines_free(&l);
	return rc;
}

static int edit_file(const char *path, const char *user, const char *pw, bool create, bool del,
		     unsigned iterations)
{
	struct lines l = {0};
	struct file_meta meta = {.mode = 0600};
	int rc = 0;
	struct stat st;
	if (create && stat(path, &st) == 0)
		meta_from_stat(&st, &meta); /* -c empties it, as mosquitto_passwd -c truncates */
	if (!create && read_lines(path, &l, &meta)) {
		lines_free(&l);
		return 1;
	}
	bool found = false;
	for (size_t i = 0; i < l.n; i++) {
		if (is_comment_or_blank(l.v[i]) || !line_is_user(l.v[i], user))
			continue;
		if (del || found) {
			/* Delete, or drop a stray duplicate that would make the
			 * file invalid for the broker. */
			free(l.v[i]);
			memmove(&l.v[i], &l.v[i + 1], (l.n - i - 1) * sizeof l.v[0]);
			l.n--;
			i--;
			found = true;
			continue;
		}
		char *nl = make_line(user, pw, strlen(pw), iterations);
		if (!nl) {
			rc = 1;
			goto out;
		}
		free(l.v[i]);
		l.v[i] = nl;
		found = true;
	}
	if (del && !found) {
		fprintf(stderr, "Warning: User %s not found in password file.\n", user);
		rc = 1;
		goto out;
	}
	if (!del && !found) {
		char *nl = make_line(user, pw, strlen(pw), iterations);
		if (!nl || lines_push(&l, nl)) {
			free(nl);
			rc = 1;
			goto out;
		}
	}
	if (write_lines(path, &l, &meta))
		rc = 1;
out:
	lines_free(&l);
	return rc;
}

static int cmd_upgrade(const char *path, unsigned iterations)
{
	char *target = resolve_path(path);
	int rc = target ? upgrade_file(target, iterations) : 1;
	free(target);
	return rc;
}

static int cmd_edit(const char *path, const char *user, const char *pw, bool create, bool del,
		    unsigned iterations)
{
	char *target = resolve_path(path);
	int rc = target ? edit_file(target, user, pw, create, del, iterations) : 1;
	free(target);
	return rc;
}

int main(int argc, char **argv)
{
	bool batch = false, create = false, del = false, upgrade = false;
	unsigned iterations = 0; /* the hash's default */
	int i = 1;
	for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-b")) {
			batch = true;
		} else if (!strcmp(a, "-c")) {
			create = true;
		} else if (!strcmp(a, "-D")) {
			del = true;
		} else if (!strcmp(a, "-U")) {
			upgrade = true;
		} else if (!strcmp(a, "-H")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "Error: -H argument given but no hash specified.\n\n");
				usage();
				return 1;
			}
			i++;
			if (strcmp(argv[i], "scram-sha-256") == 0) {
				hash_scram = true;
			} else if (strcmp(argv[i], "sha512-pbkdf2") != 0) {
				fprintf(stderr, "Error: Unknown hash type '%s' (sha512-pbkdf2 or scram-sha-256).\n",
					argv[i]);
				return 1;
			}
		} else if (!strcmp(a, "-I")) {
			char *end;
			errno = 0;
			unsigned long v = i + 1 < argc ? strtoul(argv[i + 1], &end, 10) : 0;
			if (i + 1 >= argc || errno || *end || argv[i + 1][0] == '-' || v < 1 ||
			    v > PASSWD_ITERATIONS_MAX) {
				fprintf(stderr, "Error: -I needs an iteration count from 1 to %u.\n",
					PASSWD_ITERATIONS_MAX);
				return 1;
			}
			iterations = (unsigned)v;
			i++;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage();
			return 0;
		} else {
			fprintf(stderr, "Error: Unknown option '%s'.\n\n", a);
			usage();
			return 1;
		}
	}
	int rest = argc - i;
	char **args = argv + i;
	if (!iterations) {
		iterations = hash_scram ? SCRAM_ITERATIONS_DEFAULT : PASSWD_ITERATIONS_DEFAULT;
	} else if (hash_scram && iterations < SCRAM_ITERATIONS_MIN) {
		fprintf(stderr, "Error: scram-sha-256 needs at least %u iterations (RFC 7677).\n",
			SCRAM_ITERATIONS_MIN);
		return 1;
	}

	if (create && del) {
		fprintf(stderr, "Error: -c and -D cannot be used together.\n");
		return 1;
	}
	if (upgrade) {
		if (create || del || batch || rest != 1) {
			fprintf(stderr, "Error: -U is used on its own with one password file.\n\n");
			usage();
			return 1;
		}
		return cmd_upgrade(args[0], iterations);
	}
	if (batch && del) {
		fprintf(stderr, "Error: -b and -D cannot be used together.\n");
		return 1;
	}
	if (rest != (batch ? 3 : 2)) {
		if (create)
			fprintf(stderr, "Error: -c argument given but password file%s missing.\n\n",
				batch ? ", username, or password" : " or username");
		else if (del)
			fprintf(stderr, "Error: -D argument given but password file or username missing.\n\n");
		usage();
		return 1;
	}
	const char *path = args[0], *user = args[1];
	if (check_username(user))
		return 1;
	if (del)
		return cmd_edit(path, user, NULL, false, true, iterations);

	/* Refuse before prompting when there is no file to edit. */
	if (!create && access(path, F_OK) == -1) {
		fprintf(stderr, "Error: Unable to open file %s for reading. %s.\n", path, strerror(errno));
		return 1;
	}
	static char pw[PW_MAX + 2];
	if (batch) {
		if (strlen(args[2]) > PW_MAX) {
			fprintf(stderr, "Error: Password too long.\n");
			return 1;
		}
		if (args[2][0] == '\0') {
			fprintf(stderr, "Error: Empty password.\n");
			return 1;
		}
		snprintf(pw, sizeof pw, "%s", args[2]);
	} else if (get_password(pw, sizeof pw)) {
		return 1;
	}
	int rc = cmd_edit(path, user, pw, create, false, iterations);
	memset(pw, 0, sizeof pw);
	return rc;
}
