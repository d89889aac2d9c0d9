/* split-run: enter a container of one's own (ENTER ioctl) and exec a command in non-root mode.
 *   split-run [-p REGION=POLICY ...] -- COMMAND [ARGS...]
 * REGION: text rodata module; POLICY: deny isolate log. Default: deny everywhere. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "splitkernel.h"

static int region_of(const char *s)
{
	if (!strcmp(s, "text")) return SK_REGION_TEXT;
	if (!strcmp(s, "rodata")) return SK_REGION_RODATA;
	if (!strcmp(s, "module")) return SK_REGION_MODULE_TEXT;
	return -1;
}

static int policy_of(const char *s)
{
	if (!strcmp(s, "deny")) return SK_POL_DENY;
	if (!strcmp(s, "isolate")) return SK_POL_ISOLATE;
	if (!strcmp(s, "log")) return SK_POL_LOG;
	return -1;
}

int main(int argc, char **argv)
{
	struct sk_enter en = { .policy = SK_POLICY_DEFAULT };
	int i = 1, fd;

	for (; i < argc && strcmp(argv[i], "--"); i++) {
		char *eq;
		int r, p;

		if (strcmp(argv[i], "-p") || i + 1 >= argc || !(eq = strchr(argv[i + 1], '='))) {
			fprintf(stderr, "usage: split-run [-p REGION=POLICY]... -- COMMAND [ARGS]\n");
			return 2;
		}
		*eq = 0;
		r = region_of(argv[i + 1]);
		p = policy_of(eq + 1);
		if (r < 0 || p < 0) {
			fprintf(stderr, "split-run: unknown region or policy in %s=%s\n", argv[i + 1], eq + 1);
			return 2;
		}
		en.policy = (en.policy & ~SK_POLICY(r, 0xf)) | SK_POLICY(r, p);
		i++;
	}
	if (i + 1 >= argc) {
		fprintf(stderr, "usage: split-run [-p REGION=POLICY]... -- COMMAND [ARGS]\n");
		return 2;
	}
	fd = open("/dev/splitkernel", O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "split-run: /dev/splitkernel: %s (is splitkernel.ko loaded?)\n", strerror(errno));
		return 1;
	}
	if (ioctl(fd, SK_IOC_ENTER, &en)) {
		fprintf(stderr, "split-run: ENTER: %s\n", strerror(errno));
		return 1;
	}
	close(fd);
	execvp(argv[i + 1], argv + i + 1);
	fprintf(stderr, "split-run: %s: %s\n", argv[i + 1], strerror(errno));
	return 127;
}
