// Values of a BPF_F_MMAPABLE array map through mmap (also new maps created and filled in one call, off the
// event loop), and map definitions read from BTF (an object file's or a loaded program's). Every mapping is
// made and removed inside one call: none outlives it.
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "common.h"

namespace peak {

namespace {

// An array map's mmap area holds element i at i * round_up(value_size, 8) (kernel/bpf/arraymap.c elem_size). Its
// values are read and written as u32 words: word w is word w % (value_size / 4) of element w / (value_size / 4).
// 4-byte values leave a 4-byte gap after each word; values of a multiple of 8 bytes make the area a dense array of
// words (what Maglev tables of 64-byte lines are: bpf/maps.h).
struct WordLayout {
  uint32_t perElem = 1;  // words per element
  size_t elemSize = 8;   // bytes per element in the area
  size_t Offset(uint64_t w) const { return (size_t)(w / perElem) * elemSize + (size_t)(w % perElem) * 4; }
  bool Dense() const { return elemSize == (size_t)perElem * 4; }
};

// The word layout of values of `valueSize` bytes; false when they are not words (4 bytes, or a multiple of 8).
bool WordLayoutOf(uint32_t valueSize, WordLayout* out) {
  if (valueSize == 4) {
    *out = {1, 8};
    return true;
  }
  if (valueSize == 0 || valueSize % 8 != 0) return false;
  *out = {valueSize / 4, valueSize};
  return true;
}

struct MmapArea {
  uint8_t* base = nullptr;  // the mapping (page-aligned)
  size_t length = 0;
  uint8_t* first = nullptr;  // word `first` inside it
  WordLayout layout;
  uint64_t firstWord = 0;
  ~MmapArea() {
    if (base != nullptr) munmap(base, length);
  }
  uint8_t* Word(uint64_t i) const { return first + (layout.Offset(firstWord + i) - layout.Offset(firstWord)); }
};

// Copies n words between the caller's array and the area from its first word (to the area when `toArea`).
void CopyWords(const MmapArea& a, uint32_t* words, size_t n, bool toArea) {
  if (a.layout.Dense()) {
    if (toArea) memcpy(a.first, words, n * 4);
    else memcpy(words, a.first, n * 4);
    return;
  }
  for (size_t i = 0; i < n; i++)
    if (toArea) memcpy(a.Word(i), words + i, 4);
    else memcpy(words + i, a.Word(i), 4);
}

// Checks that `fd` is an mmap-able array whose values are words (WordLayoutOf) holding words [first, first + count)
// and maps them (`countField` names the argument that gave `count` in errors).
void MapU32s(Napi::Env env, int fd, uint32_t first, uint32_t count, const char* countField, bool write,
             MmapArea* out) {
  struct bpf_map_info mi;
  memset(&mi, 0, sizeof(mi));
  uint32_t len = sizeof(mi);
  if (bpf_obj_get_info_by_fd(fd, &mi, &len) != 0) ThrowErrno(env, "map info of fd " + std::to_string(fd), errno);
  std::string name = std::string("map ") + mi.name + " (id " + std::to_string(mi.id) + ")";
  if (mi.type != BPF_MAP_TYPE_ARRAY) throw Napi::TypeError::New(env, "fd: " + name + " is not an array map");
  if (!(mi.map_flags & BPF_F_MMAPABLE))
    throw Napi::TypeError::New(env, "fd: " + name + " was created without BPF_F_MMAPABLE");
  if (!WordLayoutOf(mi.value_size, &out->layout))
    throw Napi::TypeError::New(env, "fd: " + name + " has " + std::to_string(mi.value_size) +
                                        "-byte values, not u32 words (4 bytes or a multiple of 8)");
  uint64_t words = (uint64_t)mi.max_entries * out->layout.perElem;
  if (first > words)
    throw Napi::RangeError::New(env, "first: " + std::to_string(first) + " is beyond " + name + "'s " +
                                         std::to_string(words) + " words");
  if (count > words - first)
    throw Napi::RangeError::New(env, std::string(countField) + ": " + std::to_string(count) + " words from " +
                                         std::to_string(first) + " run past " + name + "'s " + std::to_string(words) +
                                         " words");
  if (count == 0) return;
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t start = out->layout.Offset(first), end = out->layout.Offset((uint64_t)first + count - 1) + 4;
  size_t off = start / page * page;
  out->length = (end - off + page - 1) / page * page;
  void* p = mmap(nullptr, out->length, write ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, (off_t)off);
  if (p == MAP_FAILED) {
    out->length = 0;
    ThrowErrno(env, "mmap " + name, errno);
  }
  out->base = static_cast<uint8_t*>(p);
  out->first = out->base + (start - off);
  out->firstWord = first;
}

// Argument i as a Uint32Array of at most UINT32_MAX entries (errors name it `name`).
Napi::Uint32Array ArgWords(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    throw Napi::TypeError::New(env, std::string(name) + " must be a Uint32Array");
  Napi::Uint32Array a = info[i].As<Napi::Uint32Array>();
  if (a.ElementLength() > UINT32_MAX) throw Napi::RangeError::New(env, std::string(name) + ": too many entries");
  return a;
}

// mapWriteU32s(fd, first, values: Uint32Array): word first + i = values[i].
Napi::Value MapWriteU32s(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  uint32_t first = ArgU32(info, 1, "first");
  Napi::Uint32Array values = ArgWords(info, 2, "values");
  const uint32_t* src = values.Data();
  size_t n = values.ElementLength();
  MmapArea a;
  MapU32s(env, fd, first, (uint32_t)n, "values.length", true, &a);
  CopyWords(a, const_cast<uint32_t*>(src), n, true);
  return env.Undefined();
}

// mapReadU32s(fd, first, out: Uint32Array): out[i] = word first + i. The caller allocates `out` (in its own
// realm: jest's Uint32Array is not the addon's).
Napi::Value MapReadU32s(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  uint32_t first = ArgU32(info, 1, "first");
  Napi::Uint32Array out = ArgWords(info, 2, "out");
  uint32_t* dst = out.Data();
  size_t n = out.ElementLength();
  MmapArea a;
  MapU32s(env, fd, first, (uint32_t)n, "out.length", false, &a);
  CopyWords(a, dst, n, false);
  return env.Undefined();
}

// mapPatchU32s(fd, first, values: Uint32Array, maxChanged) -> changed: compares words first + i with values[i] in
// place and, when at most `maxChanged` differ, writes those (and only those), each as one aligned 32-bit store: a
// program reading the map sees every word either old or new, never a torn one. More than `maxChanged`: nothing
// is written. Returns how many differed either way.
Napi::Value MapPatchU32s(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  uint32_t first = ArgU32(info, 1, "first");
  Napi::Uint32Array values = ArgWords(info, 2, "values");
  uint32_t maxChanged = ArgU32(info, 3, "maxChanged");
  const uint32_t* src = values.Data();
  size_t n = values.ElementLength();
  MmapArea a;
  MapU32s(env, fd, first, (uint32_t)n, "values.length", true, &a);
  // Word i's address: dense (64-byte Maglev lines) and one word per 8-byte element are a fixed stride from the
  // first; Word(i) divides per word (~2 ms over a 65537-slot table, ten times the compare itself).
  size_t stride = a.layout.Dense() ? 1 : a.layout.perElem == 1 ? a.layout.elemSize / 4 : 0;
  auto word = [&](size_t i) -> uint32_t* {
    return stride != 0 ? reinterpret_cast<uint32_t*>(a.first) + i * stride : reinterpret_cast<uint32_t*>(a.Word(i));
  };
  uint32_t changed = 0;
  for (size_t i = 0; i < n; i++)
    if (__atomic_load_n(word(i), __ATOMIC_RELAXED) != src[i]) changed++;
  if (changed > 0 && changed <= maxChanged)
    for (size_t i = 0; i < n; i++) {
      uint32_t* w = word(i);
      if (__atomic_load_n(w, __ATOMIC_RELAXED) != src[i]) __atomic_store_n(w, src[i], __ATOMIC_RELAXED);
    }
  return Napi::Number::New(env, changed);
}

// One array map of u32 values to create and fill (mapsCreateU32s): its definition and what to write where.
struct FilledMapSpec {
  std::string name;
  uint32_t maxEntries = 0;
  uint32_t flags = 0;
  uint32_t valueSize = 4;
  WordLayout layout;
  struct Write {
    uint32_t first;
    const uint32_t* values;
    size_t count;
    // report the distinct non-zero values written, ascending
    bool distinct;
  };
  std::vector<Write> writes;
};

// The distinct non-zero values of `v`, ascending: a bitmap up to the largest value (one pass to find it, one to
// mark, one over the bitmap), sorting a copy when values are too large for a small bitmap.
std::vector<uint32_t> DistinctNonZero(const uint32_t* v, size_t n) {
  uint32_t max = 0;
  for (size_t i = 0; i < n; i++) max = v[i] > max ? v[i] : max;
  std::vector<uint32_t> out;
  if (max >= (1u << 26)) {
    out.assign(v, v + n);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    if (!out.empty() && out.front() == 0) out.erase(out.begin());
    return out;
  }
  std::vector<uint64_t> bits(((size_t)max >> 6) + 1, 0);
  for (size_t i = 0; i < n; i++) bits[v[i] >> 6] |= 1ull << (v[i] & 63);
  bits[0] &= ~1ull;
  for (size_t w = 0; w < bits.size(); w++)
    for (uint64_t b = bits[w]; b != 0; b &= b - 1) out.push_back((uint32_t)(w * 64 + __builtin_ctzll(b)));
  return out;
}

// Creates BPF_F_MMAPABLE arrays of u32 and fills each through one mapping, on a thread of the pool: a Maglev
// table is a 264 KiB kernel allocation and 65 page faults, kept off the event loop. The caller's Uint32Arrays
// are referenced until the promise settles. All or nothing: on any failure the maps made so far are closed.
class FillWorker : public Napi::AsyncWorker {
 public:
  FillWorker(Napi::Env env, std::vector<FilledMapSpec> specs, Napi::Object keep)
      : Napi::AsyncWorker(env), specs_(std::move(specs)), keep_(Napi::Persistent(keep)),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  void Execute() override {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < specs_.size(); i++) {
      const FilledMapSpec& s = specs_[i];
      LIBBPF_OPTS(bpf_map_create_opts, opts);
      opts.map_flags = s.flags;
      int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, s.name.empty() ? nullptr : s.name.c_str(), 4, s.valueSize,
                              s.maxEntries, &opts);
      if (fd < 0) return Fail(i, "create map " + s.name, -fd);
      fds_.push_back(fd);
      // the whole array in one mapping (WordLayout)
      size_t length = ((size_t)s.maxEntries * s.layout.elemSize + page - 1) / page * page;
      void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) return Fail(i, "mmap map " + s.name, errno);
      uint8_t* base = static_cast<uint8_t*>(p);
      for (const auto& w : s.writes)
        if (s.layout.Dense())
          memcpy(base + (size_t)w.first * 4, w.values, w.count * 4);
        else
          for (size_t k = 0; k < w.count; k++) memcpy(base + s.layout.Offset((uint64_t)w.first + k), w.values + k, 4);
      munmap(p, length);
      for (size_t j = 0; j < s.writes.size(); j++)
        if (s.writes[j].distinct) distinct_.push_back({i, j, DistinctNonZero(s.writes[j].values, s.writes[j].count)});
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      for (int fd : fds_) close(fd);
      deferred_.Reject(MakeError(env, "maps[" + std::to_string(failedAt_) + "]: " + what_, err_).Value());
      return;
    }
    Napi::Array out = Napi::Array::New(env, fds_.size());
    for (size_t i = 0; i < fds_.size(); i++) {
      TrackFd(env, fds_[i]);
      Napi::Object r = Napi::Object::New(env);
      r.Set("fd", Napi::Number::New(env, fds_[i]));
      Napi::Array d = Napi::Array::New(env, specs_[i].writes.size());
      for (size_t j = 0; j < specs_[i].writes.size(); j++) d.Set(j, env.Null());
      r.Set("distinct", d);
      out.Set(i, r);
    }
    for (const auto& d : distinct_) {
      Napi::Uint32Array a = Napi::Uint32Array::New(env, d.values.size());
      if (!d.values.empty()) memcpy(a.Data(), d.values.data(), d.values.size() * 4);
      out.Get(d.map).As<Napi::Object>().Get("distinct").As<Napi::Array>().Set(d.write, a);
    }
    deferred_.Resolve(out);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 private:
  void Fail(size_t at, const std::string& what, int err) {
    failedAt_ = at;
    what_ = what;
    err_ = err;
  }

