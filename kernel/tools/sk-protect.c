/* sk-protect [-r] SECONDS: in a container, allocate a protected page, write a secret into it,
 * print "pa=0x... secret=0x..." and hold it for SECONDS before freeing it.
 * -r: keep the page visible to the root container (processes with no container).
 * -b: also check that FREE_PROTECTED refuses (EBUSY) while the page is still mapped. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "splitkernel.h"

int main(int argc, char **argv)
{
	struct sk_protect p = { 0 };
	int i = 1, fd, busy = 0;

	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-r"))
			p.flags = SK_PROT_VISIBLE_TO_ROOT;
		else if (!strcmp(argv[i], "-b"))
			busy = 1;
	}
	int secs = argc > i ? atoi(argv[i]) : 5;
	fd = open("/dev/splitkernel", O_RDWR);
	if (fd < 0 || ioctl(fd, SK_IOC_ALLOC_PROTECTED, &p)) {
		printf("fail alloc: %s\n", strerror(errno));
		return 1;
	}
	volatile uint64_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)p.index * 4096);
	if (page == MAP_FAILED) {
		printf("fail mmap: %s\n", strerror(errno));
		return 1;
	}
	uint64_t secret = 0x5ec7e700000000ULL | (uint64_t)getpid();
	page[0] = secret;
	if (page[0] != secret) {
		printf("fail readback\n");
		return 1;
	}
	printf("pa=%#llx secret=%#llx\n", (unsigned long long)p.pa, (unsigned long long)secret);
	fflush(stdout);
	sleep(secs);
	if (page[0] != secret) {
		printf("fail secret changed\n");
		return 1;
	}
	if (busy) {
		if (ioctl(fd, SK_IOC_FREE_PROTECTED, &p) == 0 || errno != EBUSY) {
			printf("fail free-while-mapped: %s\n", strerror(errno));
			return 1;
		}
		printf("free-while-mapped=EBUSY\n");
	}
	munmap((void *)page, 4096);
	if (ioctl(fd, SK_IOC_FREE_PROTECTED, &p)) {
		printf("fail free: %s\n", strerror(errno));
		return 1;
	}
	printf("ok freed\n");
	return 0;
}
