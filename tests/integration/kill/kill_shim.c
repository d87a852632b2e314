// LD_PRELOAD shim for the kill-injection test: counts the calls that make a file durable or
// visible (write, pwrite, fsync, fdatasync, rename) on files under FINEMOE_KILL_DIR, and kills its
// own process with SIGKILL instead of making call number FINEMOE_KILL_AT (1-based; 0 = count
// only). With FINEMOE_KILL_RANK = r only the MPI rank r counts ("any": every rank; unset: the
// process itself, for a run without mpiexec). At exit the count is written to
// FINEMOE_KILL_REPORT.<pid> when that is set, so a test can enumerate every k up to the total.
// FINEMOE_KILL_TRACE=1 prints each counted call to stderr.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static atomic_long calls;
static long kill_at = -1;  // -1: not yet read
static int active;
static char dir[PATH_MAX];

static void write_report(void) {
  const char* report = getenv("FINEMOE_KILL_REPORT");
  if (!active || !report) return;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s.%d", report, (int)getpid());
  FILE* f = fopen(path, "w");
  if (!f) return;
  fprintf(f, "%ld\n", atomic_load(&calls));
  fclose(f);
}

static void setup(void) {
  if (kill_at >= 0) return;
  const char* at = getenv("FINEMOE_KILL_AT");
  const char* d = getenv("FINEMOE_KILL_DIR");
  const char* rank = getenv("FINEMOE_KILL_RANK");
  const char* mine = getenv("OMPI_COMM_WORLD_RANK");
  active = at && d && (!rank || (mine && (strcmp(rank, "any") == 0 || strcmp(rank, mine) == 0)));
  if (active) {
    snprintf(dir, sizeof dir, "%s", d);
    atexit(write_report);
  }
  kill_at = at ? atol(at) : 0;
}

static int under_dir(const char* path) { return path && strncmp(path, dir, strlen(dir)) == 0; }

static int fd_under_dir(int fd) {
  char link[64], target[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, target, sizeof target - 1);
  if (n <= 0) return 0;
  target[n] = 0;
  return under_dir(target);
}

static void count(int relevant, const char* what) {
  setup();
  if (!active || !relevant) return;
  const long k = atomic_fetch_add(&calls, 1) + 1;
  if (getenv("FINEMOE_KILL_TRACE")) fprintf(stderr, "kill-shim %ld %s\n", k, what);
  if (kill_at > 0 && k == kill_at) {
    write_report();
    raise(SIGKILL);
  }
}

#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t write(int fd, const void* buf, size_t n) {
  count(fd > 2 && fd_under_dir(fd), "write");
  return REAL(write)(fd, buf, n);
}
ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  count(fd_under_dir(fd), "pwrite");
  return REAL(pwrite)(fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) {
  count(fd_under_dir(fd), "pwrite");
  return REAL(pwrite64)(fd, buf, n, off);
}
int fsync(int fd) {
  count(fd_under_dir(fd), "fsync");
  return REAL(fsync)(fd);
}
int fdatasync(int fd) {
  count(fd_under_dir(fd), "fdatasync");
  return REAL(fdatasync)(fd);
}
int rename(const char* from, const char* to) {
  setup();
  count(under_dir(from) || under_dir(to), "rename");
  return REAL(rename)(from, to);
}
