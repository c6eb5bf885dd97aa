# Finds every third-party dependency. Each is a Debian 12 package; a missing one stops
# configure with the name of the package to apt-get install.

function(ftrun_missing what package)
  message(FATAL_ERROR "ftrun: ${what} not found. Install it with: apt-get install ${package}")
endfunction()

find_package(Torch QUIET)
if(NOT Torch_FOUND)
  ftrun_missing("libtorch (TorchConfig.cmake)" "libtorch-dev")
endif()
# Debian's TorchConfig adds Caffe2 targets that carry include dirs for the C++ API only
# through TORCH_INCLUDE_DIRS; keep them on one interface target.
add_library(ftrun_torch INTERFACE)
target_link_libraries(ftrun_torch INTERFACE ${TORCH_LIBRARIES})
target_include_directories(ftrun_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
# The CUDA flavour (.ci/build-cuda) links against the PyPI torch wheel's libtorch_cuda.so,
# which needs libraries that come as separate nvidia-* wheels on a GPU machine (cuSPARSELt,
# NVSHMEM, ...) and are absent from a build box that has only the CUDA toolkit. With this
# option the link still resolves every symbol of ftrun's own code and of libtorch's API, and
# leaves the wheel libraries' own dependencies to the machine that runs the binary.
option(FTRUN_LINK_WITHOUT_CUDA_RUNTIME_DEPS
  "link against a CUDA libtorch whose own dependencies are not installed here" OFF)
if(FTRUN_LINK_WITHOUT_CUDA_RUNTIME_DEPS)
  target_link_options(ftrun_torch INTERFACE "LINKER:--unresolved-symbols=ignore-in-shared-libs")
endif()
# PyPI's libtorch.so (2.x) exports its own static copy of some std::filesystem functions, and
# with libstdc++.so listed after it the dynamic linker binds ftrun's calls (remove_all, ...)
# to that copy, which crashes. Listing libstdc++ first (as a DT_NEEDED before libtorch's) makes
# every std:: symbol resolve to the system libstdc++ that ftrun was compiled against.
if(Torch_VERSION VERSION_GREATER_EQUAL 2.0)
  string(PREPEND CMAKE_EXE_LINKER_FLAGS "-Wl,--push-state,--no-as-needed -lstdc++ -Wl,--pop-state ")
  string(PREPEND CMAKE_SHARED_LINKER_FLAGS "-Wl,--push-state,--no-as-needed -lstdc++ -Wl,--pop-state ")
endif()

find_package(PkgConfig QUIET)
if(NOT PKG_CONFIG_FOUND)
  ftrun_missing("pkg-config" "pkg-config")
endif()

find_package(yaml-cpp QUIET)
if(NOT yaml-cpp_FOUND)
  ftrun_missing("yaml-cpp" "libyaml-cpp-dev")
endif()

find_package(Boost 1.74 QUIET COMPONENTS program_options)
if(NOT Boost_FOUND)
  ftrun_missing("Boost.Program_options" "libboost-program-options-dev")
endif()

find_package(nlohmann_json 3 QUIET)
if(NOT nlohmann_json_FOUND)
  ftrun_missing("nlohmann/json" "nlohmann-json3-dev")
endif()

pkg_check_modules(SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
if(NOT SENTENCEPIECE_FOUND)
  ftrun_missing("sentencepiece" "libsentencepiece-dev")
endif()
find_library(SENTENCEPIECE_TRAIN_LIB sentencepiece_train)
if(NOT SENTENCEPIECE_TRAIN_LIB)
  ftrun_missing("sentencepiece trainer library" "libsentencepiece-dev")
endif()

pkg_check_modules(PCRE2 QUIET IMPORTED_TARGET libpcre2-8)
if(NOT PCRE2_FOUND)
  ftrun_missing("PCRE2" "libpcre2-dev")
endif()

pkg_check_modules(ZMQ QUIET IMPORTED_TARGET libzmq)
if(NOT ZMQ_FOUND)
  ftrun_missing("ZeroMQ" "libzmq3-dev")
endif()
if(NOT EXISTS /usr/include/zmq.hpp)
  ftrun_missing("cppzmq (zmq.hpp)" "cppzmq-dev")
endif()

find_package(MPI QUIET COMPONENTS CXX)
if(NOT MPI_CXX_FOUND)
  ftrun_missing("OpenMPI" "libopenmpi-dev openmpi-bin")
endif()
find_program(MPIRUN mpirun)

find_package(ZLIB QUIET)
if(NOT ZLIB_FOUND)
  ftrun_missing("zlib" "zlib1g-dev")
endif()

find_library(GLOO_LIB gloo)
if(NOT GLOO_LIB)
  ftrun_missing("Gloo" "libgloo-dev")
endif()

if(NOT EXISTS /usr/lib/x86_64-linux-gnu/libopenblas.so.0 AND NOT EXISTS /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3)
  message(WARNING "ftrun: OpenBLAS not found; libtorch falls back to the slow reference BLAS. apt-get install libopenblas0")
endif()

if(FTRUN_BUILD_TESTS OR NOT DEFINED FTRUN_BUILD_TESTS)
  find_package(GTest QUIET)
  if(NOT GTest_FOUND)
    ftrun_missing("GoogleTest" "libgtest-dev")
  endif()
  find_package(Python3 QUIET COMPONENTS Interpreter)
endif()