  std::vector<FilledMapSpec> specs_;
  Napi::ObjectReference keep_;
  Napi::Promise::Deferred deferred_;
  std::vector<int> fds_;
  struct Distinct {
    size_t map, write;
    std::vector<uint32_t> values;
  };
  std::vector<Distinct> distinct_;
  size_t failedAt_ = 0;
  std::string what_;
  int err_ = 0;
};

// mapsCreateU32s([{name, maxEntries, flags, valueSize?, writes: [{first, values: Uint32Array, distinct?}]}])
//   -> Promise<{fd, distinct: (Uint32Array | null)[]}[]>: new BPF_F_MMAPABLE arrays of u32 words (values of
// `valueSize` bytes, default 4: WordLayout), word first + i of each write = values[i] (the rest zero); `distinct` per write: its distinct non-zero values,
// ascending, where the write asked for them (null where not).
Napi::Value MapsCreateU32s(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "maps must be an array");
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<FilledMapSpec> specs(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    std::string at = "maps[" + std::to_string(i) + "]";
    Napi::Value v = arr.Get(i);
    if (!v.IsObject()) throw Napi::TypeError::New(env, at + " must be an object");
    Napi::Object o = v.As<Napi::Object>();
    FilledMapSpec& s = specs[i];
    auto u32 = [&](const char* k) -> uint32_t {
      Napi::Value x = o.Get(k);
      if (!x.IsNumber()) throw Napi::TypeError::New(env, at + "." + k + " must be a number");
      return x.As<Napi::Number>().Uint32Value();
    };
    s.maxEntries = u32("maxEntries");
    s.flags = u32("flags");
    if (!o.Get("valueSize").IsUndefined()) s.valueSize = u32("valueSize");
    if (!WordLayoutOf(s.valueSize, &s.layout))
      throw Napi::TypeError::New(env, at + ".valueSize: " + std::to_string(s.valueSize) +
                                          " bytes are not u32 words (4 bytes or a multiple of 8)");
    const uint64_t words = (uint64_t)s.maxEntries * s.layout.perElem;
    if (!(s.flags & BPF_F_MMAPABLE)) throw Napi::TypeError::New(env, at + ".flags must include BPF_F_MMAPABLE");
    if (o.Get("name").IsString()) s.name = o.Get("name").As<Napi::String>().Utf8Value();
    Napi::Value ws = o.Get("writes");
    if (!ws.IsArray()) throw Napi::TypeError::New(env, at + ".writes must be an array");
    Napi::Array wa = ws.As<Napi::Array>();
    for (uint32_t j = 0; j < wa.Length(); j++) {
      std::string wat = at + ".writes[" + std::to_string(j) + "]";
      Napi::Value wv = wa.Get(j);
      if (!wv.IsObject()) throw Napi::TypeError::New(env, wat + " must be an object");
      Napi::Object w = wv.As<Napi::Object>();
      Napi::Value first = w.Get("first");
      Napi::Value values = w.Get("values");
      if (!first.IsNumber()) throw Napi::TypeError::New(env, wat + ".first must be a number");
      if (!values.IsTypedArray() || values.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
        throw Napi::TypeError::New(env, wat + ".values must be a Uint32Array");
      Napi::Uint32Array a = values.As<Napi::Uint32Array>();
      uint32_t f = first.As<Napi::Number>().Uint32Value();
      if ((uint64_t)f + a.ElementLength() > words)
        throw Napi::RangeError::New(env, wat + ": " + std::to_string(a.ElementLength()) + " words from " +
                                             std::to_string(f) + " run past the " + std::to_string(words) +
                                             " words of maxEntries " + std::to_string(s.maxEntries));
      s.writes.push_back({f, a.Data(), a.ElementLength(), w.Get("distinct").ToBoolean().Value()});
    }
  }
  // Holds the specs (and so their Uint32Arrays) until the worker is done with their memory.
  auto* w = new FillWorker(env, std::move(specs), arr);
  auto p = w->Promise();
  w->Queue();
  return p;
}

