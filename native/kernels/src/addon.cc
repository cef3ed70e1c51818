// Entry point of the kernels addon: registers every kernel group. Each group lives in its own file.
#include <napi.h>
#include "common.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  RegisterBlas(env, exports);
  return exports;
}

NODE_API_MODULE(kernels, Init)
