// SPDX-License-Identifier: GPL-2.0
/*
 * collapse_bench: time MADV_COLLAPSE of PTE-mapped THPs of tmpfs files, i.e.
 * khugepaged's try_collapse_pte_mapped_thp(install_pmd=true), in the guest.
 *
 * For every collapse: the file's first 2 MiB is one PMD-sized folio in the
 * page cache (written on a huge=always tmpfs); a 2 MiB-aligned window is
 * mapped, MADV_NOHUGEPAGE, every page read-faulted (so it is mapped by PTEs),
 * MADV_HUGEPAGE, then madvise(MADV_COLLAPSE) is timed with CLOCK_MONOTONIC.
 * collapse_file() finds the PMD folio -> SCAN_PTE_MAPPED_HUGEPAGE ->
 * try_collapse_pte_mapped_thp(). smaps is checked before (nothing PMD-mapped)
 * and after (2048 kB PMD-mapped) every collapse; a failed or unverified
 * collapse is counted as a failure and its time is not kept.
 *
 * Cases:
 *   shared           tmpfs file, MAP_SHARED
 *   private          tmpfs file, MAP_PRIVATE (read-only, no userfaultfd)
 *   uffd-private     the same, registered with UFFDIO_REGISTER_MODE_MISSING
 *                    (upstream C takes the pmd lock before the PTE scan)
 *   uffd-contended   uffd-private, while threads fault fresh PTE tables
 *                    (first touch of 2 MiB ranges, MADV_NOHUGEPAGE, then
 *                    MADV_DONTNEED, which frees the table with PT_RECLAIM)
 *                    in the same 1 GiB (same PMD table page); their fault
 *                    throughput is measured alone first, then while the
 *                    collapses run
 *
 * Output (one line each, key=value):
 *   ENV ...                      clocksource, implementation selected
 *   SAMPLES case=C ns=a,b,...    raw collapse latencies (in order)
 *   BENCH case=C n= failures= median_ns= p99_ns= mean_ns= min_ns= max_ns=
 *   CONTENTION case=C phase=alone|collapsing faults= seconds= faults_per_s=
 *   STATS case=C key=delta ...   deltas of /sys/kernel/debug/khugepaged_rs/stats
 *   PML case=C <line>            /sys/kernel/debug/khugepaged_rs/pml_hold_ns
 *                                (cleared before the case), if it exists
 *   STEP case=C <line>           /sys/kernel/debug/khugepaged_rs/step_ns, the
 *                                time per step of the collapse (cleared with
 *                                pml_hold_ns), if it exists
 *   FAIL case=C i= reason=...    each failure
 *
 * Build: cc -O2 -static -pthread -o collapse_bench collapse_bench.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define PMD_SIZE (2UL << 20)
#define PUD_SIZE (1UL << 30)
#define PAGE 4096UL
#define DEBUGFS "/sys/kernel/debug/khugepaged_rs"

static const char *mnt = "/tmp/khrs-bench";
static int verbose;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stdout, "ERROR %s: %s\n", what, strerror(errno));
	fflush(stdout);
	exit(2);
}

/* --- the 1 GiB region: slot 0 is the collapse window, 1.. the faulters' --- */

static char *region;

