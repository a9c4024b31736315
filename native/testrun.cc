// BPF_PROG_TEST_RUN: packet in -> verdict, packet out, duration; repeat; XDP live-frames mode.
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <string.h>

#include "common.h"

namespace peak {

namespace {

struct RunArgs {
  int fd = -1;
  std::vector<uint8_t> data;
  std::vector<uint8_t> ctx;
  uint32_t repeat = 1;
  uint32_t flags = 0;
  uint32_t batchSize = 0;
  uint32_t dataSizeOut = 0;
  bool wantOut = true;
};

struct RunResult {
  int err = 0;
  uint32_t retval = 0;
  uint32_t duration = 0;
  std::vector<uint8_t> out;
  std::string log;
};

RunArgs Parse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RunArgs a;
  a.fd = ArgInt(info, 0, "progFd");
  if (info.Length() < 2 || !info[1].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  Napi::Value d = o.Get("data");
  if (!d.IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
  auto b = d.As<Napi::Buffer<uint8_t>>();
  a.data.assign(b.Data(), b.Data() + b.Length());
  auto u32 = [&](const char* k, uint32_t dflt) -> uint32_t {
    Napi::Value v = o.Get(k);
    if (IsNullish(v)) return dflt;
    if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(k) + " must be a number");
    return v.As<Napi::Number>().Uint32Value();
  };
  a.repeat = u32("repeat", 1);
  a.flags = u32("flags", 0);
  a.batchSize = u32("batchSize", 0);
  a.dataSizeOut = u32("dataSizeOut", (uint32_t)a.data.size() + 512);
  Napi::Value ctx = o.Get("ctx");
  if (ctx.IsBuffer()) {
    auto c = ctx.As<Napi::Buffer<uint8_t>>();
    a.ctx.assign(c.Data(), c.Data() + c.Length());
  } else if (!IsNullish(o.Get("ingressIfindex"))) {
    struct xdp_md md;
    memset(&md, 0, sizeof(md));
    md.data_end = (uint32_t)a.data.size();
    md.ingress_ifindex = u32("ingressIfindex", 0);
    md.rx_queue_index = u32("rxQueue", 0);
    a.ctx.assign((uint8_t*)&md, (uint8_t*)&md + sizeof(md));
  }
  // Live frames are transmitted for real; the kernel rejects data_out with them.
  a.wantOut = !(a.flags & BPF_F_TEST_XDP_LIVE_FRAMES);
  return a;
}

RunResult Run(const RunArgs& a) {
  RunResult r;
  LIBBPF_OPTS(bpf_test_run_opts, opts);
  opts.data_in = a.data.data();
  opts.data_size_in = (uint32_t)a.data.size();
  if (a.wantOut) {
    r.out.resize(a.dataSizeOut);
    opts.data_out = r.out.data();
    opts.data_size_out = a.dataSizeOut;
  }
  if (!a.ctx.empty()) {
    opts.ctx_in = a.ctx.data();
    opts.ctx_size_in = (uint32_t)a.ctx.size();
  }
  opts.repeat = (int)a.repeat;
  opts.flags = a.flags;
  opts.batch_size = a.batchSize;
  LibbpfLogReset();
  int rc = bpf_prog_test_run_opts(a.fd, &opts);
  r.log = LibbpfLogTake();
  if (rc) {
    r.err = errno ? errno : -rc;
    return r;
  }
  r.retval = opts.retval;
  r.duration = opts.duration;
  if (a.wantOut) r.out.resize(opts.data_size_out);
  return r;
}

Napi::Value ToJs(Napi::Env env, const RunArgs& a, const RunResult& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("retval", r.retval);
  o.Set("duration", r.duration);
  if (a.wantOut) o.Set("data", Napi::Buffer<uint8_t>::Copy(env, r.out.data(), r.out.size()));
  return o;
}

// progTestRun(fd, {data, repeat?, flags?, batchSize?, dataSizeOut?, ctx?, ingressIfindex?}) -> result
Napi::Value ProgTestRun(const Napi::CallbackInfo& info) {
  RunArgs a = Parse(info);
  RunResult r = Run(a);
  if (r.err) throw MakeError(info.Env(), "test run of program fd " + std::to_string(a.fd), r.err, r.log);
  return ToJs(info.Env(), a, r);
}

class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, RunArgs a)
      : Napi::AsyncWorker(env), a_(std::move(a)), deferred_(Napi::Promise::Deferred::New(env)) {}
  void Execute() override { r_ = Run(a_); }
  void OnOK() override {
    if (r_.err)
      deferred_.Reject(MakeError(Env(), "test run of program fd " + std::to_string(a_.fd), r_.err, r_.log).Value());
    else
      deferred_.Resolve(ToJs(Env(), a_, r_));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 private:
  RunArgs a_;
  RunResult r_;
  Napi::Promise::Deferred deferred_;
};

Napi::Value ProgTestRunAsync(const Napi::CallbackInfo& info) {
  auto* w = new RunWorker(info.Env(), Parse(info));
  auto p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitTestRun(Napi::Env env, Napi::Object exports) {
  exports.Set("progTestRun", Napi::Function::New(env, ProgTestRun));
  exports.Set("progTestRunAsync", Napi::Function::New(env, ProgTestRunAsync));
  exports.Set("BPF_F_TEST_XDP_LIVE_FRAMES", Napi::Number::New(env, BPF_F_TEST_XDP_LIVE_FRAMES));
}

}  // namespace peak
