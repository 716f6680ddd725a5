# cmake -DIN=<file> -DOUT=<file> -P rewrite_launches.cmake
# Turns one CUDA source into C++ the emulator compiles: `kernel<<<cfg>>>(args)` becomes
# `kernel * ::tls_emu::launch(cfg)(args)` and the dynamic shared-memory declaration a pointer to
# the emulated block's buffer. No line breaks change, and a #line keeps the original file name,
# so compiler messages and the emulator's launch sites point at the real source.
file(READ "${IN}" text)
string(REPLACE "<<<" "* ::tls_emu::launch(" text "${text}")
string(REPLACE ">>>" ")" text "${text}")
string(REGEX REPLACE
  "extern __shared__ (__align__\\([0-9]+\\) )?([^;]*[^ ]) ([A-Za-z_0-9]+)\\[\\];"
  "\\2* \\3 = reinterpret_cast<\\2*>(::tls_emu::dynamic_shared());" text "${text}")
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${text}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