const struct btf_type* SkipMods(const struct btf* btf, uint32_t id, uint32_t* resId = nullptr) {
  const struct btf_type* t = btf__type_by_id(btf, id);
  while (t != nullptr && (btf_is_mod(t) || btf_is_typedef(t))) {
    id = t->type;
    t = btf__type_by_id(btf, id);
  }
  if (resId != nullptr) *resId = id;
  return t;
}

// The integer fields of a BTF map definition (`__uint(name, N)` is `int (*name)[N]`), and key_size / value_size of
// `__type(key, T)` / `__type(value, T)`.
Napi::Object DefFields(Napi::Env env, const struct btf* btf, const struct btf_type* def) {
  Napi::Object o = Napi::Object::New(env);
  const struct btf_member* m = btf_members(def);
  for (int i = 0; i < btf_vlen(def); i++, m++) {
    const char* name = btf__name_by_offset(btf, m->name_off);
    const struct btf_type* t = SkipMods(btf, m->type);
    if (name == nullptr || t == nullptr || !btf_is_ptr(t)) continue;
    // `__type(key, T)` / `__type(value, T)` is `T *key`: its size, as `__uint(key_size, N)` would give it
    if (strcmp(name, "key") == 0 || strcmp(name, "value") == 0) {
      __s64 size = btf__resolve_size(btf, t->type);
      if (size >= 0) o.Set(std::string(name) + "_size", (double)size);
      continue;
    }
    const struct btf_type* arr = SkipMods(btf, t->type);
    if (arr != nullptr && btf_is_array(arr)) o.Set(name, btf_array(arr)->nelems);
  }
  return o;
}

