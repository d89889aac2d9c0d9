/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sk-attack: the attacks of docs/security.md that need no kernel bug (tier 1), as a contained
 * program would make them. Each prints one line "ok ..." when the module held, "fail ..." when
 * it did not, and exits 0 / 1. Run inside a container (split-run -- sk-attack NAME) unless noted.
 *   leader-exit      the main thread leaves with SYS_exit while a second thread lives; that thread
 *                    forks: the child must still be in the container (mode NR, same container)
 *   nonleader-exec   a second thread calls execve(split-query): the new image must be contained
 *   flood N          N user-mode hypercalls (each #UD, each an attack): SIGILL every time
 *   quota N          (as root, outside any container) N children become uid 1000 and each asks for
 *                    a container: at most SK_USER_CONTAINERS may succeed, the rest get EDQUOT
 *   unpriv-policy    (as root, outside) a child as uid 1000 asks for log or isolate on text, rodata
 *                    and module text (EPERM each), a policy on a region that has none or an
 *                    unknown action (EINVAL), then deny everywhere (granted)
 *   ptrace-out       a contained process attaches to its uncontained parent (PTRACE_ATTACH,
 *                    PTRACE_SEIZE), opens its /proc/PID/mem for writing and calls process_vm_writev
 *                    on it: each refused; attaching to its own (contained) child still works
 *   tty-inject       (as root, outside) opens the console, enters a container, then pushes a
 *                    command into its input (TIOCSTI), sets loopback, asks a VT paste, redirects
 *                    the console, and opens the serial ports: all refused (EPERM)
 *   kernel-helpers   a contained root writes kernel.modprobe (the helper request_module would run
 *                    outside) and opens a CPU-wide perf event (others' registers): both refused
 *   lazy-enter       ENTER on CPU 0 while CPU 1 still holds this address space from a moment ago
 *                    (lazily, no CR3 write to come); a thread made then on CPU 1 must be contained
 *   enter-shared     (as root, outside) a CLONE_VM child and a vfork child ask for a container:
 *                    refused (EINVAL), as entering would take the other process in too
 *   exit-race N      (as root, outside) N contained processes whose two threads leave with
 *                    SYS_exit at the same instant; prints the container ids used, for the caller
 *                    to check that every one was released
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/perf_event.h>
#include <termios.h>
#ifndef TIOCM_LOOP
#define TIOCM_LOOP 0x8000      /* asm-generic/termios.h: the UART loopback bit */
#endif
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "splitkernel.h"

static int query(struct sk_query *q)
{
	int fd = open("/dev/splitkernel", O_RDWR), r;

	if (fd < 0)
		return -1;
	memset(q, 0, sizeof(*q));
	r = ioctl(fd, SK_IOC_QUERY, q);
	close(fd);
	return r;
}

/* The container of the caller, or -1. */
static int my_container(void)
{
	struct sk_query q;

	return query(&q) ? -1 : (q.mode ? (int)q.container : 0);
}

static int parent_container;

static void *leader_exit_thread(void *arg)
{
	pid_t child;
	int st;

	(void)arg;
	usleep(200000);                  /* the leader is gone by now */
	child = fork();
	if (child == 0)
		_exit(my_container() == parent_container ? 0 : 1);
	waitpid(child, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		printf("ok leader-exit: the child forked after the leader's SYS_exit is in container %d\n",
		       parent_container);
	else
		printf("fail leader-exit: the child forked after the leader's SYS_exit left container %d\n",
		       parent_container);
	exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);   /* exit_group */
}

static int leader_exit(void)
{
	pthread_t t;

	parent_container = my_container();
	if (parent_container <= 0) {
		printf("fail leader-exit: not started in a container (%d)\n", parent_container);
		return 1;
	}
	pthread_create(&t, NULL, leader_exit_thread, NULL);
	syscall(SYS_exit, 0);            /* the leader alone, not exit_group */
	return 1;
}

static void *exec_thread(void *arg)
{
	char *argv[] = { "split-query", NULL };

	(void)arg;
	execvp("split-query", argv);      /* de_thread: this thread takes over the group */
	printf("fail nonleader-exec: execvp: %s\n", strerror(errno));
	exit(1);
}

static int nonleader_exec(void)
{
	pthread_t t;

	if (my_container() <= 0) {
		printf("fail nonleader-exec: not started in a container\n");
		return 1;
	}
	pthread_create(&t, NULL, exec_thread, NULL);
	pause();
	return 1;
}

static sigjmp_buf ud_jmp;
static void on_sigill(int sig) { (void)sig; siglongjmp(ud_jmp, 1); }

static int flood(long n)
{
	uint32_t a = 0, b, c, d;
	int intel;
	long i, ud = 0;

	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "=d"(d));
	intel = b == 0x756e6547;
	signal(SIGILL, on_sigill);
	for (i = 0; i < n; i++) {
		if (sigsetjmp(ud_jmp, 1)) {
			ud++;
			continue;
		}
		if (intel)
			__asm__ volatile("vmcall" :: "a"(SK_HC_DEVIRT) : "memory");
		else
			__asm__ volatile("vmmcall" :: "a"(SK_HC_DEVIRT) : "memory");
	}
	printf("%s flood: %ld of %ld user-mode hypercalls raised SIGILL\n", ud == n ? "ok" : "fail", ud, n);
	return ud == n ? 0 : 1;
}

static int quota(int n)
{
	int i, ok = 0, dquot = 0, other = 0, pipes[2];
	pid_t kids[64];

	if (n > 64 || pipe(pipes))
		return 2;
	for (i = 0; i < n; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			struct sk_enter en = { .policy = SK_POLICY_DEFAULT };
			int fd, r;
			char res;

			if (setgid(1000) || setuid(1000))
				_exit(3);
			fd = open("/dev/splitkernel", O_RDWR);
			r = fd < 0 ? -1 : ioctl(fd, SK_IOC_ENTER, &en);
			res = r == 0 ? 'y' : errno == EDQUOT ? 'q' : 'n';
			if (write(pipes[1], &res, 1) != 1)
				_exit(4);
			if (r == 0)
				pause();          /* hold the container until the parent is done */
			_exit(0);
		}
	}
	for (i = 0; i < n; i++) {
		char res;

		if (read(pipes[0], &res, 1) != 1)
			break;
		ok += res == 'y';
		dquot += res == 'q';
		other += res == 'n';
	}
	for (i = 0; i < n; i++) {
		kill(kids[i], SIGKILL);
		waitpid(kids[i], NULL, 0);
	}
	if (ok == SK_USER_CONTAINERS && dquot == n - ok) {
		printf("ok quota: uid 1000 got %d containers of %d asked, %d refused with EDQUOT\n", ok, n, dquot);
		return 0;
	}
	printf("fail quota: uid 1000 got %d containers of %d asked (%d EDQUOT, %d other errors)\n", ok, n, dquot,
	       other);
	return 1;
}

