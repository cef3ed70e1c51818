{
  "targets": [
    {
      "target_name": "mpi",
      "sources": ["<!@(node -p \"require('fs').readdirSync('src').filter(f=>f.endsWith('.cc')).map(f=>'src/'+f).join(' ')\")"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<!@(pkg-config --cflags-only-I mpich | sed 's/-I//g')"],
      "libraries": ["<!@(pkg-config --libs mpich)"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-O2", "-std=c++17"]
    }
  ]
}
