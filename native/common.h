// Shared helpers for the addon: errors that carry errno + libbpf's last message, argument checks, netns.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace peak {

// Collects libbpf warnings for the current thread so an error can quote what libbpf said.
void LibbpfLogReset();
std::string LibbpfLogTake();
void InstallLibbpfPrint();

// Symbolic errno name ("ENOENT"), or "E<number>" when unknown.
std::string ErrnoName(int err);

// Error for a failed operation: "<what>: <ENAME> (<strerror>)[: <libbpf says>]" with .errno/.code/.op.
Napi::Error MakeError(Napi::Env env, const std::string& what, int err, const std::string& libbpfMsg = "");
[[noreturn]] void ThrowErrno(Napi::Env env, const std::string& what, int err);

// Argument helpers: throw TypeError naming the argument.
int32_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name);
uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name);
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name);
Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name);
bool IsNullish(const Napi::Value& v);

// Runs fn inside network namespace `nsPath` on the calling thread, then switches back.
// Returns 0 or a positive errno. An empty path means the current namespace.
int WithNetns(const std::string& nsPath, const std::function<int()>& fn, std::string* what);

// fd tracking: every fd the addon hands out is registered with the env (main thread or worker) it was
// handed to, so that env's cleanup hook closes its own leftovers and never another thread's fds.
void TrackFd(napi_env env, int fd);
void UntrackFd(int fd);
void CloseTrackedFds(napi_env env);

void InitObject(Napi::Env env, Napi::Object exports);
void InitMaps(Napi::Env env, Napi::Object exports);
// mmap access to mmap-able array maps and BTF map definitions (called by InitMaps).
void InitMmap(Napi::Env env, Napi::Object exports);
void InitAttach(Napi::Env env, Napi::Object exports);
void InitTestRun(Napi::Env env, Napi::Object exports);
void InitSockets(Napi::Env env, Napi::Object exports);
void InitBtf(Napi::Env env, Napi::Object exports);
void InitLock(Napi::Env env, Napi::Object exports);
void InitBfdSocket(Napi::Env env, Napi::Object exports);
// spawnCapture: a program run with posix_spawn (no fork of the caller), its output collected on the pool.
void InitSpawn(Napi::Env env, Napi::Object exports);
// TcpProber: TCP connect probes on a thread of their own, verdicts to the loop in batches.
void InitTcpProber(Napi::Env env, Napi::Object exports);

}  // namespace peak