static void reserve_region(void)
{
	char *p = mmap(NULL, 2 * PUD_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		die("mmap reserve");
	region = (char *)(((uintptr_t)p + PUD_SIZE - 1) & ~(PUD_SIZE - 1));
}

/* --- smaps: PMD-mapped kB of the VMA starting at addr --- */

static long pmd_mapped_kb(void *addr)
{
	char want[32], line[512];
	unsigned long lo, hi;
	int in = 0;
	long kb = -1, v;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		die("open smaps");
	snprintf(want, sizeof(want), "%lx-", (unsigned long)addr);
	while (fgets(line, sizeof(line), f)) {
		if (!in) {
			if (!strncmp(line, want, strlen(want))) {
				in = 1;
				kb = 0;
			}
			continue;
		}
		/* The next VMA's header. */
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			break;
		if (sscanf(line, "ShmemPmdMapped: %ld kB", &v) == 1 ||
		    sscanf(line, "FilePmdMapped: %ld kB", &v) == 1)
			kb += v;
	}
	fclose(f);
	return kb;
}

/* --- debugfs --- */

struct stat_kv {
	char key[48];
	long val;
};

static int read_stats(struct stat_kv *kv, int max)
{
	char line[128];
	int n = 0;
	FILE *f = fopen(DEBUGFS "/stats", "r");

	if (!f)
		return 0;
	while (n < max && fgets(line, sizeof(line), f))
		if (sscanf(line, "%47s %ld", kv[n].key, &kv[n].val) == 2)
			n++;
	fclose(f);
	return n;
}

static void print_stats_delta(const char *c, struct stat_kv *a, int na, struct stat_kv *b, int nb)
{
	int i, j;

	if (!nb)
		return;
	printf("STATS case=%s", c);
	for (j = 0; j < nb; j++) {
		long before = 0;

		for (i = 0; i < na; i++)
			if (!strcmp(a[i].key, b[j].key))
				before = a[i].val;
		printf(" %s=%ld", b[j].key, b[j].val - before);
	}
	printf("\n");
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	int ok;

	if (fd < 0)
		return -1;
	ok = write(fd, s, strlen(s)) == (ssize_t)strlen(s);
	close(fd);
	return ok ? 0 : -1;
}

static void print_debugfs(const char *tag, const char *c, const char *file)
{
	char line[8192], path[128];
	FILE *f;

	snprintf(path, sizeof(path), DEBUGFS "/%s", file);
	f = fopen(path, "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		printf("%s case=%s %s\n", tag, c, line);
	}
	fclose(f);
}

/* Clears pml_hold_ns and step_ns, where the kernel has them. */
static void clear_instrumentation(void)
{
	if (write_file(DEBUGFS "/pml_hold_ns", "0") && !access(DEBUGFS "/pml_hold_ns", F_OK))
		die("clear pml_hold_ns");
	if (write_file(DEBUGFS "/step_ns", "0") && !access(DEBUGFS "/step_ns", F_OK))
		die("clear step_ns");
}

static void print_env(void)
{
	char cs[64] = "?", impl[16] = "none", line[128];
	FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");

	if (f) {
		if (fgets(cs, sizeof(cs), f))
			cs[strcspn(cs, "\n")] = 0;
		fclose(f);
	}
	f = fopen(DEBUGFS "/stats", "r");
	if (f) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "impl %15s", impl) == 1)
				break;
		fclose(f);
	}
	printf("ENV clocksource=%s impl=%s cpus=%ld pml_hold=%s\n", cs, impl,
	       sysconf(_SC_NPROCESSORS_ONLN), access(DEBUGFS "/pml_hold_ns", R_OK) ? "no" : "yes");
}

/* --- the file: its first 2 MiB one PMD-sized folio --- */

static void mount_huge_tmpfs(void)
{
	mkdir(mnt, 0755);
	if (mount("khrs-bench", mnt, "tmpfs", 0, "huge=always,size=64m") && errno != EBUSY)
		die("mount tmpfs huge=always");
}

static int make_file(const char *name)
{
	char path[256];
	char *buf;
	int fd;
	long kb;
	void *p;

	snprintf(path, sizeof(path), "%s/%s", mnt, name);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		die("create file");
	if (ftruncate(fd, PMD_SIZE))
		die("ftruncate");
	buf = malloc(PMD_SIZE);
	memset(buf, 0x5a, PMD_SIZE);
	if (pwrite(fd, buf, PMD_SIZE, 0) != (ssize_t)PMD_SIZE)
		die("write file");
	free(buf);
	/* Check that it is one PMD folio: a plain shared read fault maps it by a PMD. */
	p = mmap(region, PMD_SIZE, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap probe");
	madvise(p, PMD_SIZE, MADV_HUGEPAGE);
	(void)*(volatile char *)p;
	kb = pmd_mapped_kb(p);
	munmap(p, PMD_SIZE);
	if (kb != 2048) {
		printf("ERROR %s: page cache folio not PMD-mapped on fault (PmdMapped %ld kB): not huge=always tmpfs?\n",
		       path, kb);
		exit(2);
	}
	return fd;
}

/* --- contention: threads faulting fresh PTE tables in the same 1 GiB --- */

static atomic_int stop, go;
static atomic_long faults;
static int nthreads = 1;

static void *faulter(void *arg)
{
	long k = (long)arg;
	long nslots = PUD_SIZE / PMD_SIZE;
	long s = 1 + k;

	while (!atomic_load(&go))
		;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		char *a = region + s * PMD_SIZE;

		/* First touch: allocates the PTE table (pmd_install() under pml). */
		*(volatile char *)a = 1;
		/* Zap it: the now empty table is freed (CONFIG_PT_RECLAIM), under pml. */
		madvise(a, PMD_SIZE, MADV_DONTNEED);
		atomic_fetch_add_explicit(&faults, 1, memory_order_relaxed);
		s += nthreads;
		if (s >= nslots)
			s = 1 + k;
	}
	return NULL;
}

