/*
 * process_timer.c - times one whole process for vmm-bench's cold-start mode:
 * posix_spawn (stdin, stdout and stderr on /dev/null), wait4, and the wall and
 * CPU time from before the spawn to the reap. The same code times vmmctl, the
 * C reference and QEMU, so what it adds is the same for each.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "include/kvm_ref.h"

extern char **environ;

#define MAX_ARGS 64

static uint64_t monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t kvmref_time_command(const char *command, int *status, uint64_t *cpu_ns)
{
    char *copy = strdup(command), *argv[MAX_ARGS + 1], *save = NULL;
    posix_spawn_file_actions_t actions;
    struct rusage usage;
    uint64_t t0, t1;
    int argc = 0, raw = 0;
    pid_t pid;

    *status = -1;
    *cpu_ns = 0;
    if (!copy)
        return 0;
    for (char *arg = strtok_r(copy, "\x1f", &save); arg && argc < MAX_ARGS; arg = strtok_r(NULL, "\x1f", &save))
        argv[argc++] = arg;
    argv[argc] = NULL;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    t0 = monotonic_ns();
    if (argc == 0 || posix_spawn(&pid, argv[0], &actions, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&actions);
        free(copy);
        return 0;
    }
    while (wait4(pid, &raw, 0, &usage) < 0)
        ;
    t1 = monotonic_ns();
    posix_spawn_file_actions_destroy(&actions);
    free(copy);
    *status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
    *cpu_ns = ((uint64_t)usage.ru_utime.tv_sec + (uint64_t)usage.ru_stime.tv_sec) * 1000000000ull
              + ((uint64_t)usage.ru_utime.tv_usec + (uint64_t)usage.ru_stime.tv_usec) * 1000ull;
    return t1 - t0;
}
