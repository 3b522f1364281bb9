/*
 * Replays fuzz inputs without libFuzzer: every regular file named on the
 * command line, or found (non-recursively) in a directory named there, is
 * passed once to LLVMFuzzerTestOneInput. Lets gcc builds and CTest run the
 * committed corpus and crash reproducers. Exits 1 if no input was found, so
 * a misplaced corpus cannot pass silently.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs larger than this are skipped: libFuzzer's own default is 4 KiB. */
#define REPLAY_MAX_INPUT (16u << 20)

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data;
	long size;
	size_t got;

	if (f == NULL) {
		perror(path);
		return -1;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || size > (long)REPLAY_MAX_INPUT ||
	    fseek(f, 0, SEEK_SET) != 0) {
		fprintf(stderr, "%s: cannot size or too large\n", path);
		fclose(f);
		return -1;
	}
	data = malloc(size > 0 ? (size_t)size : 1);
	if (data == NULL) {
		fclose(f);
		return -1;
	}
	got = fread(data, 1, (size_t)size, f);
	fclose(f);
	if (got != (size_t)size) {
		fprintf(stderr, "%s: short read\n", path);
		free(data);
		return -1;
	}
	LLVMFuzzerTestOneInput(data, got);
	free(data);
	return 0;
}

int main(int argc, char **argv)
{
	size_t count = 0;
	int errors = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) != 0) {
			perror(argv[i]);
			errors++;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (replay_file(argv[i]) == 0)
				count++;
			else
				errors++;
			continue;
		}
		DIR *d = opendir(argv[i]);
		struct dirent *e;
		if (d == NULL) {
			perror(argv[i]);
			errors++;
			continue;
		}
		while ((e = readdir(d)) != NULL) {
			char path[4096];
			struct stat fst;
			if (e->d_name[0] == '.')
				continue;
			if (snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name) >= (int)sizeof(path))
				continue;
			if (stat(path, &fst) != 0 || !S_ISREG(fst.st_mode))
				continue;
			if (replay_file(path) == 0)
				count++;
			else
				errors++;
		}
		closedir(d);
	}
	printf("replayed %zu inputs, %d errors\n", count, errors);
	return (count == 0 || errors != 0) ? 1 : 0;
}
