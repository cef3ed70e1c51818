{
  "variables": {
    "ccl_include%": "<!(node -p \"process.env.MOE_ACTORS_CCL_INCLUDE || ''\")",
    "ccl_linkdir%": "<!(node -p \"process.env.MOE_ACTORS_CCL_LINKDIR || ''\")",
    "ccl_libdir%": "<!(node -p \"process.env.MOE_ACTORS_CCL_LIBDIR || ''\")"
  },
  "targets": [
    {
      "target_name": "ccl",
      "sources": [
        "../mpi/src/collectives.cc", "../mpi/src/common.cc", "../mpi/src/comms.cc", "../mpi/src/faults.cc",
        "<!@(node -p \"require('fs').readdirSync('src').filter(f=>f.endsWith('.cc')).map(f=>'src/'+f).join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(pkg-config --cflags-only-I mpich | sed 's/-I//g')",
        "<(ccl_include)"
      ],
      "libraries": ["<!@(pkg-config --libs mpich)", "-L<(ccl_linkdir)", "-lccl", "-Wl,-rpath,<(ccl_linkdir)", "-Wl,-rpath,<(ccl_libdir)"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-O2", "-std=c++17"]
    }
  ]
}