static int enter_as(uid_t uid, __u32 policy)
{
	struct sk_enter en = { .policy = policy };
	pid_t kid = fork();
	int st, fd;

	if (kid == 0) {
		if (setgid(uid) || setuid(uid))
			_exit(100);
		fd = open("/dev/splitkernel", O_RDWR);
		if (fd < 0)
			_exit(101);
		_exit(ioctl(fd, SK_IOC_ENTER, &en) ? errno : 0);
	}
	waitpid(kid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 102;
}

static int unpriv_policy(void)
{
	static const struct { const char *what; __u32 policy; int want; } cases[] = {
		{ "text=log", SK_POLICY(SK_REGION_TEXT, SK_POL_LOG), EPERM },
		{ "text=isolate", SK_POLICY(SK_REGION_TEXT, SK_POL_ISOLATE), EPERM },
		{ "rodata=log", SK_POLICY(SK_REGION_RODATA, SK_POL_LOG), EPERM },
		{ "rodata=isolate", SK_POLICY(SK_REGION_RODATA, SK_POL_ISOLATE), EPERM },
		{ "module=log", SK_POLICY(SK_REGION_MODULE_TEXT, SK_POL_LOG), EPERM },
		{ "module=isolate", SK_POLICY(SK_REGION_MODULE_TEXT, SK_POL_ISOLATE), EPERM },
		{ "sk-state=log", SK_POLICY(SK_REGION_SK_STATE, SK_POL_LOG), EINVAL },
		{ "protected=isolate", SK_POLICY(SK_REGION_PROTECTED, SK_POL_ISOLATE), EINVAL },
		{ "text=7", SK_POLICY(SK_REGION_TEXT, 7), EINVAL },
		{ "region 7=log", SK_POLICY(7, SK_POL_LOG), EINVAL },
		{ "deny", SK_POLICY_DEFAULT, 0 },
	};
	unsigned int i, bad = 0;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = enter_as(1000, cases[i].policy);

		if (got != cases[i].want) {
			printf("fail unpriv-policy: uid 1000 asking %s got %s, expected %s\n", cases[i].what,
			       got ? strerror(got) : "a container", cases[i].want ? strerror(cases[i].want) : "a container");
			bad++;
		}
	}
	if (!bad)
		printf("ok unpriv-policy: uid 1000 was refused log and isolate on text, rodata and module text, and "
		       "every policy the handler does not have; granted deny\n");
	return bad ? 1 : 0;
}

