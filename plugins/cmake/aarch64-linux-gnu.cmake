# Cross-build the CPU kernels for aarch64 Linux (a Jetson's CPU) with Debian's g++-aarch64-linux-gnu;
# ctest then runs partool_kernels_check under qemu-aarch64 (package qemu-user) when it is installed.
#
#   cmake -S plugins -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=$PWD/plugins/cmake/aarch64-linux-gnu.cmake \
#         -DPARTOOL_BUILD_CUDA=OFF -DPARTOOL_BUILD_TRT_PLUGIN=OFF -DPARTOOL_BUILD_ORT_OPS=OFF
#   cmake --build build/aarch64 -j2 && ctest --test-dir build/aarch64 --output-on-failure
#
# The CUDA kernels are not cross-built: that needs the CUDA toolkit's aarch64 target libraries (JetPack's),
# which the x86 toolkit lacks; build them on the Jetson with `partool plugins build --cuda-archs 87`.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
find_program(PARTOOL_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(PARTOOL_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${PARTOOL_QEMU_AARCH64} -L /usr/aarch64-linux-gnu)
endif()
