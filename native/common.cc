// Error construction, libbpf log capture, argument checks, netns switching and fd tracking.
#include "common.h"

#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include <cstdarg>
#include <functional>
#include <map>
#include <mutex>
#include <set>

namespace peak {

namespace {
thread_local std::string tlsLog;
constexpr size_t kMaxLog = 16384;

int PrintFn(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[4096];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  if (n <= 0) return n;
  tlsLog.append(buf, std::min<size_t>(n, sizeof(buf) - 1));
  if (tlsLog.size() > kMaxLog) tlsLog.erase(0, tlsLog.size() - kMaxLog);
  return n;
}

std::mutex fdMu;
// Per environment (main thread, each worker): a worker's end must not close the main thread's fds.
std::map<napi_env, std::set<int>> trackedFds;
}  // namespace

void InstallLibbpfPrint() { libbpf_set_print(PrintFn); }
void LibbpfLogReset() { tlsLog.clear(); }
std::string LibbpfLogTake() {
  std::string s;
  s.swap(tlsLog);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string ErrnoName(int err) {
  const char* n = strerrorname_np(err);
  return n ? std::string(n) : "E" + std::to_string(err);
}

Napi::Error MakeError(Napi::Env env, const std::string& what, int err, const std::string& libbpfMsg) {
  if (err < 0) err = -err;
  std::string msg = what + ": " + ErrnoName(err) + " (" + strerror(err) + ")";
  if (!libbpfMsg.empty()) msg += ": " + libbpfMsg;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("op", Napi::String::New(env, what));
  if (!libbpfMsg.empty()) e.Set("libbpfLog", Napi::String::New(env, libbpfMsg));
  return e;
}

void ThrowErrno(Napi::Env env, const std::string& what, int err) {
  throw MakeError(env, what, err, LibbpfLogTake());
}

bool IsNullish(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

int32_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().Int32Value();
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 4294967295.0 || d != (double)(uint32_t)d)
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an unsigned 32-bit integer");
  return (uint32_t)d;
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsBuffer())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

int WithNetns(const std::string& nsPath, const std::function<int()>& fn, std::string* what) {
  if (nsPath.empty()) return fn();
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) {
    if (what) *what = "open /proc/thread-self/ns/net";
    return errno;
  }
  int target = open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    close(self);
    if (what) *what = "open netns " + nsPath;
    return e;
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    int e = errno;
    close(self);
    close(target);
    if (what) *what = "setns " + nsPath;
    return e;
  }
  int rc = fn();
  // Always return the (pooled) thread to its own namespace.
  setns(self, CLONE_NEWNET);
  close(self);
  close(target);
  return rc;
}

void TrackFd(napi_env env, int fd) {
  std::lock_guard<std::mutex> g(fdMu);
  trackedFds[env].insert(fd);
}
void UntrackFd(int fd) {
  // An fd number is unique in the process while it is open: whichever env holds it gives it up.
  std::lock_guard<std::mutex> g(fdMu);
  for (auto& [env, fds] : trackedFds) fds.erase(fd);
}
void CloseTrackedFds(napi_env env) {
  std::lock_guard<std::mutex> g(fdMu);
  auto it = trackedFds.find(env);
  if (it == trackedFds.end()) return;
  for (int fd : it->second) close(fd);
  trackedFds.erase(it);
}

}  // namespace peak