static int ptrace_out(void)
{
	pid_t parent = getppid(), kid;
	char path[64], byte = 0;
	struct iovec local = { &byte, 1 }, remote = { (void *)0x400000, 1 };
	int fd, bad = 0, st;

	if (my_container() <= 0) {
		printf("fail ptrace-out: not in a container\n");
		return 1;
	}
	errno = 0;
	if (ptrace(PTRACE_ATTACH, parent, 0, 0) == 0 || errno != EPERM) {
		printf("fail ptrace-out: PTRACE_ATTACH to the uncontained parent %d: %s\n", parent, strerror(errno));
		bad++;
	}
	errno = 0;
	if (ptrace(PTRACE_SEIZE, parent, 0, 0) == 0 || errno != EPERM) {
		printf("fail ptrace-out: PTRACE_SEIZE of the parent: %s\n", strerror(errno));
		bad++;
	}
	snprintf(path, sizeof(path), "/proc/%d/environ", parent);
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		printf("fail ptrace-out: %s opened (another container's or root's environment)\n", path);
		close(fd);
		bad++;
	}
	snprintf(path, sizeof(path), "/proc/%d/mem", parent);
	fd = open(path, O_RDWR);
	if (fd >= 0) {
		printf("fail ptrace-out: %s opened for writing\n", path);
		close(fd);
		bad++;
	}
	errno = 0;     /* ENOSYS: a kernel without CONFIG_CROSS_MEMORY_ATTACH has no such way */
	if ((process_vm_writev(parent, &local, 1, &remote, 1, 0) >= 0 || errno != EPERM) && errno != ENOSYS) {
		printf("fail ptrace-out: process_vm_writev into the parent: %s\n", strerror(errno));
		bad++;
	}
	/* Its own child, contained with it: a debugger inside a container still works. */
	kid = fork();
	if (kid == 0) {
		pause();
		_exit(0);
	}
	if (ptrace(PTRACE_ATTACH, kid, 0, 0)) {
		printf("fail ptrace-out: PTRACE_ATTACH to its own contained child: %s\n", strerror(errno));
		bad++;
	} else {
		waitpid(kid, &st, 0);
		ptrace(PTRACE_DETACH, kid, 0, 0);
	}
	kill(kid, SIGKILL);
	waitpid(kid, &st, 0);
	if (!bad)
		printf("ok ptrace-out: attach, seize, /proc/%d/mem and process_vm_writev refused (EPERM); own child "
		       "traced\n", parent);
	return bad ? 1 : 0;
}

