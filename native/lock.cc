// flock(2), which Node does not expose: the daemon's one-owner-per-pin-directory lock.
#include <errno.h>
#include <sys/file.h>

#include "common.h"

namespace peak {

namespace {

// flock(fd, "exclusive" | "unlock") -> true, or false when another open file holds the lock (never waits).
Napi::Value Flock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  std::string op = ArgString(info, 1, "operation");
  int how;
  if (op == "exclusive")
    how = LOCK_EX | LOCK_NB;
  else if (op == "unlock")
    how = LOCK_UN;
  else
    throw Napi::TypeError::New(env, "operation must be \"exclusive\" or \"unlock\"");
  int rc;
  do rc = flock(fd, how);
  while (rc != 0 && errno == EINTR);
  if (rc == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  ThrowErrno(env, "flock " + op + " on fd " + std::to_string(fd), errno);
}

}  // namespace

void InitLock(Napi::Env env, Napi::Object exports) { exports.Set("flock", Napi::Function::New(env, Flock)); }

}  // namespace peak