static pthread_t *threads;

static void start_faulters(void)
{
	char *a = region + PMD_SIZE;
	size_t len = PUD_SIZE - PMD_SIZE;
	long i;

	if (mmap(a, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) ==
	    MAP_FAILED)
		die("mmap fault area");
	if (madvise(a, len, MADV_NOHUGEPAGE))
		die("madvise fault area");
	threads = calloc(nthreads, sizeof(*threads));
	atomic_store(&stop, 0);
	atomic_store(&go, 0);
	for (i = 0; i < nthreads; i++)
		if (pthread_create(&threads[i], NULL, faulter, (void *)i))
			die("pthread_create");
}

static void stop_faulters(void)
{
	int i;

	atomic_store(&stop, 1);
	atomic_store(&go, 1);
	for (i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	free(threads);
	munmap(region + PMD_SIZE, PUD_SIZE - PMD_SIZE);
}

/* --- one case --- */

struct bcase {
	const char *name;
	int private;
	int uffd;
	int contended;
};

static const struct bcase cases[] = {
	{ "shared", 0, 0, 0 },
	{ "private", 1, 0, 0 },
	{ "uffd-private", 1, 1, 0 },
	{ "uffd-contended", 1, 1, 1 },
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values (the harness uses the same). */
static uint64_t pct(const uint64_t *s, long n, int p)
{
	long r = (p * n + 99) / 100;

	if (r < 1)
		r = 1;
	return s[r - 1];
}

static void fail(const char *c, long i, const char *why, long v, long *failures)
{
	(*failures)++;
	printf("FAIL case=%s i=%ld reason=%s value=%ld errno=%d\n", c, i, why, v, errno);
}

static void run_case(const struct bcase *bc, long n, long warmup, double alone_s)
{
	uint64_t *ns = calloc(n, sizeof(*ns)), *sorted;
	struct stat_kv before[32], after[32];
	int nb, na, fd, uffd = -1, prot = bc->private ? PROT_READ : PROT_READ | PROT_WRITE;
	int flags = (bc->private ? MAP_PRIVATE : MAP_SHARED) | MAP_FIXED;
	long i, kept = 0, failures = 0, f0 = 0;
	uint64_t t_loop = 0, in_collapse = 0, sum = 0;
	char *w = region;

	fd = make_file(bc->name);
	if (bc->uffd) {
		struct uffdio_api api = { .api = UFFD_API };

		uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		if (uffd < 0)
			die("userfaultfd");
		if (ioctl(uffd, UFFDIO_API, &api))
			die("UFFDIO_API");
	}
	if (bc->contended) {
		uint64_t t;

		start_faulters();
		/* Fault throughput alone, for reference. */
		t = now_ns();
		atomic_store(&go, 1);
		usleep((useconds_t)(alone_s * 1e6));
		f0 = atomic_load(&faults);
		t = now_ns() - t;
		printf("CONTENTION case=%s phase=alone threads=%d faults=%ld seconds=%.6f faults_per_s=%.1f\n",
		       bc->name, nthreads, f0, t / 1e9, f0 / (t / 1e9));
	}

	clear_instrumentation();
	nb = read_stats(before, 32);
	for (i = -warmup; i < n; i++) {
		uint64_t t0, t1;
		long kb;
		char *p;
		int r;

		if (i == 0) {
			/* Warm-up collapses are not kept, nor their pml and step samples. */
			clear_instrumentation();
			nb = read_stats(before, 32);
			f0 = atomic_load(&faults);
			t_loop = now_ns();
		}
		p = mmap(w, PMD_SIZE, prot, flags, fd, 0);
		if (p != w)
			die("mmap window");
		if (madvise(p, PMD_SIZE, MADV_NOHUGEPAGE))
			die("MADV_NOHUGEPAGE");
		if (uffd >= 0) {
			struct uffdio_register reg = {
				.range = { .start = (unsigned long)p, .len = PMD_SIZE },
				.mode = UFFDIO_REGISTER_MODE_MISSING,
			};

			if (ioctl(uffd, UFFDIO_REGISTER, &reg))
				die("UFFDIO_REGISTER");
		}
		for (size_t off = 0; off < PMD_SIZE; off += PAGE)
			(void)*(volatile char *)(p + off);
		if (madvise(p, PMD_SIZE, MADV_HUGEPAGE))
			die("MADV_HUGEPAGE");
		kb = pmd_mapped_kb(p);
		if (kb != 0) {
			if (i >= 0)
				fail(bc->name, i, "pmd-mapped-before", kb, &failures);
			munmap(p, PMD_SIZE);
			continue;
		}
		t0 = now_ns();
		r = madvise(p, PMD_SIZE, MADV_COLLAPSE);
		t1 = now_ns();
		kb = pmd_mapped_kb(p);
		if (i >= 0) {
			in_collapse += t1 - t0;
			if (r)
				fail(bc->name, i, "madvise", r, &failures);
			else if (kb != 2048)
				fail(bc->name, i, "not-pmd-mapped-after", kb, &failures);
			else
				ns[kept++] = t1 - t0;
		}
		if (munmap(p, PMD_SIZE))
			die("munmap window");
	}
	t_loop = now_ns() - t_loop;
	na = read_stats(after, 32);

	if (bc->contended) {
		long f = atomic_load(&faults) - f0;

		stop_faulters();
		printf("CONTENTION case=%s phase=collapsing threads=%d faults=%ld seconds=%.6f faults_per_s=%.1f collapse_busy=%.4f\n",
		       bc->name, nthreads, f, t_loop / 1e9, f / (t_loop / 1e9), (double)in_collapse / t_loop);
		atomic_store(&faults, 0);
	}
	if (uffd >= 0)
		close(uffd);
	close(fd);
	{
		char path[256];

		snprintf(path, sizeof(path), "%s/%s", mnt, bc->name);
		unlink(path);
	}

	for (i = 0; i < kept; i++) {
		if (i % 64 == 0)
			printf("%sSAMPLES case=%s ns=", i ? "\n" : "", bc->name);
		printf("%s%llu", i % 64 ? "," : "", (unsigned long long)ns[i]);
		sum += ns[i];
	}
	if (kept)
		printf("\n");
	sorted = malloc(kept * sizeof(*sorted) + 1);
	memcpy(sorted, ns, kept * sizeof(*sorted));
	qsort(sorted, kept, sizeof(*sorted), cmp_u64);
	if (kept)
		printf("BENCH case=%s n=%ld failures=%ld median_ns=%llu p99_ns=%llu mean_ns=%llu min_ns=%llu max_ns=%llu\n",
		       bc->name, kept, failures, (unsigned long long)pct(sorted, kept, 50),
		       (unsigned long long)pct(sorted, kept, 99), (unsigned long long)(sum / kept),
		       (unsigned long long)sorted[0], (unsigned long long)sorted[kept - 1]);
	else
		printf("BENCH case=%s n=0 failures=%ld\n", bc->name, failures);
	print_stats_delta(bc->name, before, nb, after, na);
	print_debugfs("PML", bc->name, "pml_hold_ns");
	print_debugfs("STEP", bc->name, "step_ns");
	fflush(stdout);
	free(sorted);
	free(ns);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: collapse_bench [-n collapses] [-w warmup] [-t fault threads] [-a alone seconds]\n"
		"                      [-m tmpfs dir] [-v] [case...]\n"
		"cases: shared private uffd-private uffd-contended (default: all)\n");
	exit(1);
}

int main(int argc, char **argv)
{
	long n = 250, warmup = 5;
	double alone_s = 1.0;
	int opt, i, j, any = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((opt = getopt(argc, argv, "n:w:t:a:m:v")) != -1) {
		switch (opt) {
		case 'n': n = atol(optarg); break;
		case 'w': warmup = atol(optarg); break;
		case 't': nthreads = atoi(optarg); break;
		case 'a': alone_s = atof(optarg); break;
		case 'm': mnt = optarg; break;
		case 'v': verbose = 1; break;
		default: usage();
		}
	}
	if (n < 1 || nthreads < 1)
		usage();
	reserve_region();
	mount_huge_tmpfs();
	print_env();
	for (i = optind; i < argc; i++) {
		for (j = 0; j < (int)(sizeof(cases) / sizeof(cases[0])); j++)
			if (!strcmp(argv[i], cases[j].name))
				break;
		if (j == (int)(sizeof(cases) / sizeof(cases[0])))
			usage();
		run_case(&cases[j], n, warmup, alone_s);
		any = 1;
	}
	if (!any)
		for (j = 0; j < (int)(sizeof(cases) / sizeof(cases[0])); j++)
			run_case(&cases[j], n, warmup, alone_s);
	umount(mnt);
	printf("DONE\n");
	return 0;
}