// The .maps definitions of a BTF: [{name, fields: {type, max_entries, map_flags, ...}, inner?: {...}}].
Napi::Array MapDefs(Napi::Env env, const struct btf* btf) {
  Napi::Array out = Napi::Array::New(env);
  int secId = btf__find_by_name_kind(btf, ".maps", BTF_KIND_DATASEC);
  if (secId < 0) return out;
  const struct btf_type* sec = btf__type_by_id(btf, secId);
  const struct btf_var_secinfo* vs = btf_var_secinfos(sec);
  for (int i = 0; i < btf_vlen(sec); i++, vs++) {
    const struct btf_type* var = btf__type_by_id(btf, vs->type);
    if (var == nullptr || !btf_is_var(var)) continue;
    const struct btf_type* def = SkipMods(btf, var->type);
    if (def == nullptr || !btf_is_struct(def)) continue;
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", btf__name_by_offset(btf, var->name_off));
    d.Set("fields", DefFields(env, btf, def));
    // `__array(values, struct inner)` is `typeof(struct inner) *values[]`: an array of pointers to the template.
    const struct btf_member* m = btf_members(def);
    for (int j = 0; j < btf_vlen(def); j++, m++) {
      const char* mn = btf__name_by_offset(btf, m->name_off);
      if (mn == nullptr || strcmp(mn, "values") != 0) continue;
      const struct btf_type* arr = SkipMods(btf, m->type);
      if (arr == nullptr || !btf_is_array(arr)) continue;
      const struct btf_type* ptr = SkipMods(btf, btf_array(arr)->type);
      if (ptr == nullptr || !btf_is_ptr(ptr)) continue;
      const struct btf_type* inner = SkipMods(btf, ptr->type);
      if (inner != nullptr && btf_is_struct(inner)) d.Set("inner", DefFields(env, btf, inner));
    }
    out.Set(out.Length(), d);
  }
  return out;
}

