// Values of a BPF_F_MMAPABLE array map through mmap, and map definitions read from BTF (an object file's or a
// loaded program's). Every mapping is made and removed inside one call: none outlives it.
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

namespace peak {

namespace {

// An array map's mmap area holds element i at i * round_up(value_size, 8) (kernel/bpf/arraymap.c elem_size).
struct MmapArea {
  uint8_t* base = nullptr;  // the mapping (page-aligned)
  size_t length = 0;
  uint8_t* first = nullptr;  // element `first` inside it
  size_t stride = 0;
  ~MmapArea() {
    if (base != nullptr) munmap(base, length);
  }
};

// Checks that `fd` is an mmap-able array of u32 values holding [first, first + count) and maps those elements
// (`countField` names the argument that gave `count` in errors).
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
  if (mi.value_size != 4)
    throw Napi::TypeError::New(env, "fd: " + name + " has " + std::to_string(mi.value_size) + "-byte values, not u32");
  if (first > mi.max_entries)
    throw Napi::RangeError::New(env, "first: " + std::to_string(first) + " is beyond " + name + "'s " +
                                         std::to_string(mi.max_entries) + " entries");
  if (count > mi.max_entries - first)
    throw Napi::RangeError::New(env, std::string(countField) + ": " + std::to_string(count) + " entries from " + std::to_string(first) +
                                         " run past " + name + "'s " + std::to_string(mi.max_entries) + " entries");
  if (count == 0) return;
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  out->stride = 8;  // round_up(4, 8)
  size_t start = (size_t)first * out->stride, end = ((size_t)first + count) * out->stride;
  size_t off = start / page * page;
  out->length = (end - off + page - 1) / page * page;
  void* p = mmap(nullptr, out->length, write ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, (off_t)off);
  if (p == MAP_FAILED) {
    out->length = 0;
    ThrowErrno(env, "mmap " + name, errno);
  }
  out->base = static_cast<uint8_t*>(p);
  out->first = out->base + (start - off);
}

// mapWriteU32s(fd, first, values: Uint32Array): element first + i = values[i].
Napi::Value MapWriteU32s(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  uint32_t first = ArgU32(info, 1, "first");
  if (info.Length() < 3 || !info[2].IsTypedArray() ||
      info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    throw Napi::TypeError::New(env, "values must be a Uint32Array");
  Napi::Uint32Array values = info[2].As<Napi::Uint32Array>();
  const uint32_t* src = values.Data();
  size_t n = values.ElementLength();
  if (n > UINT32_MAX) throw Napi::RangeError::New(env, "values: too many entries");
  MmapArea a;
  MapU32s(env, fd, first, (uint32_t)n, "values.length", true, &a);
  for (size_t i = 0; i < n; i++) memcpy(a.first + i * a.stride, src + i, 4);
  return env.Undefined();
}

// mapReadU32s(fd, first, out: Uint32Array): out[i] = element first + i. The caller allocates `out` (in its own
// realm: jest's Uint32Array is not the addon's).
Napi::Value MapReadU32s(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  uint32_t first = ArgU32(info, 1, "first");
  if (info.Length() < 3 || !info[2].IsTypedArray() ||
      info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    throw Napi::TypeError::New(env, "out must be a Uint32Array");
  Napi::Uint32Array out = info[2].As<Napi::Uint32Array>();
  uint32_t* dst = out.Data();
  size_t n = out.ElementLength();
  if (n > UINT32_MAX) throw Napi::RangeError::New(env, "out: too many entries");
  MmapArea a;
  MapU32s(env, fd, first, (uint32_t)n, "out.length", false, &a);
  for (size_t i = 0; i < n; i++) memcpy(dst + i, a.first + i * a.stride, 4);
  return env.Undefined();
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

// The integer fields of a BTF map definition (`__uint(name, N)` is `int (*name)[N]`).
Napi::Object DefFields(Napi::Env env, const struct btf* btf, const struct btf_type* def) {
  Napi::Object o = Napi::Object::New(env);
  const struct btf_member* m = btf_members(def);
  for (int i = 0; i < btf_vlen(def); i++, m++) {
    const char* name = btf__name_by_offset(btf, m->name_off);
    const struct btf_type* t = SkipMods(btf, m->type);
    if (name == nullptr || t == nullptr || !btf_is_ptr(t)) continue;
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
  exports.Set("btfMapDefs", Napi::Function::New(env, BtfMapDefs));
}

}  // namespace peak
