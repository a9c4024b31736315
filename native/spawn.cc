// spawnCapture: runs a program with posix_spawn (glibc: clone(CLONE_VM | CLONE_VFORK), no copy of the caller's
// page tables) and collects its output on a thread of the pool. Node's child_process forks: in a daemon of
// ~500 MB that fork copied the page tables on the event loop, and every page the daemon wrote after it took a
// copy-on-write fault (~4,000 faults per 256 health-check results, 40-60 ms; /healthz waited 100-200 ms).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <tuple>

#include "common.h"

extern char** environ;

namespace peak {
namespace {

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

class SpawnWorker : public Napi::AsyncWorker {
 public:
  SpawnWorker(Napi::Env env, std::string file, std::vector<std::string> args, std::string input,
              uint32_t timeoutMs, uint32_t maxBytes)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        file_(std::move(file)),
        args_(std::move(args)),
        input_(std::move(input)),
        timeoutMs_(timeoutMs),
        maxBytes_(maxBytes) {}

  void Execute() override {
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
      error_ = "pipe2: " + ErrnoName(errno);
      for (int* p : {in, out, err}) CloseFd(p[0]), CloseFd(p[1]);
      return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    // dup2 clears FD_CLOEXEC on 0, 1 and 2; every other descriptor of ours is close-on-exec.
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    // The child starts with no signal blocked and every signal at its default (Node ignores SIGPIPE).
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(file_.c_str()));
    for (auto& a : args_) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, file_.c_str(), &fa, &at, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    CloseFd(in[0]);
    CloseFd(out[1]);
    CloseFd(err[1]);
    if (rc != 0) {
      error_ = "spawn " + file_ + ": " + ErrnoName(rc) + " (" + strerror(rc) + ")";
      CloseFd(in[1]), CloseFd(out[0]), CloseFd(err[0]);
      return;
    }
    for (int fd : {in[1], out[0], err[0]}) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    size_t written = 0;
    if (input_.empty()) CloseFd(in[1]);
    const int64_t deadline = NowMs() + timeoutMs_;
    bool killed = false;
    char buf[65536];
    while (out[0] >= 0 || err[0] >= 0) {
      struct pollfd p[3];
      int n = 0;
      int outAt = -1, errAt = -1, inAt = -1;
      if (out[0] >= 0) outAt = n, p[n++] = {out[0], POLLIN, 0};
      if (err[0] >= 0) errAt = n, p[n++] = {err[0], POLLIN, 0};
      if (in[1] >= 0) inAt = n, p[n++] = {in[1], POLLOUT, 0};
      int64_t left = deadline - NowMs();
      if (left <= 0) {
        error_ = "timed out after " + std::to_string(timeoutMs_) + " ms";
        break;
      }
      int r = poll(p, n, int(left));
      if (r < 0) {
        if (errno == EINTR) continue;
        error_ = "poll: " + ErrnoName(errno);
        break;
      }
      if (inAt >= 0 && p[inAt].revents != 0) {
        ssize_t w = write(in[1], input_.data() + written, input_.size() - written);
        if (w > 0) written += size_t(w);
        // EPIPE (the program does not read its input) or all written: no more input.
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input_.size()) CloseFd(in[1]);
      }
      for (auto [at, fd, sink] : {std::tuple{outAt, &out[0], &stdout_}, std::tuple{errAt, &err[0], &stderr_}}) {
        if (at < 0 || p[at].revents == 0) continue;
        ssize_t got = read(*fd, buf, sizeof buf);
        if (got > 0) sink->append(buf, size_t(got));
        else if (got == 0 || (errno != EAGAIN && errno != EINTR)) CloseFd(*fd);
      }
      if (stdout_.size() + stderr_.size() > maxBytes_) {
        error_ = "output over " + std::to_string(maxBytes_) + " bytes";
        break;
      }
    }
    if (!error_.empty()) {
      kill(pid, SIGKILL);
      killed = true;
    }
    CloseFd(in[1]), CloseFd(out[0]), CloseFd(err[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) {
        if (error_.empty()) error_ = "waitpid: " + ErrnoName(errno);
        return;
      }
    }
    if (WIFEXITED(status)) exitCode_ = WEXITSTATUS(status);
    else if (WIFSIGNALED(status) && !killed) signal_ = WTERMSIG(status);
  }

  void OnOK() override {
    Napi::Env env = Env();
    auto o = Napi::Object::New(env);
    o.Set("code", exitCode_ >= 0 ? Napi::Value(Napi::Number::New(env, exitCode_)) : env.Null());
    o.Set("signal", signal_ > 0 ? Napi::Value(Napi::Number::New(env, signal_)) : env.Null());
    o.Set("stdout", Napi::Buffer<char>::Copy(env, stdout_.data(), stdout_.size()));
    o.Set("stderr", Napi::Buffer<char>::Copy(env, stderr_.data(), stderr_.size()));
    o.Set("error", error_.empty() ? env.Null() : Napi::Value(Napi::String::New(env, error_)));
    deferred_.Resolve(o);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string file_;
  std::vector<std::string> args_;
  std::string input_;
  uint32_t timeoutMs_;
  uint32_t maxBytes_;
  std::string stdout_, stderr_, error_;
  int exitCode_ = -1;
  int signal_ = 0;
};

// spawnCapture(file, args, input, timeoutMs, maxBytes) -> Promise<{ code, signal, stdout, stderr, error }>:
// `file` looked up in PATH; `input` written to its stdin (then closed); killed (SIGKILL) past timeoutMs or when
// stdout and stderr together pass maxBytes. Never rejects: a program that could not start has `error`.
Napi::Value SpawnCapture(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = ArgString(info, 0, "file");
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "args: expected an array of strings");
  auto arr = info[1].As<Napi::Array>();
  std::vector<std::string> args;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, "args[" + std::to_string(i) + "]: expected a string");
    args.push_back(v.As<Napi::String>().Utf8Value());
  }
  std::string input = ArgString(info, 2, "input");
  uint32_t timeoutMs = ArgU32(info, 3, "timeoutMs");
  uint32_t maxBytes = ArgU32(info, 4, "maxBytes");
  auto* w = new SpawnWorker(env, std::move(file), std::move(args), std::move(input), timeoutMs, maxBytes);
  auto p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("spawnCapture", Napi::Function::New(env, SpawnCapture));
}

}  // namespace peak
