// XDP attach/detach/query on an interface (by name or index), optionally inside another network namespace.
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <string.h>

#include "common.h"

namespace peak {

namespace {

struct Target {
  std::string ifname;
  uint32_t ifindex = 0;
  std::string netns;
};

Target ParseTarget(Napi::Env env, Napi::Object o) {
  Target t;
  Napi::Value name = o.Get("ifname"), idx = o.Get("ifindex"), ns = o.Get("netns");
  if (name.IsString()) t.ifname = name.As<Napi::String>().Utf8Value();
  if (idx.IsNumber()) t.ifindex = idx.As<Napi::Number>().Uint32Value();
  if (t.ifname.empty() && t.ifindex == 0) throw Napi::TypeError::New(env, "ifname or ifindex is required");
  if (ns.IsString()) t.netns = ns.As<Napi::String>().Utf8Value();
  return t;
}

std::string Describe(const Target& t) {
  std::string s = t.ifname.empty() ? "ifindex " + std::to_string(t.ifindex) : t.ifname;
  if (!t.netns.empty()) s += " (netns " + t.netns + ")";
  return s;
}

// Resolves the interface index inside the current namespace; 0 + errno on failure.
int Resolve(Target& t) {
  if (t.ifindex) return 0;
  unsigned idx = if_nametoindex(t.ifname.c_str());
  if (!idx) return errno ? errno : ENODEV;
  t.ifindex = idx;
  return 0;
}

const char* ModeName(int m) {
  switch (m) {
    case XDP_ATTACHED_DRV: return "native";
    case XDP_ATTACHED_SKB: return "generic";
    case XDP_ATTACHED_HW: return "offload";
    case XDP_ATTACHED_MULTI: return "multi";
    default: return "none";
  }
}

Napi::Object QueryResult(Napi::Env env, const Target& t, const bpf_xdp_query_opts& q) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ifindex", t.ifindex);
  o.Set("progId", q.prog_id);
  o.Set("drvProgId", q.drv_prog_id);
  o.Set("skbProgId", q.skb_prog_id);
  o.Set("hwProgId", q.hw_prog_id);
  o.Set("mode", ModeName(q.attach_mode));
  return o;
}

class XdpWorker : public Napi::AsyncWorker {
 public:
  enum Op { kAttach, kDetach };
  XdpWorker(Napi::Env env, Op op, Target t, int progFd, std::string mode, int oldFd)
      : Napi::AsyncWorker(env), op_(op), t_(std::move(t)), progFd_(progFd), mode_(std::move(mode)),
        oldFd_(oldFd), deferred_(Napi::Promise::Deferred::New(env)) {}

  void Execute() override {
    LibbpfLogReset();
    err_ = WithNetns(t_.netns, [this]() { return Run(); }, &what_);
    log_ = LibbpfLogTake();
  }

