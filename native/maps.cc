// Map and fd calls: create, info, pin/get, lookup/update/delete/next-key, batch ops, close (and mallocTrim).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <malloc.h>
#include <linux/membarrier.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <v8.h>

#include "common.h"

namespace peak {

namespace {

int NewFd(Napi::Env env, int fd, const std::string& what) {
  if (fd < 0) ThrowErrno(env, what, errno);
  TrackFd(env, fd);
  return fd;
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info, 0, "fd");
  if (fd < 0) throw Napi::TypeError::New(info.Env(), "fd must be >= 0");
  UntrackFd(fd);
  if (close(fd) != 0) ThrowErrno(info.Env(), "close fd " + std::to_string(fd), errno);
  return info.Env().Undefined();
}

// freeArrayBuffer(buffer) -> the bytes it held: detaches a plain ArrayBuffer, whose memory is then freed at once (V8
// drops its backing store), not at some later garbage collection. Every view of it reads as empty afterwards: only
// for a buffer no code uses any more (a table buffer the Maglev pool lets go). 0 for a buffer already detached; a
// TypeError for anything else, or for a buffer that cannot be detached (e.g. a Wasm memory's).
Napi::Value FreeArrayBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) throw Napi::TypeError::New(env, "buffer must be an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.IsDetached()) return Napi::Number::New(env, 0);
  size_t bytes = ab.ByteLength();
  ab.Detach();
  return Napi::Number::New(env, static_cast<double>(bytes));
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) ThrowErrno(info.Env(), "count possible cpus", n);
  return Napi::Number::New(info.Env(), n);
}

// mallocTrim() -> whether it ran: glibc's malloc_trim(0), which gives the free memory of every malloc arena back to
// the kernel (the arenas of threads that ended keep theirs otherwise). False where the C library has none.
Napi::Value MallocTrim(const Napi::CallbackInfo& info) {
#ifdef __GLIBC__
  malloc_trim(0);
  return Napi::Boolean::New(info.Env(), true);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

// memoryPressure() -> undefined: tells V8 (the calling thread's isolate) that its heap is worth collecting now, at
// MemoryPressureLevel::kModerate: V8 starts incremental marking with its reduce-memory flag (marking on its helper
// threads and in short steps on this one, then a short atomic finish), not the full, blocking collection that gc() or
// kCritical run. The one call here that is V8's C++ API rather than Node-API: its two symbols
// (v8::Isolate::GetCurrent, v8::Isolate::MemoryPressureNotification) are exported by Node 20 and 24 alike
// (test/unit/bpf-mmap.test.ts runs it on both).
Napi::Value MemoryPressure(const Napi::CallbackInfo& info) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  if (isolate != nullptr) isolate->MemoryPressureNotification(v8::MemoryPressureLevel::kModerate);
  return info.Env().Undefined();
}

// mallocMmapThreshold(bytes) -> whether it was set: glibc's mallopt(M_MMAP_THRESHOLD, bytes). Allocations of `bytes`
// and more are mapped on their own and unmapped when freed. Setting it also ends glibc's dynamic threshold, which
// the first free of a large mapped block raises to that block's size (up to 32 MiB), after which such blocks are
// carved from the malloc arenas and stay there. False where the C library is not glibc or refuses the value.
Napi::Value MallocMmapThreshold(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "bytes must be a number");
  double bytes = info[0].As<Napi::Number>().DoubleValue();
  if (!(bytes >= 0 && bytes <= 32.0 * 1024 * 1024) || bytes != static_cast<double>(static_cast<int>(bytes)))
    throw Napi::RangeError::New(env, "bytes: " + std::to_string(bytes) + " is not an integer from 0 to 32 MiB");
#ifdef __GLIBC__
  return Napi::Boolean::New(env, mallopt(M_MMAP_THRESHOLD, static_cast<int>(bytes)) == 1);
#else
  return Napi::Boolean::New(env, false);
#endif
}

