// BpfObject: open an ELF object, set const volatile globals, load (async), list and hand out programs/maps.
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <mutex>
#include <set>

#include "common.h"

namespace peak {

namespace {

class BpfObject;
std::mutex objMu;
std::set<BpfObject*> liveObjects;

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BpfObject",
                       {
                           InstanceMethod("setConst", &BpfObject::SetConst),
                           InstanceMethod("listConsts", &BpfObject::ListConsts),
                           InstanceMethod("load", &BpfObject::Load),
                           InstanceMethod("programs", &BpfObject::Programs),
                           InstanceMethod("maps", &BpfObject::Maps),
                           InstanceMethod("programFd", &BpfObject::ProgramFd),
                           InstanceMethod("mapFd", &BpfObject::MapFd),
                           InstanceMethod("setMapMaxEntries", &BpfObject::SetMapMaxEntries),
                           InstanceMethod("reuseMapFd", &BpfObject::ReuseMapFd),
                           InstanceMethod("close", &BpfObject::Close),
                       });
  }

  // new BpfObject(path)
  explicit BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {
    std::string path = ArgString(info, 0, "path");
    path_ = path;
    env_ = info.Env();
    LibbpfLogReset();
    struct bpf_object* o = bpf_object__open_file(path.c_str(), nullptr);
    int err = libbpf_get_error(o);
    if (err) ThrowErrno(info.Env(), "open bpf object " + path, err);
    obj_ = o;
    std::lock_guard<std::mutex> g(objMu);
    liveObjects.insert(this);
  }

  ~BpfObject() override { Release(); }

  void Release() {
    // Called from the finalizer, close() or the env cleanup hook; safe to call twice.
    std::lock_guard<std::mutex> g(objMu);
    if (obj_) {
      bpf_object__close(obj_);
      obj_ = nullptr;
    }
    liveObjects.erase(this);
  }

  // Releases the objects created in `env` (its cleanup hook): another thread's objects stay loaded.
  static void CloseAll(napi_env env) {
    std::set<BpfObject*> copy;
    {
      std::lock_guard<std::mutex> g(objMu);
      for (auto* o : liveObjects)
        if (o->env_ == env) copy.insert(o);
    }
    for (auto* o : copy) o->Release();
  }

 private:
  struct bpf_object* Need(Napi::Env env) {
    if (!obj_) throw Napi::Error::New(env, "bpf object " + path_ + " is closed");
    return obj_;
  }

  // Locates a variable of .rodata by name via BTF; returns false if absent.
  bool FindConst(const std::string& name, struct bpf_map** mapOut, uint32_t* off, uint32_t* size) {
    struct btf* btf = bpf_object__btf(obj_);
    if (!btf) return false;
    struct bpf_map* map;
    bpf_object__for_each_map(map, obj_) {
      const char* mname = bpf_map__name(map);
      if (!strstr(mname, ".rodata")) continue;
      int secId = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
      if (secId < 0) continue;
      const struct btf_type* sec = btf__type_by_id(btf, secId);
      const struct btf_var_secinfo* vs = btf_var_secinfos(sec);
      for (int i = 0; i < btf_vlen(sec); i++, vs++) {
        const struct btf_type* var = btf__type_by_id(btf, vs->type);
        if (name == btf__name_by_offset(btf, var->name_off)) {
          *mapOut = map;
          *off = vs->offset;
          *size = vs->size;
          return true;
        }
      }
    }
    return false;
  }

  // setConst(name, Buffer): writes a const volatile global before load.
  Napi::Value SetConst(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info, 0, "name");
    auto buf = ArgBuffer(info, 1, "value");
    Need(env);
    if (loaded_) throw Napi::Error::New(env, "setConst " + name + ": object already loaded");
    struct bpf_map* map = nullptr;
    uint32_t off = 0, size = 0;
    if (!FindConst(name, &map, &off, &size))
      throw MakeError(env, "setConst " + name + ": no such const volatile variable in " + path_, ENOENT);
    if (buf.Length() != size)
      throw Napi::TypeError::New(env, "setConst " + name + ": value must be " + std::to_string(size) +
                                          " bytes, got " + std::to_string(buf.Length()));
    size_t total = 0;
    void* data = const_cast<void*>(bpf_map__initial_value(map, &total));
    if (!data || off + size > total) throw MakeError(env, "setConst " + name, EINVAL);
    memcpy((uint8_t*)data + off, buf.Data(), size);
    return env.Undefined();
  }

  // listConsts(): [{name, offset, size}]
  Napi::Value ListConsts(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Need(env);
    Napi::Array out = Napi::Array::New(env);
    struct btf* btf = bpf_object__btf(obj_);
    if (!btf) return out;
    int secId = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
    if (secId < 0) return out;
    const struct btf_type* sec = btf__type_by_id(btf, secId);
    const struct btf_var_secinfo* vs = btf_var_secinfos(sec);
    for (int i = 0; i < btf_vlen(sec); i++, vs++) {
      const struct btf_type* var = btf__type_by_id(btf, vs->type);
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", btf__name_by_offset(btf, var->name_off));
      o.Set("offset", vs->offset);
      o.Set("size", vs->size);
      out.Set(out.Length(), o);
    }
    return out;
  }

  class LoadWorker : public Napi::AsyncWorker {
   public:
    LoadWorker(Napi::Env env, BpfObject* self, Napi::Object ref)
        : Napi::AsyncWorker(env), self_(self), deferred_(Napi::Promise::Deferred::New(env)) {
      ref_ = Napi::Persistent(ref);
    }
    void Execute() override {
      LibbpfLogReset();
      err_ = bpf_object__load(self_->obj_);
      log_ = LibbpfLogTake();
    }
    void OnOK() override {
      Napi::Env env = Env();
      if (err_) {
        deferred_.Reject(MakeError(env, "load bpf object " + self_->path_, err_, log_).Value());
      } else {
        self_->loaded_ = true;
        deferred_.Resolve(env.Undefined());
      }
    }
    Napi::Promise Promise() { return deferred_.Promise(); }

   private:
    BpfObject* self_;
    Napi::Promise::Deferred deferred_;
    Napi::ObjectReference ref_;
    int err_ = 0;
    std::string log_;
  };

  // load(): Promise<void>
  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Need(env);
    if (loaded_) throw Napi::Error::New(env, "load " + path_ + ": already loaded");
    auto* w = new LoadWorker(env, this, info.This().As<Napi::Object>());
    auto p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value Programs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Need(env);
    Napi::Array out = Napi::Array::New(env);
    struct bpf_program* p;
    bpf_object__for_each_program(p, obj_) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_program__name(p));
      o.Set("section", bpf_program__section_name(p));
      o.Set("type", (int)bpf_program__type(p));
      const char* tn = libbpf_bpf_prog_type_str(bpf_program__type(p));
      o.Set("typeName", tn ? tn : "unknown");
      out.Set(out.Length(), o);
    }
    return out;
  }

  Napi::Value Maps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Need(env);
    Napi::Array out = Napi::Array::New(env);
    struct bpf_map* m;
    bpf_object__for_each_map(m, obj_) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_map__name(m));
      o.Set("type", (int)bpf_map__type(m));
      const char* tn = libbpf_bpf_map_type_str(bpf_map__type(m));
      o.Set("typeName", tn ? tn : "unknown");
      o.Set("keySize", bpf_map__key_size(m));
      o.Set("valueSize", bpf_map__value_size(m));
      o.Set("maxEntries", bpf_map__max_entries(m));
      o.Set("flags", bpf_map__map_flags(m));
      out.Set(out.Length(), o);
    }
    return out;
  }

  // programFd(name): a dup'ed fd the caller owns (tracked), valid after load.
  Napi::Value ProgramFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info, 0, "name");
    Need(env);
    struct bpf_program* p = bpf_object__find_program_by_name(obj_, name.c_str());
    if (!p) throw MakeError(env, "program " + name + " in " + path_, ENOENT);
    int fd = bpf_program__fd(p);
    if (fd < 0) throw MakeError(env, "program " + name + " in " + path_ + " (not loaded)", EBADF);
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0) ThrowErrno(env, "dup program fd", errno);
    TrackFd(env, d);
    return Napi::Number::New(env, d);
  }

  Napi::Value MapFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info, 0, "name");
    Need(env);
    struct bpf_map* m = bpf_object__find_map_by_name(obj_, name.c_str());
    if (!m) throw MakeError(env, "map " + name + " in " + path_, ENOENT);
    int fd = bpf_map__fd(m);
    if (fd < 0) throw MakeError(env, "map " + name + " in " + path_ + " (not loaded)", EBADF);
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0) ThrowErrno(env, "dup map fd", errno);
    TrackFd(env, d);
    return Napi::Number::New(env, d);
  }

  // setMapMaxEntries(name, n): before load (sizes configurable without recompiling).
  Napi::Value SetMapMaxEntries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info, 0, "name");
    uint32_t n = ArgU32(info, 1, "maxEntries");
    Need(env);
    struct bpf_map* m = bpf_object__find_map_by_name(obj_, name.c_str());
    if (!m) throw MakeError(env, "map " + name + " in " + path_, ENOENT);
    LibbpfLogReset();
    int err = bpf_map__set_max_entries(m, n);
    if (err) ThrowErrno(env, "set max_entries of map " + name, err);
    return env.Undefined();
  }

  // reuseMapFd(name, fd): before load, use an existing (e.g. pinned) map instead of creating one.
  Napi::Value ReuseMapFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info, 0, "name");
    int fd = ArgInt(info, 1, "fd");
    Need(env);
    struct bpf_map* m = bpf_object__find_map_by_name(obj_, name.c_str());
    if (!m) throw MakeError(env, "map " + name + " in " + path_, ENOENT);
    LibbpfLogReset();
    int err = bpf_map__reuse_fd(m, fd);
    if (err) ThrowErrno(env, "reuse fd for map " + name, err);
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  struct bpf_object* obj_ = nullptr;
  std::string path_;
  // The environment (main thread or worker) this object belongs to.
  napi_env env_ = nullptr;
  bool loaded_ = false;
};

}  // namespace

void InitObject(Napi::Env env, Napi::Object exports) {
  exports.Set("BpfObject", BpfObject::Define(env));
  napi_env self = env;
  env.AddCleanupHook([self]() { BpfObject::CloseAll(self); });
}

}  // namespace peak
