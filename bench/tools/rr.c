// SPDX-License-Identifier: Apache-2.0
/*
 * rr: TCP request/response benchmark for the Tendril bench (netperf's TCP_RR idea; netperf is not in Debian main).
 *
 *   server: rr -s [-p PORT] [-1] [-T SECS] [-w N] echo every byte back; -1: exit after one connection;
 *                                               -T: exit after SECS whatever happens (a bench never leaves one behind);
 *                                               -w: N processes accept on the one socket (several clients at once)
 *   client: rr -c IPV4 [-p PORT] [-t SECS] [-b BYTES] [-C] [-r RATE]
 *
 * The client keeps one connection (TCP_NODELAY on both ends), sends BYTES, waits for BYTES back, and repeats
 * for SECS seconds. With -C every transaction is a connection of its own (netperf's TCP_CRR): connect, BYTES
 * there and back, close; a transaction's time then includes the handshake. -r starts at most RATE transactions
 * per second on a fixed schedule (open loop: a late one does not shift the ones after it); 0 = back to back. Each transaction's wall time goes into a histogram of 100 ns buckets up to 10 ms (beyond
 * that: an overflow count and the maximum), so percentiles cost no memory growth and no sort.
 * Output, one JSON line on stdout:
 *   {"transactions":N,"seconds":S,"tps":T,"mean_us":M,"p50_us":A,"p90_us":B,"p99_us":C,"max_us":D}
 * The client retries connect() for 3 s, so it may be started right after the server.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUCKET_NS 100
#define NBUCKETS 100000 /* 100 ns x 100000 = 10 ms */
#define MAX_MSG 65536

static uint64_t hist[NBUCKETS];
static uint64_t overflow;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(void)
{
	fputs("usage: rr -s [-p PORT] [-1] [-T SECS] [-w N] | rr -c IPV4 [-p PORT] [-t SECS] [-b BYTES] [-C] [-r RATE]\n", stderr);
	exit(2);
}

static void set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Sends or receives exactly n bytes; returns 0, or -1 on error/EOF. */
static int xfer(int fd, char *buf, size_t n, int sending)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = sending ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

