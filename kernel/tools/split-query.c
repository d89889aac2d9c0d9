/* split-query [PID]: mode and counters of a process's container, as key=value lines. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "splitkernel.h"

int main(int argc, char **argv)
{
	struct sk_query q = { .pid = argc > 1 ? atoi(argv[1]) : 0 };
	int fd = open("/dev/splitkernel", O_RDWR), i;

	if (fd < 0 || ioctl(fd, SK_IOC_QUERY, &q)) {
		fprintf(stderr, "split-query: %s\n", strerror(errno));
		return 1;
	}
	printf("mode=%s container=%u vendor=%u exits=%llu npf=%llu cr3=%llu vmmcall=%llu switches_in=%llu "
	       "denied=%llu allowed=%llu isolated=%llu cr4_blocked=%llu",
	       q.mode ? "NR" : "R", q.container, q.vendor, (unsigned long long)q.counters.exits,
	       (unsigned long long)q.counters.exits_npf, (unsigned long long)q.counters.exits_cr3,
	       (unsigned long long)q.counters.exits_vmmcall, (unsigned long long)q.counters.cr3_switches_in,
	       (unsigned long long)q.counters.denied, (unsigned long long)q.counters.allowed,
	       (unsigned long long)q.counters.isolated, (unsigned long long)q.counters.cr4_blocked);
	for (i = 0; i < SK_NR_REGIONS; i++)
		printf(" violations%d=%llu", i, (unsigned long long)q.counters.violations[i]);
	printf("\n");
	return 0;
}
