# Helpers that give every ftrun library and test the same flags and one shared precompiled
# header, so the heavy torch headers are parsed once per build rather than once per file.

add_library(ftrun_pch STATIC ${CMAKE_SOURCE_DIR}/cmake/pch.cpp)
target_link_libraries(ftrun_pch PUBLIC ftrun_torch nlohmann_json::nlohmann_json)
target_precompile_headers(ftrun_pch PUBLIC
  <torch/torch.h> <nlohmann/json.hpp> <string> <vector> <map> <memory> <functional>)
target_include_directories(ftrun_pch PUBLIC ${CMAKE_SOURCE_DIR})
target_compile_options(ftrun_pch PUBLIC -Wall -Wno-unused-function)

# ftrun_library(NAME SOURCES... [DEPS ...])
function(ftrun_library name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${A_SOURCES})
  target_link_libraries(${name} PUBLIC ftrun_pch ${A_DEPS})
  target_precompile_headers(${name} REUSE_FROM ftrun_pch)
endfunction()

# ftrun_test(NAME SOURCES... DEPS ...): one GoogleTest executable; each TEST becomes a ctest
# test with a timeout so that a hang fails instead of eating the CI budget.
function(ftrun_test name)
  cmake_parse_arguments(A "" "TIMEOUT" "SOURCES;DEPS" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  add_executable(${name} ${A_SOURCES})
  target_link_libraries(${name} PRIVATE ${A_DEPS} ftrun_pch GTest::gtest GTest::gtest_main)
  target_precompile_headers(${name} REUSE_FROM ftrun_pch)
  target_compile_definitions(${name} PRIVATE
    FTRUN_SOURCE_DIR="${CMAKE_SOURCE_DIR}" FTRUN_BINARY_DIR="${CMAKE_BINARY_DIR}")
  # A build linked without the CUDA runtime's own dependencies (.ci/build-cuda) makes test
  # binaries that cannot start here: list their tests when ctest runs, not at build time.
  if(FTRUN_LINK_WITHOUT_CUDA_RUNTIME_DEPS)
    set(discovery DISCOVERY_MODE PRE_TEST)
  else()
    set(discovery "")
  endif()
  gtest_discover_tests(${name} ${discovery}
    WORKING_DIRECTORY ${CMAKE_BINARY_DIR}
    PROPERTIES TIMEOUT ${A_TIMEOUT}
    DISCOVERY_TIMEOUT 60)
endfunction()
include(GoogleTest)