// mapCreate({type, keySize, valueSize, maxEntries, name?, flags?, innerMapFd?}) -> fd
Napi::Value MapCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto num = [&](const char* k, bool required, uint32_t dflt) -> uint32_t {
    Napi::Value v = o.Get(k);
    if (IsNullish(v)) {
      if (required) throw Napi::TypeError::New(env, std::string(k) + " is required");
      return dflt;
    }
    if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(k) + " must be a number");
    return v.As<Napi::Number>().Uint32Value();
  };
  uint32_t type = num("type", true, 0), ks = num("keySize", true, 0), vs = num("valueSize", true, 0);
  uint32_t max = num("maxEntries", true, 0), flags = num("flags", false, 0);
  Napi::Value inner = o.Get("innerMapFd");
  std::string name;
  if (o.Get("name").IsString()) name = o.Get("name").As<Napi::String>().Utf8Value();
  LIBBPF_OPTS(bpf_map_create_opts, opts);
  opts.map_flags = flags;
  if (!IsNullish(inner)) opts.inner_map_fd = inner.As<Napi::Number>().Int32Value();
  LibbpfLogReset();
  int fd = bpf_map_create((enum bpf_map_type)type, name.empty() ? nullptr : name.c_str(), ks, vs, max, &opts);
  if (fd < 0) ThrowErrno(env, "create map " + (name.empty() ? std::string("(anonymous)") : name), -fd);
  TrackFd(env, fd);
  return Napi::Number::New(env, fd);
}

Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  struct bpf_map_info mi;
  memset(&mi, 0, sizeof(mi));
  uint32_t len = sizeof(mi);
  int err = bpf_obj_get_info_by_fd(fd, &mi, &len);
  if (err) ThrowErrno(env, "map info of fd " + std::to_string(fd), errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", mi.id);
  o.Set("type", mi.type);
  const char* tn = libbpf_bpf_map_type_str((enum bpf_map_type)mi.type);
  o.Set("typeName", tn ? tn : "unknown");
  o.Set("keySize", mi.key_size);
  o.Set("valueSize", mi.value_size);
  o.Set("maxEntries", mi.max_entries);
  o.Set("flags", mi.map_flags);
  o.Set("name", mi.name);
  return o;
}

Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  struct bpf_prog_info pi;
  memset(&pi, 0, sizeof(pi));
  uint32_t len = sizeof(pi);
  int err = bpf_obj_get_info_by_fd(fd, &pi, &len);
  if (err) ThrowErrno(env, "program info of fd " + std::to_string(fd), errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", pi.id);
  o.Set("type", pi.type);
  const char* tn = libbpf_bpf_prog_type_str((enum bpf_prog_type)pi.type);
  o.Set("typeName", tn ? tn : "unknown");
  o.Set("name", pi.name);
  char tag[17];
  for (int i = 0; i < 8; i++) snprintf(tag + 2 * i, 3, "%02x", pi.tag[i]);
  o.Set("tag", tag);
  o.Set("runTimeNs", Napi::Number::New(env, (double)pi.run_time_ns));
  o.Set("runCount", Napi::Number::New(env, (double)pi.run_cnt));
  o.Set("btfId", pi.btf_id);
  return o;
}

Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  std::string path = ArgString(info, 1, "path");
  LibbpfLogReset();
  if (bpf_obj_pin(fd, path.c_str()) != 0) ThrowErrno(env, "pin to " + path, errno);
  return env.Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  LibbpfLogReset();
  return Napi::Number::New(env, NewFd(env, bpf_obj_get(path.c_str()), "open pinned object " + path));
}

// fdById("map"|"prog", id) -> fd
Napi::Value FdById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string kind = ArgString(info, 0, "kind");
  uint32_t id = ArgU32(info, 1, "id");
  int fd;
  if (kind == "map")
    fd = bpf_map_get_fd_by_id(id);
  else if (kind == "prog")
    fd = bpf_prog_get_fd_by_id(id);
  else
    throw Napi::TypeError::New(env, "kind must be \"map\" or \"prog\"");
  return Napi::Number::New(env, NewFd(env, fd, kind + " by id " + std::to_string(id)));
}

// mapLookup(fd, key, valueSize[, flags]) -> Buffer | null
Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  auto key = ArgBuffer(info, 1, "key");
  uint32_t vs = ArgU32(info, 2, "valueSize");
  uint64_t flags = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : 0;
  auto out = Napi::Buffer<uint8_t>::New(env, vs);
  int err = bpf_map_lookup_elem_flags(fd, key.Data(), out.Data(), flags);
  if (err) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, "map lookup (fd " + std::to_string(fd) + ")", errno);
  }
  return out;
}

Napi::Value MapLookupAndDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  auto key = ArgBuffer(info, 1, "key");
  uint32_t vs = ArgU32(info, 2, "valueSize");
  auto out = Napi::Buffer<uint8_t>::New(env, vs);
  if (bpf_map_lookup_and_delete_elem(fd, key.Data(), out.Data()) != 0) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, "map lookup-and-delete (fd " + std::to_string(fd) + ")", errno);
  }
  return out;
}