/* As root, outside: the console opened first (a terminal fd inherited into the container), then
 * ENTER; then every way of typing into it or reopening a terminal. */
static int tty_inject(void)
{
	const char *cmd = "echo INJECTED-FROM-A-CONTAINER\n";
	struct sk_enter en = { .policy = SK_POLICY_DEFAULT };
	int fd = open("/dev/ttyS0", O_RDWR | O_NOCTTY), bad = 0, dev, again;
	char sel[2] = { 3, 0 };      /* TIOCLINUX subcode 3: paste the selection */
	int loop = TIOCM_LOOP;       /* a UART in loopback reads back what it sends */

	if (fd < 0) {
		printf("fail tty-inject: /dev/ttyS0: %s\n", strerror(errno));
		return 2;
	}
	dev = open("/dev/splitkernel", O_RDWR);
	if (dev < 0 || ioctl(dev, SK_IOC_ENTER, &en)) {
		printf("fail tty-inject: ENTER: %s\n", strerror(errno));
		return 2;
	}
	errno = 0;
	if (ioctl(fd, TIOCSTI, cmd) == 0 || errno != EPERM) {
		printf("fail tty-inject: TIOCSTI on the console: %s\n", errno ? strerror(errno) : "a byte went in");
		bad++;
	}
	errno = 0;
	if (ioctl(fd, TIOCMBIS, &loop) == 0 || errno != EPERM) {
		printf("fail tty-inject: TIOCMBIS TIOCM_LOOP on the console: %s\n", errno ? strerror(errno) : "set");
		ioctl(fd, TIOCMBIC, &loop);
		bad++;
	}
	errno = 0;
	if (ioctl(fd, TIOCLINUX, sel) == 0 || errno != EPERM) {
		printf("fail tty-inject: TIOCLINUX on the console: %s\n", errno ? strerror(errno) : "accepted");
		bad++;
	}
	errno = 0;
	if (ioctl(fd, TIOCCONS) == 0 || errno != EPERM) {
		printf("fail tty-inject: TIOCCONS: %s\n", errno ? strerror(errno) : "console redirected");
		bad++;
	}
	close(fd);
	for (int i = 0; i < 3; i++) {
		const char *path = i == 0 ? "/dev/ttyS0" : i == 1 ? "/dev/ttyS1" : "/dev/console";

		errno = 0;
		again = open(path, O_RDWR | O_NOCTTY);
		if (again >= 0 || errno != EPERM) {
			printf("fail tty-inject: %s opened from the container: %s\n", path, again >= 0 ? "yes" : strerror(errno));
			if (again >= 0)
				close(again);
			bad++;
		}
	}
	if (!bad)
		printf("ok tty-inject: TIOCSTI, TIOCM_LOOP, TIOCLINUX, TIOCCONS refused on an inherited console fd; "
		       "the serial ports and /dev/console not opened (EPERM)\n");
	return bad ? 1 : 0;
}

/* What a contained root could have the kernel run or show outside: a sysctl (kernel.modprobe,
 * the helper request_module runs), CPU-wide perf sampling (others' registers and stacks). */
