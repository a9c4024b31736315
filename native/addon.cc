// peak_xdp addon entry: a thin, policy-free binding over libbpf 1.1. All decisions live in TypeScript.
#include "common.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  peak::InstallLibbpfPrint();
  peak::InitObject(env, exports);
  peak::InitMaps(env, exports);
  peak::InitAttach(env, exports);
  peak::InitTestRun(env, exports);
  peak::InitSockets(env, exports);
  peak::InitBtf(env, exports);
  peak::InitLock(env, exports);
  peak::InitBfdSocket(env, exports);
  peak::InitSpawn(env, exports);
  peak::InitTcpProber(env, exports);
  // Close the fds this environment still holds when it goes away (process exit, worker end); the
  // addon is loaded per environment, so a worker (the BGP speaker) ending leaves the main thread's alone.
  napi_env self = env;
  env.AddCleanupHook([self]() { peak::CloseTrackedFds(self); });
  return exports;
}

}  // namespace

NODE_API_MODULE(peak_xdp, Init)
