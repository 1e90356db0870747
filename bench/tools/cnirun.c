// SPDX-License-Identifier: Apache-2.0
/*
 * cnirun: executes a CNI plugin for many pods the way a container runtime does (CNI_* environment, network
 * config on stdin, result on stdout) and times each execution from spawn to exit, with up to CONC running
 * at once. Timing lives here, in a small native process started once inside the node's namespace, so that
 * every plugin is measured identically: no per-call nsenter, no Node.js event loop between exit and clock.
 *
 *   cnirun -m ADD|DEL -x PLUGIN_PATH [-c CONC] [-e KEY=VALUE]... JOBFILE
 *
 * JOBFILE: one job per line, tab-separated: CONTAINER_ID NETNS_PATH STDIN_FILE STDOUT_FILE CNI_ARGS
 * (CNI_ARGS may be empty). The plugin's stderr goes to STDOUT_FILE.err.
 * Output: one line per job, in completion order: INDEX<TAB>MICROSECONDS<TAB>EXIT_STATUS (signal: 128+n).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENV 32
#define MAX_CONC 256

struct job {
	char *cid, *netns, *in, *out, *args;
	pid_t pid;
	uint64_t t0;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "cnirun: %s: %s\n", what, strerror(errno));
	exit(1);
}

static char *kv(const char *k, const char *v)
{
	char *s;

	if (asprintf(&s, "%s=%s", k, v) < 0)
		die("asprintf");
	return s;
}

static size_t load_jobs(const char *file, struct job **out)
{
	FILE *f = fopen(file, "r");
	char *line = NULL;
	size_t cap = 0, n = 0, room = 0;
	struct job *jobs = NULL;

	if (!f)
		die(file);
	while (getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = '\0';
		if (!*line)
			continue;
		char *f0 = strdup(line), *fld[5] = { 0 }, *p = f0;
		for (int i = 0; i < 5; i++) {
			fld[i] = p;
			p = p ? strchr(p, '\t') : NULL;
			if (p)
				*p++ = '\0';
		}
		if (!fld[3]) {
			fprintf(stderr, "cnirun: %s: line %zu needs at least 4 tab-separated fields\n", file, n + 1);
			exit(2);
		}
		if (n == room) {
			room = room ? room * 2 : 64;
			jobs = realloc(jobs, room * sizeof(*jobs));
			if (!jobs)
				die("realloc");
		}
		jobs[n++] = (struct job){ fld[0], fld[1], fld[2], fld[3], fld[4] ? fld[4] : "", 0, 0 };
	}
	free(line);
	fclose(f);
	*out = jobs;
	return n;
}

static void start(struct job *j, const char *plugin, const char *cmd, char **common, int ncommon)
{
	char *env[MAX_ENV + 8], *argv[] = { (char *)plugin, NULL }, *err;
	int e = 0;
	posix_spawn_file_actions_t fa;

	for (int i = 0; i < ncommon; i++)
		env[e++] = common[i];
	env[e++] = kv("CNI_COMMAND", cmd);
	env[e++] = kv("CNI_CONTAINERID", j->cid);
	env[e++] = kv("CNI_NETNS", j->netns);
	env[e++] = kv("CNI_IFNAME", "eth0");
	if (*j->args)
		env[e++] = kv("CNI_ARGS", j->args);
	env[e] = NULL;
	if (asprintf(&err, "%s.err", j->out) < 0)
		die("asprintf");
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, j->in, O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, j->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	/* The clock starts where a runtime's exec starts; the env/file-action setup above is ours, not the plugin's. */
	j->t0 = now_ns();
	int rc = posix_spawn(&j->pid, plugin, &fa, NULL, argv, env);
	if (rc) {
		errno = rc;
		die(plugin);
	}
	posix_spawn_file_actions_destroy(&fa);
	free(err);
	for (int i = ncommon; i < e; i++)
		free(env[i]);
}

int main(int argc, char **argv)
{
	const char *cmd = NULL, *plugin = NULL;
	char *common[MAX_ENV];
	int ncommon = 0, conc = 1, opt;

	while ((opt = getopt(argc, argv, "m:x:c:e:")) != -1) {
		switch (opt) {
		case 'm': cmd = optarg; break;
		case 'x': plugin = optarg; break;
		case 'c': conc = atoi(optarg); break;
		case 'e':
			if (ncommon == MAX_ENV || !strchr(optarg, '=')) {
				fputs("cnirun: -e takes KEY=VALUE (at most 32)\n", stderr);
				return 2;
			}
			common[ncommon++] = optarg;
			break;
		default: goto usage;
		}
	}
	if (!cmd || !plugin || conc < 1 || conc > MAX_CONC || optind != argc - 1)
		goto usage;

	struct job *jobs;
	size_t n = load_jobs(argv[optind], &jobs), next = 0, done = 0;
	int running = 0;
	while (done < n) {
		if (running < conc && next < n) {
			start(&jobs[next++], plugin, cmd, common, ncommon);
			running++;
			continue;
		}
		int status;
		pid_t pid = waitpid(-1, &status, 0);
		uint64_t t1 = now_ns();
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			die("waitpid");
		}
		for (size_t i = 0; i < next; i++) {
			if (jobs[i].pid != pid)
				continue;
			int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			printf("%zu\t%.1f\t%d\n", i, (double)(t1 - jobs[i].t0) / 1000.0, code);
			jobs[i].pid = 0;
			running--;
			done++;
			break;
		}
	}
	return 0;
usage:
	fputs("usage: cnirun -m ADD|DEL -x PLUGIN_PATH [-c CONC] [-e KEY=VALUE]... JOBFILE\n", stderr);
	return 2;
}
