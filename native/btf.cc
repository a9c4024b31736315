// BTF of an object file: struct layouts and enums, so TS encoders can be checked against bpf/shared.h.
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "common.h"

namespace peak {

namespace {

// btfDump(path) -> {structs: [{name, size, members: [{name, offset, size}]}], enums: [{name, size, values: {}}]}
Napi::Value BtfDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  LibbpfLogReset();
  struct btf* btf = btf__parse_elf(path.c_str(), nullptr);
  int err = libbpf_get_error(btf);
  if (err) ThrowErrno(env, "parse BTF of " + path, err);
  Napi::Array structs = Napi::Array::New(env), enums = Napi::Array::New(env);
  uint32_t n = btf__type_cnt(btf);
  for (uint32_t id = 1; id < n; id++) {
    const struct btf_type* t = btf__type_by_id(btf, id);
    const char* name = btf__name_by_offset(btf, t->name_off);
    if (!name || !*name) continue;
    if (btf_is_struct(t) || btf_is_union(t)) {
      Napi::Object s = Napi::Object::New(env);
      s.Set("name", name);
      s.Set("kind", btf_is_struct(t) ? "struct" : "union");
      s.Set("size", t->size);
      Napi::Array ms = Napi::Array::New(env);
      const struct btf_member* m = btf_members(t);
      for (int i = 0; i < btf_vlen(t); i++, m++) {
        Napi::Object mo = Napi::Object::New(env);
        mo.Set("name", btf__name_by_offset(btf, m->name_off));
        uint32_t bitOff = btf_member_bit_offset(t, i);
        mo.Set("offset", bitOff / 8);
        mo.Set("bitOffset", bitOff);
        mo.Set("size", (double)btf__resolve_size(btf, m->type));
        ms.Set(ms.Length(), mo);
      }
      s.Set("members", ms);
      structs.Set(structs.Length(), s);
    } else if (btf_is_enum(t)) {
      Napi::Object e = Napi::Object::New(env);
      e.Set("name", name);
      e.Set("size", t->size);
      Napi::Object vals = Napi::Object::New(env);
      const struct btf_enum* v = btf_enum(t);
      for (int i = 0; i < btf_vlen(t); i++, v++) vals.Set(btf__name_by_offset(btf, v->name_off), v->val);
      e.Set("values", vals);
      enums.Set(enums.Length(), e);
    }
  }
  btf__free(btf);
  Napi::Object o = Napi::Object::New(env);
  o.Set("structs", structs);
  o.Set("enums", enums);
  return o;
}

}  // namespace

void InitBtf(Napi::Env env, Napi::Object exports) { exports.Set("btfDump", Napi::Function::New(env, BtfDump)); }

}  // namespace peak
