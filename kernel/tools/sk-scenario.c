/* sk-scenario NAME: one workload of the split-kernel test suite, run (under split-run) in
 * non-root mode. Prints "ok DETAIL" and exits 0 when the workload behaved normally. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "splitkernel.h"

static int global_value = 1;

static int fail(const char *what)
{
	printf("fail %s: %s\n", what, strerror(errno));
	return 1;
}

static int syscalls(void)
{
	for (int i = 0; i < 10000; i++)
		getppid();
	printf("ok 10000 getppid\n");
	return 0;
}

static int fileio(void)
{
	char buf[65536], back[65536];
	int fd;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7);
	fd = open("/tmp/sk-file", O_CREAT | O_TRUNC | O_RDWR, 0600);
	if (fd < 0 || write(fd, buf, sizeof(buf)) != sizeof(buf))
		return fail("write");
	close(fd);
	/* copy */
	int in = open("/tmp/sk-file", O_RDONLY), out = open("/tmp/sk-copy", O_CREAT | O_TRUNC | O_WRONLY, 0600);
	ssize_t n;
	while ((n = read(in, back, sizeof(back))) > 0)
		if (write(out, back, n) != n)
			return fail("copy");
	close(in);
	close(out);
	fd = open("/tmp/sk-copy", O_RDONLY);
	if (fd < 0 || read(fd, back, sizeof(back)) != sizeof(back) || memcmp(buf, back, sizeof(buf)))
		return fail("compare");
	close(fd);
	unlink("/tmp/sk-file");
	unlink("/tmp/sk-copy");
	printf("ok 64KiB written, copied, compared\n");
	return 0;
}

static int sleeper(void)
{
	struct timespec a, b, d = { 0, 200 * 1000 * 1000 };

	clock_gettime(CLOCK_MONOTONIC, &a);
	nanosleep(&d, NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
	if (ms < 190)
		return fail("slept too little");
	printf("ok slept %.0f ms\n", ms);
	return 0;
}

static int forker(void)
{
	int stack_value = 10, status;
	pid_t p = fork();

	if (p < 0)
		return fail("fork");
	if (p == 0) {
		global_value = 2;
		stack_value = 20;
		_exit(global_value == 2 && stack_value == 20 ? 0 : 1);
	}
	waitpid(p, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) || global_value != 1 || stack_value != 10) {
		printf("fail child status %d, parent sees global %d stack %d\n", status, global_value, stack_value);
		return 1;
	}
	printf("ok child wrote its own copies; parent global=%d stack=%d\n", global_value, stack_value);
	return 0;
}