static int kernel_helpers(void)
{
	struct perf_event_attr attr = { .type = PERF_TYPE_SOFTWARE, .size = sizeof(attr),
					.config = PERF_COUNT_SW_CPU_CLOCK, .sample_period = 100000,
					.sample_type = PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER };
	int fd = open("/proc/sys/kernel/modprobe", O_WRONLY), bad = 0;
	long r;

	if (fd >= 0) {
		errno = 0;
		if (write(fd, "/tmp/x\n", 7) >= 0 || errno != EPERM) {
			printf("fail kernel-helpers: kernel.modprobe written: %s\n", errno ? strerror(errno) : "yes");
			bad++;
		}
		close(fd);
	}
	errno = 0;
	r = syscall(SYS_perf_event_open, &attr, -1, 0, -1, 0);
	if (r >= 0 || (errno != EACCES && errno != ENOSYS)) {
		printf("fail kernel-helpers: CPU-wide perf_event_open: %s\n", r >= 0 ? "opened" : strerror(errno));
		if (r >= 0)
			close(r);
		bad++;
	}
	/* reboot(2) with a wrong magic: EINVAL were it let through, EPERM when refused first. */
	errno = 0;
	if (syscall(SYS_reboot, 0, 0, 0, NULL) == 0 || errno != EPERM) {
		printf("fail kernel-helpers: reboot(2): %s\n", errno ? strerror(errno) : "accepted");
		bad++;
	}
	/* Harmless writes, refused all the same: sysrq 'h' (help), a printk parameter in sysfs. */
	for (int i = 0; i < 2; i++) {
		const char *path = i ? "/sys/module/printk/parameters/time" : "/proc/sysrq-trigger";

		fd = open(path, O_WRONLY);
		if (fd < 0)
			continue;
		errno = 0;
		if (write(fd, i ? "1" : "h", 1) >= 0 || errno != EPERM) {
			printf("fail kernel-helpers: %s written: %s\n", path, errno ? strerror(errno) : "yes");
			bad++;
		}
		close(fd);
	}
	/* Signal 0 (the permission check alone) to the uncontained parent. */
	errno = 0;
	if (kill(getppid(), 0) == 0 || errno != EPERM) {
		printf("fail kernel-helpers: kill(parent, 0): %s\n", errno ? strerror(errno) : "allowed");
		bad++;
	}
	if (!bad)
		printf("ok kernel-helpers: sysctl and sysfs writes, the sysrq trigger, reboot, CPU-wide perf "
		       "sampling and signals outside refused\n");
	return bad ? 1 : 0;
}

static int pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

static volatile int lazy_result = -2;

static void *lazy_thread(void *arg)
{
	(void)arg;
	pin(1);
	lazy_result = my_container();
	return NULL;
}

static int lazy_enter(void)
{
	struct sk_enter en = { .policy = SK_POLICY_DEFAULT };
	volatile unsigned long spin;
	pthread_t t;
	int fd;

	if (pin(1)) {
		printf("ok lazy-enter: one CPU, nothing to hold lazily\n");
		return 0;
	}
	for (spin = 0; spin < 20000000; spin++)
		;                      /* CPU 1 runs this address space */
	pin(0);                    /* CPU 1 goes idle, keeping it loaded */
	fd = open("/dev/splitkernel", O_RDWR);
	if (fd < 0 || ioctl(fd, SK_IOC_ENTER, &en)) {
		printf("fail lazy-enter: ENTER: %s\n", strerror(errno));
		return 2;
	}
	if (pthread_create(&t, NULL, lazy_thread, NULL))
		return 2;
	pthread_join(t, NULL);
	if (lazy_result == (int)en.container) {
		printf("ok lazy-enter: the thread on CPU 1 runs in container %u\n", en.container);
		return 0;
	}
	printf("fail lazy-enter: the thread on CPU 1 runs in container %d, not %u\n", lazy_result, en.container);
	return 1;
}

static int enter_now(void)
{
	struct sk_enter en = { .policy = SK_POLICY_DEFAULT };
	int fd = open("/dev/splitkernel", O_RDWR);

	return fd < 0 ? ENODEV : ioctl(fd, SK_IOC_ENTER, &en) ? errno : 0;
}

static int shared_result;

static int clone_vm_child(void *arg)
{
	(void)arg;
	shared_result = enter_now();
	return 0;
}