// mapUpdate(fd, key, value, flags)
Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  auto key = ArgBuffer(info, 1, "key");
  auto val = ArgBuffer(info, 2, "value");
  uint64_t flags = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : 0;
  if (bpf_map_update_elem(fd, key.Data(), val.Data(), flags) != 0)
    ThrowErrno(env, "map update (fd " + std::to_string(fd) + ")", errno);
  return env.Undefined();
}

// mapDelete(fd, key) -> bool (false when absent)
Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  auto key = ArgBuffer(info, 1, "key");
  if (bpf_map_delete_elem(fd, key.Data()) != 0) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    ThrowErrno(env, "map delete (fd " + std::to_string(fd) + ")", errno);
  }
  return Napi::Boolean::New(env, true);
}

// mapNextKey(fd, key | null, keySize) -> Buffer | null
Napi::Value MapNextKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  uint32_t ks = ArgU32(info, 2, "keySize");
  const void* cur = nullptr;
  if (!IsNullish(info[1])) cur = ArgBuffer(info, 1, "key").Data();
  auto out = Napi::Buffer<uint8_t>::New(env, ks);
  if (bpf_map_get_next_key(fd, cur, out.Data()) != 0) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, "map next key (fd " + std::to_string(fd) + ")", errno);
  }
  return out;
}

// mapLookupBatch(fd, inBatch | null, count, keySize, valueSize, deleteToo)
//   -> {count, keys, values, next: Buffer, done}
Napi::Value MapLookupBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  uint32_t count = ArgU32(info, 2, "count");
  uint32_t ks = ArgU32(info, 3, "keySize");
  uint32_t vs = ArgU32(info, 4, "valueSize");
  bool del = info.Length() > 5 && info[5].ToBoolean();
  // The batch token is opaque: a key for arrays, a bucket index for hashes; size it for both.
  size_t tokSize = ks > 8 ? ks : 8;
  std::vector<uint8_t> inTok;
  const void* in = nullptr;
  if (!IsNullish(info[1])) {
    auto b = ArgBuffer(info, 1, "inBatch");
    inTok.assign(b.Data(), b.Data() + b.Length());
    inTok.resize(tokSize);
    in = inTok.data();
  }
  auto next = Napi::Buffer<uint8_t>::New(env, tokSize);
  memset(next.Data(), 0, tokSize);
  auto keys = Napi::Buffer<uint8_t>::New(env, (size_t)ks * count);
  auto vals = Napi::Buffer<uint8_t>::New(env, (size_t)vs * count);
  uint32_t n = count;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  int err = del ? bpf_map_lookup_and_delete_batch(fd, const_cast<void*>(in), next.Data(), keys.Data(), vals.Data(), &n, &opts)
                : bpf_map_lookup_batch(fd, const_cast<void*>(in), next.Data(), keys.Data(), vals.Data(), &n, &opts);
  bool done = false;
  if (err) {
    if (errno == ENOENT) {
      done = true;
    } else {
      ThrowErrno(env, std::string("map ") + (del ? "lookup-and-delete" : "lookup") + " batch (fd " + std::to_string(fd) + ")", errno);
    }
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("count", n);
  o.Set("keys", Napi::Buffer<uint8_t>::Copy(env, keys.Data(), (size_t)ks * n));
  o.Set("values", Napi::Buffer<uint8_t>::Copy(env, vals.Data(), (size_t)vs * n));
  o.Set("next", next);
  o.Set("done", done);
  return o;
}

// mapUpdateBatch(fd, keys, values, count, flags) -> count
Napi::Value MapUpdateBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  auto keys = ArgBuffer(info, 1, "keys");
  auto vals = ArgBuffer(info, 2, "values");
  uint32_t n = ArgU32(info, 3, "count");
  uint64_t flags = info.Length() > 4 && info[4].IsNumber() ? info[4].As<Napi::Number>().Int64Value() : 0;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  opts.elem_flags = flags;
  uint32_t done = n;
  if (bpf_map_update_batch(fd, keys.Data(), vals.Data(), &done, &opts) != 0)
    ThrowErrno(env, "map update batch (fd " + std::to_string(fd) + ", " + std::to_string(done) + "/" + std::to_string(n) + " done)", errno);
  return Napi::Number::New(env, done);
}