// btfMapDefs(path) or btfMapDefs({btfId}): the map definitions of an object file or of a BTF in the kernel.
Napi::Value BtfMapDefs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct btf* btf = nullptr;
  std::string what;
  LibbpfLogReset();
  if (info.Length() > 0 && info[0].IsString()) {
    std::string path = info[0].As<Napi::String>().Utf8Value();
    what = "parse BTF of " + path;
    btf = btf__parse_elf(path.c_str(), nullptr);
  } else if (info.Length() > 0 && info[0].IsObject()) {
    Napi::Value id = info[0].As<Napi::Object>().Get("btfId");
    if (!id.IsNumber()) throw Napi::TypeError::New(env, "btfId must be a number");
    uint32_t n = id.As<Napi::Number>().Uint32Value();
    what = "load BTF " + std::to_string(n) + " from the kernel";
    btf = btf__load_from_kernel_by_id(n);
  } else {
    throw Napi::TypeError::New(env, "source must be an object file path or {btfId}");
  }
  int err = libbpf_get_error(btf);
  if (err) ThrowErrno(env, what, err);
  Napi::Array out;
  try {
    out = MapDefs(env, btf);
  } catch (...) {
    btf__free(btf);
    throw;
  }
  btf__free(btf);
  return out;
}

}  // namespace

void InitMmap(Napi::Env env, Napi::Object exports) {
  exports.Set("mapWriteU32s", Napi::Function::New(env, MapWriteU32s));
  exports.Set("mapReadU32s", Napi::Function::New(env, MapReadU32s));
  exports.Set("mapPatchU32s", Napi::Function::New(env, MapPatchU32s));
  exports.Set("mapsCreateU32s", Napi::Function::New(env, MapsCreateU32s));
  exports.Set("btfMapDefs", Napi::Function::New(env, BtfMapDefs));
}

}  // namespace peak
