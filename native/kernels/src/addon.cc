// Entry point of the kernels addon: registers every kernel group. Each group lives in its own file.
#include <napi.h>
#include "common.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  if (!RegisterBlas(env, exports)) return exports;
  RegisterNorm(env, exports);
  RegisterSwiglu(env, exports);
  RegisterRope(env, exports);
  RegisterAttention(env, exports);
  RegisterAttentionBf16(env, exports);
  RegisterCrossEntropy(env, exports);
  RegisterEmbedding(env, exports);
  RegisterMoeRows(env, exports);
  RegisterOptim(env, exports);
  RegisterElementwise(env, exports);
  RegisterBf16(env, exports);
  return exports;
}

NODE_API_MODULE(kernels, Init)