// A worker's own copy of the map fd, taken when the call is made: the caller's fd may be closed (and its number
// reused by another object) before the pool runs the call. -1 with *err set (EBADF) when `fd` is not open, which
// the worker reports as the syscall would have.
int DupFd(int fd, int* err) {
  int own = fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) *err = fd < 0 ? EBADF : errno;
  return own;
}

// The batch update of mapUpdateBatchAsync, on a thread of the pool: an update of a map-in-map waits for an RCU
// grace period (~10 ms, up to 200 ms under load) before the syscall returns, time the event loop keeps.
class UpdateBatchWorker : public Napi::AsyncWorker {
 public:
  UpdateBatchWorker(Napi::Env env, int fd, Napi::Buffer<uint8_t> keys, Napi::Buffer<uint8_t> vals, uint32_t n,
                    uint64_t flags)
      : Napi::AsyncWorker(env), fd_(fd), n_(n), done_(n), flags_(flags), keysData_(keys.Data()),
        valsData_(vals.Data()), keys_(Napi::Persistent(keys)), vals_(Napi::Persistent(vals)),
        deferred_(Napi::Promise::Deferred::New(env)), own_(DupFd(fd, &err_)) {}

  void Execute() override {
    LibbpfLogReset();
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    opts.elem_flags = flags_;
    if (own_ >= 0 && bpf_map_update_batch(own_, keysData_, valsData_, &done_, &opts) != 0) err_ = errno;
    if (own_ >= 0) close(own_);
    // the log is per thread: taken here, where the call ran
    if (err_ != 0) log_ = LibbpfLogTake();
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      // the same message as mapUpdateBatch's
      deferred_.Reject(MakeError(env,
                                 "map update batch (fd " + std::to_string(fd_) + ", " + std::to_string(done_) + "/" +
                                     std::to_string(n_) + " done)",
                                 err_, log_)
                           .Value());
      return;
    }
    deferred_.Resolve(Napi::Number::New(env, done_));
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 private:
  int fd_;
  uint32_t n_, done_;
  uint64_t flags_;
  const uint8_t* keysData_;
  const uint8_t* valsData_;
  // hold the buffers (and so the memory the syscall reads) until the worker is done
  Napi::Reference<Napi::Buffer<uint8_t>> keys_, vals_;
  Napi::Promise::Deferred deferred_;
  int err_ = 0;
  int own_;
  std::string log_;
};

// mapUpdateBatchAsync(fd, keys, values, count, flags) -> Promise<count>: mapUpdateBatch on a thread of the pool.
// The fds in `values` (map-in-map) and `fd` must stay open until the promise settles.
Napi::Value MapUpdateBatchAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  auto keys = ArgBuffer(info, 1, "keys");
  auto vals = ArgBuffer(info, 2, "values");
  uint32_t n = ArgU32(info, 3, "count");
  uint64_t flags = info.Length() > 4 && info[4].IsNumber() ? info[4].As<Napi::Number>().Int64Value() : 0;
  auto* w = new UpdateBatchWorker(env, fd, keys, vals, n, flags);
  auto p = w->Promise();
  w->Queue();
  return p;
}

// mapDelete on a thread of the pool: deleting a slot of a map-in-map waits for an RCU grace period too.
class DeleteWorker : public Napi::AsyncWorker {
 public:
  DeleteWorker(Napi::Env env, int fd, Napi::Buffer<uint8_t> key)
      : Napi::AsyncWorker(env), fd_(fd), keyData_(key.Data()), key_(Napi::Persistent(key)),
        deferred_(Napi::Promise::Deferred::New(env)), own_(DupFd(fd, &err_)) {}

  void Execute() override {
    LibbpfLogReset();
    if (own_ >= 0 && bpf_map_delete_elem(own_, keyData_) != 0) err_ = errno;
    if (own_ >= 0) close(own_);
    if (err_ != 0 && err_ != ENOENT) log_ = LibbpfLogTake();
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0 && err_ != ENOENT) {
      // the same message as mapDelete's
      deferred_.Reject(MakeError(env, "map delete (fd " + std::to_string(fd_) + ")", err_, log_).Value());
      return;
    }
    deferred_.Resolve(Napi::Boolean::New(env, err_ == 0));
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 private:
  int fd_;
  const uint8_t* keyData_;
  Napi::Reference<Napi::Buffer<uint8_t>> key_;
  Napi::Promise::Deferred deferred_;
  int err_ = 0;
  int own_;
  std::string log_;
};