  int Run() {
    int e = Resolve(t_);
    if (e) {
      what_ = "resolve interface";
      return e;
    }
    if (op_ == kAttach) {
      LIBBPF_OPTS(bpf_xdp_attach_opts, ao);
      uint32_t extra = 0;
      if (oldFd_ >= 0) {
        ao.old_prog_fd = oldFd_;
        extra = XDP_FLAGS_REPLACE;
      }
      int rc;
      if (mode_ == "native") {
        rc = bpf_xdp_attach(t_.ifindex, progFd_, XDP_FLAGS_DRV_MODE | extra, &ao);
      } else if (mode_ == "generic") {
        rc = bpf_xdp_attach(t_.ifindex, progFd_, XDP_FLAGS_SKB_MODE | extra, &ao);
      } else {  // auto: native first, generic when the driver cannot
        rc = bpf_xdp_attach(t_.ifindex, progFd_, XDP_FLAGS_DRV_MODE | extra, &ao);
        if (rc == -EOPNOTSUPP || rc == -EINVAL) rc = bpf_xdp_attach(t_.ifindex, progFd_, XDP_FLAGS_SKB_MODE | extra, &ao);
      }
      if (rc) {
        what_ = "attach xdp";
        return -rc;
      }
    } else {
      uint32_t flags = 0;
      if (mode_ == "native") flags = XDP_FLAGS_DRV_MODE;
      else if (mode_ == "generic") flags = XDP_FLAGS_SKB_MODE;
      else {
        LIBBPF_OPTS(bpf_xdp_query_opts, q);
        int rc = bpf_xdp_query(t_.ifindex, 0, &q);
        if (rc) {
          what_ = "query xdp";
          return -rc;
        }
        flags = q.attach_mode == XDP_ATTACHED_SKB ? XDP_FLAGS_SKB_MODE
                : q.attach_mode == XDP_ATTACHED_DRV ? XDP_FLAGS_DRV_MODE
                                                     : 0;
      }
      int rc = bpf_xdp_detach(t_.ifindex, flags, nullptr);
      if (rc) {
        what_ = "detach xdp";
        return -rc;
      }
    }
    q_ = {};
    q_.sz = sizeof(q_);
    int rc = bpf_xdp_query(t_.ifindex, 0, &q_);
    if (rc) {
      what_ = "query xdp";
      return -rc;
    }
    return 0;
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_) {
      std::string w = (what_.empty() ? std::string(op_ == kAttach ? "attach xdp" : "detach xdp") : what_);
      deferred_.Reject(MakeError(env, w + " " + (op_ == kAttach ? "to " : "from ") + Describe(t_), err_, log_).Value());
      return;
    }
    deferred_.Resolve(QueryResult(env, t_, q_));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 private:
  Op op_;
  Target t_;
  int progFd_;
  std::string mode_;
  int oldFd_;
  Napi::Promise::Deferred deferred_;
  int err_ = 0;
  std::string what_, log_;
  bpf_xdp_query_opts q_{};
};

std::string ParseMode(Napi::Env env, Napi::Object o) {
  Napi::Value m = o.Get("mode");
  if (IsNullish(m)) return "auto";
  if (!m.IsString()) throw Napi::TypeError::New(env, "mode must be \"native\", \"generic\" or \"auto\"");
  std::string s = m.As<Napi::String>().Utf8Value();
  if (s != "native" && s != "generic" && s != "auto")
    throw Napi::TypeError::New(env, "mode must be \"native\", \"generic\" or \"auto\", got \"" + s + "\"");
  return s;
}

// xdpAttach({ifname|ifindex, netns?, progFd, mode?, oldProgFd?}) -> Promise<query>
Napi::Value XdpAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  Target t = ParseTarget(env, o);
  if (!o.Get("progFd").IsNumber()) throw Napi::TypeError::New(env, "progFd must be a number");
  int fd = o.Get("progFd").As<Napi::Number>().Int32Value();
  int old = o.Get("oldProgFd").IsNumber() ? o.Get("oldProgFd").As<Napi::Number>().Int32Value() : -1;
  auto* w = new XdpWorker(env, XdpWorker::kAttach, t, fd, ParseMode(env, o), old);
  auto p = w->Promise();
  w->Queue();
  return p;
}

// xdpDetach({ifname|ifindex, netns?, mode?}) -> Promise<query>
Napi::Value XdpDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  Target t = ParseTarget(env, o);
  auto* w = new XdpWorker(env, XdpWorker::kDetach, t, -1, ParseMode(env, o), -1);
  auto p = w->Promise();
  w->Queue();
  return p;
}

// xdpQuery({ifname|ifindex, netns?}) -> {ifindex, progId, drvProgId, skbProgId, hwProgId, mode}
Napi::Value XdpQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Target t = ParseTarget(env, info[0].As<Napi::Object>());
  LIBBPF_OPTS(bpf_xdp_query_opts, q);
  std::string what;
  LibbpfLogReset();
  int err = WithNetns(t.netns, [&]() {
    int e = Resolve(t);
    if (e) {
      what = "resolve interface";
      return e;
    }
    int rc = bpf_xdp_query(t.ifindex, 0, &q);
    if (rc) what = "query xdp";
    return -rc;
  }, &what);
  if (err) ThrowErrno(env, (what.empty() ? "query xdp" : what) + " on " + Describe(t), err);
  return QueryResult(env, t, q);
}

// ifNameToIndex(name, netns?) -> number
Napi::Value IfNameToIndex(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Target t;
  t.ifname = ArgString(info, 0, "name");
  if (info.Length() > 1 && info[1].IsString()) t.netns = info[1].As<Napi::String>().Utf8Value();
  std::string what;
  int err = WithNetns(t.netns, [&]() { return Resolve(t); }, &what);
  if (err) ThrowErrno(env, (what.empty() ? "resolve interface" : what) + " " + Describe(t), err);
  return Napi::Number::New(env, t.ifindex);
}

}  // namespace

void InitAttach(Napi::Env env, Napi::Object exports) {
  exports.Set("xdpAttach", Napi::Function::New(env, XdpAttach));
  exports.Set("xdpDetach", Napi::Function::New(env, XdpDetach));
  exports.Set("xdpQuery", Napi::Function::New(env, XdpQuery));
  exports.Set("ifNameToIndex", Napi::Function::New(env, IfNameToIndex));
}

}  // namespace peak