static int enter_shared(void)
{
	static char stack[64 * 1024];
	pid_t kid;
	int st, bad = 0;

	kid = clone(clone_vm_child, stack + sizeof(stack), CLONE_VM | SIGCHLD, NULL);
	if (kid < 0)
		return 2;
	waitpid(kid, &st, 0);
	if (shared_result != EINVAL) {
		printf("fail enter-shared: a CLONE_VM child got %s\n", shared_result ? strerror(shared_result) : "a container");
		bad++;
	}
	kid = vfork();
	if (kid == 0)
		_exit(enter_now());
	waitpid(kid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != EINVAL) {
		printf("fail enter-shared: a vfork child got %s\n", WEXITSTATUS(st) ? strerror(WEXITSTATUS(st)) : "a container");
		bad++;
	}
	if (!bad)
		printf("ok enter-shared: a CLONE_VM child and a vfork child were refused (EINVAL)\n");
	return bad ? 1 : 0;
}

static pthread_barrier_t exit_barrier;

static void *exit_race_thread(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&exit_barrier);
	syscall(SYS_exit, 0);
	return NULL;
}

/* One contained process: print its container id on fd, then both threads leave together. */
static void exit_race_one(int fd)
{
	struct sk_enter en = { .policy = SK_POLICY_DEFAULT };
	int dev = open("/dev/splitkernel", O_RDWR);
	pthread_t t;
	char line[32];

	prctl(PR_SET_NAME, "sk-exit-race");    /* the container's owner_comm: the test finds leaks by it */
	if (dev < 0 || ioctl(dev, SK_IOC_ENTER, &en))
		_exit(3);
	close(dev);
	snprintf(line, sizeof(line), "%u\n", en.container);
	if (write(fd, line, strlen(line)) < 0)
		_exit(4);
	pthread_barrier_init(&exit_barrier, NULL, 2);
	if (pthread_create(&t, NULL, exit_race_thread, NULL))
		_exit(5);
	pthread_barrier_wait(&exit_barrier);
	syscall(SYS_exit, 0);
}

static int exit_race(int n)
{
	int i, st, bad = 0, pipes[2];

	if (pipe(pipes))
		return 2;
	for (i = 0; i < n; i++) {
		pid_t kid = fork();

		if (kid == 0) {
			close(pipes[0]);
			exit_race_one(pipes[1]);
		}
		waitpid(kid, &st, 0);
		bad += !WIFEXITED(st) || WEXITSTATUS(st);
	}
	close(pipes[1]);
	printf("containers:");
	for (;;) {
		char buf[256];
		ssize_t k = read(pipes[0], buf, sizeof(buf));

		if (k <= 0)
			break;
		for (i = 0; i < k; i++)
			putchar(buf[i] == '\n' ? ' ' : buf[i]);
	}
	printf("\n%s exit-race: %d processes, %d failed to enter\n", bad ? "fail" : "ok", n, bad);
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *s = argc > 1 ? argv[1] : "";

	setvbuf(stdout, NULL, _IONBF, 0);
	if (!strcmp(s, "leader-exit")) return leader_exit();
	if (!strcmp(s, "nonleader-exec")) return nonleader_exec();
	if (!strcmp(s, "flood")) return flood(argc > 2 ? atol(argv[2]) : 10000);
	if (!strcmp(s, "quota")) return quota(argc > 2 ? atoi(argv[2]) : 8);
	if (!strcmp(s, "unpriv-policy")) return unpriv_policy();
	if (!strcmp(s, "ptrace-out")) return ptrace_out();
	if (!strcmp(s, "enter-shared")) return enter_shared();
	if (!strcmp(s, "tty-inject")) return tty_inject();
	if (!strcmp(s, "lazy-enter")) return lazy_enter();
	if (!strcmp(s, "kernel-helpers")) return kernel_helpers();
	if (!strcmp(s, "exit-race")) return exit_race(argc > 2 ? atoi(argv[2]) : 50);
	fprintf(stderr, "usage: sk-attack leader-exit|nonleader-exec|flood [N]|quota [N]|unpriv-policy|ptrace-out|tty-inject|kernel-helpers|lazy-enter|enter-shared|exit-race [N]\n");
	return 2;
}