// mapDeleteAsync(fd, key) -> Promise<bool> (false when absent): mapDelete on a thread of the pool.
Napi::Value MapDeleteAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  auto key = ArgBuffer(info, 1, "key");
  auto* w = new DeleteWorker(env, fd, key);
  auto p = w->Promise();
  w->Queue();
  return p;
}

// An RCU grace period, from user space: membarrier(MEMBARRIER_CMD_GLOBAL) is synchronize_rcu() in the kernel (on
// more than one online CPU), the wait a map-in-map update makes (maybe_wait_bpf_programs) so that no BPF program
// that began before it still runs. Not with nohz_full CPUs (the kernel refuses the command there).
bool RcuGraceSupported() {
  long mask = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  return mask >= 0 && (mask & MEMBARRIER_CMD_GLOBAL) != 0;
}

// rcuGraceSupported() -> whether rcuGraceAsync can wait (the kernel offers MEMBARRIER_CMD_GLOBAL).
Napi::Value RcuGraceSupportedFn(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), RcuGraceSupported());
}

class RcuGraceWorker : public Napi::AsyncWorker {
 public:
  explicit RcuGraceWorker(Napi::Env env)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}

  void Execute() override {
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0) err_ = errno;
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      deferred_.Reject(MakeError(env, "membarrier(MEMBARRIER_CMD_GLOBAL)", err_).Value());
      return;
    }
    deferred_.Resolve(env.Undefined());
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 private:
  Napi::Promise::Deferred deferred_;
  int err_ = 0;
};

// rcuGraceAsync() -> Promise<void>: resolves after an RCU grace period (waited on a thread of the pool).
Napi::Value RcuGraceAsync(const Napi::CallbackInfo& info) {
  auto* w = new RcuGraceWorker(info.Env());
  auto p = w->Promise();
  w->Queue();
  return p;
}

// mapDeleteBatch(fd, keys, count) -> count
Napi::Value MapDeleteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  auto keys = ArgBuffer(info, 1, "keys");
  uint32_t n = ArgU32(info, 2, "count");
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  uint32_t done = n;
  if (bpf_map_delete_batch(fd, keys.Data(), &done, &opts) != 0)
    ThrowErrno(env, "map delete batch (fd " + std::to_string(fd) + ", " + std::to_string(done) + "/" + std::to_string(n) + " done)", errno);
  return Napi::Number::New(env, done);
}

}  // namespace

void InitMaps(Napi::Env env, Napi::Object exports) {
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus));
  exports.Set("mallocTrim", Napi::Function::New(env, MallocTrim));
  exports.Set("memoryPressure", Napi::Function::New(env, MemoryPressure));
  exports.Set("freeArrayBuffer", Napi::Function::New(env, FreeArrayBuffer));
  exports.Set("mallocMmapThreshold", Napi::Function::New(env, MallocMmapThreshold));
  exports.Set("mapCreate", Napi::Function::New(env, MapCreate));
  exports.Set("mapInfo", Napi::Function::New(env, MapInfo));
  exports.Set("progInfo", Napi::Function::New(env, ProgInfo));
  exports.Set("objPin", Napi::Function::New(env, ObjPin));
  exports.Set("objGet", Napi::Function::New(env, ObjGet));
  exports.Set("fdById", Napi::Function::New(env, FdById));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup));
  exports.Set("mapLookupAndDelete", Napi::Function::New(env, MapLookupAndDelete));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete));
  exports.Set("mapDeleteAsync", Napi::Function::New(env, MapDeleteAsync));
  exports.Set("rcuGraceSupported", Napi::Function::New(env, RcuGraceSupportedFn));
  exports.Set("rcuGraceAsync", Napi::Function::New(env, RcuGraceAsync));
  exports.Set("mapNextKey", Napi::Function::New(env, MapNextKey));
  exports.Set("mapLookupBatch", Napi::Function::New(env, MapLookupBatch));
  exports.Set("mapUpdateBatch", Napi::Function::New(env, MapUpdateBatch));
  exports.Set("mapUpdateBatchAsync", Napi::Function::New(env, MapUpdateBatchAsync));
  exports.Set("mapDeleteBatch", Napi::Function::New(env, MapDeleteBatch));
  InitMmap(env, exports);
}

}  // namespace peak