static int server(int port, int once, int lifetime, int workers)
{
	static char buf[MAX_MSG];
	int one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	pid_t parent = getpid();

	if (lifetime > 0)
		alarm((unsigned)lifetime); /* default SIGALRM action terminates us */
	/* A deep backlog: connect-per-transaction clients arrive in bursts. */
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 1024)) {
		fprintf(stderr, "rr: cannot listen on port %d: %s\n", port, strerror(errno));
		return 1;
	}
	for (int i = 1; i < workers; i++) {
		pid_t pid = fork();

		if (pid < 0) {
			fprintf(stderr, "rr: fork: %s\n", strerror(errno));
			return 1;
		}
		if (pid == 0) {
			/* Workers go with the first process, which is the one a bench kills. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(0);
			if (lifetime > 0)
				alarm((unsigned)lifetime);
			break;
		}
	}
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "rr: accept: %s\n", strerror(errno));
			return 1;
		}
		set_nodelay(fd);
		for (;;) {
			ssize_t r = read(fd, buf, sizeof(buf));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0 || xfer(fd, buf, (size_t)r, 1))
				break;
		}
		close(fd);
		if (once)
			return 0;
	}
}

/* One connect(); the socket, or -errno. */
static int connect_once(const struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
		set_nodelay(fd);
		return fd;
	}
	int err = errno;
	close(fd);
	return -err;
}

static int connect_retry(const char *host, int port, const struct sockaddr_in *sa)
{
	uint64_t deadline = now_ns() + 3000000000ull;

	for (;;) {
		int fd = connect_once(sa);
		if (fd >= 0)
			return fd;
		/* Refused = server not listening yet; anything else is a real failure. */
		if (fd != -ECONNREFUSED || now_ns() > deadline) {
			fprintf(stderr, "rr: cannot connect to %s:%d: %s\n", host, port, strerror(-fd));
			return -1;
		}
		usleep(20000);
	}
}

/* Smallest latency (µs) such that at least q of the samples are <= it. */
static double quantile_us(uint64_t n, double q, uint64_t max_ns)
{
	uint64_t rank = (uint64_t)(q * (double)n);
	uint64_t seen = 0;

	if (rank < 1)
		rank = 1;
	for (int i = 0; i < NBUCKETS; i++) {
		seen += hist[i];
		if (seen >= rank)
			return (double)(i + 1) * BUCKET_NS / 1000.0; /* bucket upper edge */
	}
	return (double)max_ns / 1000.0;
}

static void sleep_until(uint64_t t_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(t_ns / 1000000000ull), .tv_nsec = (long)(t_ns % 1000000000ull) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static int client(const char *host, int port, int secs, int bytes, int crr, double rate)
{
	static char buf[MAX_MSG];
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	uint64_t n = 0, sum = 0, max = 0;
	int fd;

	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "rr: invalid IPv4 address \"%s\"\n", host);
		return 1;
	}
	/* Also in -C mode: waits for the server, and the first connection is the first transaction's. */
	fd = connect_retry(host, port, &sa);
	if (fd < 0)
		return 1;
	memset(buf, 'r', (size_t)bytes);
	uint64_t start = now_ns(), end = start + (uint64_t)secs * 1000000000ull, t1 = start;
	while (t1 < end) {
		uint64_t t0 = t1;
		if (rate > 0) {
			uint64_t due = start + (uint64_t)((double)n * 1e9 / rate);
			if (due >= end)
				break;
			if (due > t0) {
				sleep_until(due);
				t0 = due;
			}
		}
		if (crr && fd < 0) {
			fd = connect_once(&sa);
			if (fd < 0) {
				/* EADDRNOTAVAIL: every local port is taken (TIME_WAIT): the caller widens the range. */
				fprintf(stderr, "rr: cannot connect to %s:%d after %llu transactions: %s\n", host, port,
					(unsigned long long)n, strerror(-fd));
				return 1;
			}
		}
		if (xfer(fd, buf, (size_t)bytes, 1) || xfer(fd, buf, (size_t)bytes, 0)) {
			fprintf(stderr, "rr: connection to %s:%d lost after %llu transactions\n", host, port,
				(unsigned long long)n);
			return 1;
		}
		if (crr) {
			close(fd);
			fd = -1;
		}
		t1 = now_ns();
		uint64_t d = t1 - t0;
		if (d / BUCKET_NS < NBUCKETS)
			hist[d / BUCKET_NS]++;
		else
			overflow++;
		if (d > max)
			max = d;
		sum += d;
		n++;
	}
	if (fd >= 0)
		close(fd);
	double elapsed = (double)(t1 - start) / 1e9;
	if (n == 0) {
		fputs("rr: no transaction completed\n", stderr);
		return 1;
	}
	printf("{\"transactions\":%llu,\"seconds\":%.3f,\"tps\":%.1f,\"mean_us\":%.2f,\"p50_us\":%.1f,"
	       "\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
	       (unsigned long long)n, elapsed, (double)n / elapsed, (double)sum / (double)n / 1000.0,
	       quantile_us(n, 0.50, max), quantile_us(n, 0.90, max), quantile_us(n, 0.99, max), (double)max / 1000.0);
	return 0;
}

int main(int argc, char **argv)
{
	int opt, srv = 0, once = 0, port = 5555, secs = 10, bytes = 1, lifetime = 0, workers = 1, crr = 0;
	double rate = 0;
	const char *host = NULL;

	while ((opt = getopt(argc, argv, "sc:p:1T:t:b:w:Cr:")) != -1) {
		switch (opt) {
		case 's': srv = 1; break;
		case 'c': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case '1': once = 1; break;
		case 'T': lifetime = atoi(optarg); break;
		case 't': secs = atoi(optarg); break;
		case 'b': bytes = atoi(optarg); break;
		case 'w': workers = atoi(optarg); break;
		case 'C': crr = 1; break;
		case 'r': rate = atof(optarg); break;
		default: usage();
		}
	}
	if (srv == !!host || port < 1 || port > 65535 || secs < 1 || bytes < 1 || bytes > MAX_MSG ||
	    workers < 1 || workers > 64 || (once && workers > 1) || !(rate >= 0))
		usage();
	return srv ? server(port, once, lifetime, workers) : client(host, port, secs, bytes, crr, rate);
}
