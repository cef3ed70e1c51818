{
  "variables": {
    "blas%": "<!(node -p \"process.env.MOE_ACTORS_BLAS || 'openblas'\")",
    # Set by scripts/build-native.mjs when it found oneDNN (pkg-config dnnl, or dnnl.hpp + libdnnl.so on the usual
    # paths); empty = build without it (matmuls then all use BLAS).
    "dnnl_inc%": "<!(node -p \"process.env.MOE_ACTORS_DNNL_INCDIR || ''\")",
    "dnnl_lib%": "<!(node -p \"process.env.MOE_ACTORS_DNNL_LIBDIR || ''\")"
  },
  "targets": [
    {
      "target_name": "kernels",
      "sources": ["<!@(node -p \"require('fs').readdirSync('src').filter(f=>f.endsWith('.cc')).map(f=>'src/'+f).join(' ')\")"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-O3", "-std=c++17", "-march=native", "-fopenmp", "-fno-math-errno"],
      # -z nodelete: Node dlcloses an addon when the last worker thread that loaded it exits; libgomp's pool
      # threads of that worker would then run their exit path in unmapped code (SIGSEGV, seen ~1 in 15 runs).
      "ldflags": ["-fopenmp", "-Wl,-z,nodelete"],
      "conditions": [
        ["dnnl_lib!=''", {
          "defines": ["MOE_HAVE_DNNL"],
          "include_dirs": ["<(dnnl_inc)"],
          "libraries": ["-L<(dnnl_lib)", "-ldnnl", "-Wl,-rpath,<(dnnl_lib)"]
        }],
        ["blas=='mkl'", {
          "defines": ["MOE_BLAS_MKL"],
          "include_dirs": ["<!(node -p \"(process.env.MKLROOT||'/opt/intel/oneapi/mkl/latest')+'/include'\")"],
          "libraries": ["-L<!(node -p \"(process.env.MKLROOT||'/opt/intel/oneapi/mkl/latest')+'/lib/intel64'\")", "-lmkl_rt"]
        }, {
          # OpenBLAS is not linked but dlopen()ed by blas.cc, after it has chosen OPENBLAS_CORETYPE: a linked
          # library initialises (and picks its kernels) before any addon code can run. See blas.cc.
          "include_dirs": ["<!@(pkg-config --cflags-only-I openblas | sed 's/-I//g')"],
          "defines": ["MOE_OPENBLAS_LIBDIR=\"<!(pkg-config --variable=libdir openblas)\""]
        }]
      ]
    }
  ]
}