static int forkexec(void)
{
	int status;
	pid_t p = fork();

	if (p == 0) {
		execl("/bin/busybox", "true", NULL);
		_exit(127);
	}
	waitpid(p, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		return fail("exec");
	printf("ok fork+exec of true\n");
	return 0;
}

static void *spin(void *arg)
{
	volatile unsigned long n = 0;
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	do {
		for (int i = 0; i < 100000; i++)
			n++;
		clock_gettime(CLOCK_MONOTONIC, &b);
	} while ((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < 500);
	*(unsigned long *)arg = n;
	return NULL;
}

static int threads(int count)
{
	pthread_t t[2];
	unsigned long n[2] = { 0, 0 };

	for (int i = 0; i < count; i++)
		if (pthread_create(&t[i], NULL, spin, &n[i]))
			return fail("pthread_create");
	for (int i = 0; i < count; i++)
		pthread_join(t[i], NULL);
	printf("ok %d busy thread(s), %lu %lu iterations\n", count, n[0], n[1]);
	return 0;
}

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

/* bench-syscall N: ns per getppid (a null syscall). */
static int bench_syscall(long n)
{
	double t0 = now_ns();

	for (long i = 0; i < n; i++)
		getppid();
	printf("ok syscall_ns=%.1f\n", (now_ns() - t0) / n);
	return 0;
}

/* bench-ctxsw N: two processes ping-pong a byte over pipes; ns per context switch. */
static int bench_ctxsw(long n)
{
	int ab[2], ba[2];
	char c = 0;
	double t0;

	if (pipe(ab) || pipe(ba))
		return fail("pipe");
	pid_t p = fork();
	if (p == 0) {
		for (long i = 0; i < n; i++)
			if (read(ab[0], &c, 1) != 1 || write(ba[1], &c, 1) != 1)
				_exit(1);
		_exit(0);
	}
	t0 = now_ns();
	for (long i = 0; i < n; i++)
		if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
			return fail("ping-pong");
	double per = (now_ns() - t0) / (2.0 * n);
	waitpid(p, NULL, 0);
	printf("ok ctxsw_ns=%.1f\n", per);
	return 0;
}

/* user-hypercall: VMMCALL (AMD) or VMCALL (Intel) from user mode, on every CPU, for the hypercalls
 * that would hurt (leave root mode, free a container, unprotect or protect a page, write counters to an address), and
 * once with the GS base set to an unmapped kernel address (WRGSBASE) so that the handler must not
 * trust GS. Each must raise SIGILL (#UD) and change nothing. */
static sigjmp_buf ud_jmp;
static void on_sigill(int sig) { (void)sig; siglongjmp(ud_jmp, 1); }

static int cpu_is_intel(void)
{
	uint32_t a = 0, b, c, d;

	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "=d"(d));
	return b == 0x756e6547;   /* "Genu" of GenuineIntel */
}

static int user_vmmcall(uint64_t nr, uint64_t a1, uint64_t a2)
{
	static int intel = -1;

	if (intel < 0)
		intel = cpu_is_intel();
	if (sigsetjmp(ud_jmp, 1))
		return 1;   /* SIGILL */
	if (intel)
		__asm__ volatile("vmcall" : "+a"(nr) : "b"(a1), "c"(a2), "d"(0) : "memory");
	else
		__asm__ volatile("vmmcall" : "+a"(nr) : "b"(a1), "c"(a2), "d"(0) : "memory");
	return 0;
}

static int user_hypercall(void)
{
	static const uint64_t calls[][3] = {
		{ SK_HC_DEVIRT, 0, 0 },
		{ SK_HC_FREE_CONTAINER, 1, 0 },
		{ SK_HC_PROTECT, 0x100000, 0 },
		{ SK_HC_UNPROTECT, 0x100000, 0 },
		{ SK_HC_QUERY, 0, 0xffffffff81000000ULL },   /* counters written into kernel text */
	};
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN), n = 0, gs = 0;

	signal(SIGILL, on_sigill);
	for (int cpu = 0; cpu < ncpu; cpu++) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			return fail("sched_setaffinity");
		for (unsigned i = 0; i < sizeof(calls) / sizeof(calls[0]); i++, n++)
			if (!user_vmmcall(calls[i][0], calls[i][1], calls[i][2])) {
				printf("fail hypercall %#llx from user mode on cpu %d returned\n",
				       (unsigned long long)calls[i][0], cpu);
				return 1;
			}
		if (getauxval(AT_HWCAP2) & 2) {   /* HWCAP2_FSGSBASE */
			uint64_t bad = 0xffff800000000000ULL;

			__asm__ volatile("wrgsbase %0" :: "r"(bad));
			int ok = user_vmmcall(SK_HC_PING, 0, 0);
			__asm__ volatile("wrgsbase %0" :: "r"(0ULL));
			if (!ok) {
				printf("fail ping with a kernel GS base returned\n");
				return 1;
			}
			gs++;
		}
	}
	printf("ok %d user-mode hypercalls on %d cpus raised SIGILL (%d with a kernel GS base)\n", n, ncpu, gs);
	return 0;
}

int main(int argc, char **argv)
{
	const char *s = argc > 1 ? argv[1] : "";

	setvbuf(stdout, NULL, _IONBF, 0);
	if (!strcmp(s, "syscalls")) return syscalls();
	if (!strcmp(s, "fileio")) return fileio();
	if (!strcmp(s, "sleep")) return sleeper();
	if (!strcmp(s, "fork")) return forker();
	if (!strcmp(s, "forkexec")) return forkexec();
	if (!strcmp(s, "thread1")) return threads(1);
	if (!strcmp(s, "thread2")) return threads(2);
	if (!strcmp(s, "user-hypercall")) return user_hypercall();
	if (!strcmp(s, "bench-syscall")) return bench_syscall(argc > 2 ? atol(argv[2]) : 100000);
	if (!strcmp(s, "bench-ctxsw")) return bench_ctxsw(argc > 2 ? atol(argv[2]) : 5000);
	fprintf(stderr, "usage: sk-scenario syscalls|fileio|sleep|fork|forkexec|thread1|thread2|bench-syscall [N]|bench-ctxsw [N]\n");
	return 2;
}
