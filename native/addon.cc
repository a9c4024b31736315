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
  // Close every fd still handed out when the environment goes away (process exit, worker end).
  env.AddCleanupHook([]() { peak::CloseTrackedFds(); });
  return exports;
}

}  // namespace

NODE_API_MODULE(peak_xdp, Init)
