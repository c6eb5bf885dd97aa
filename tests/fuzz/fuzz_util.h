// Shared pieces of the fuzz targets in tests/fuzz/ (issue 16, "Fuzzing").
//
// Each target is written once, as FTRUN_FUZZ_TARGET(name) { ... } returning the outcome of one
// input: "" when the input was accepted, else the error message. The same source builds two ways:
//  - the libFuzzer build (tests/fuzz/clang, FTRUN_LIBFUZZER defined) wraps it in
//    LLVMFuzzerTestOneInput, so ASan/UBSan and libFuzzer judge crashes, leaks, hangs and OOMs;
//  - the regular GCC build (tests/fuzz/CMakeLists.txt) registers it for fuzz_replay_test, which
//    replays the committed seed corpus and regression inputs and checks their expected outcome.
// A bad input is expected to end in an exception derived from std::exception (ftrun's one-line
// errors); anything else escaping (a crash, a non-std exception) is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ftrun::fuzz {

using Target = std::string (*)(const uint8_t* data, size_t size);

// name -> target, filled by the static registrars of the replay build.
inline std::map<std::string, Target>& registry() {
  static std::map<std::string, Target> r;
  return r;
}

struct Registrar {
  Registrar(const char* name, Target t) { registry()[name] = t; }
};

// The error of fn() ("" when it returns normally). Only std::exception is an expected outcome.
inline std::string outcome(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    const std::string what = e.what();
    return what.empty() ? std::string("(exception with an empty message)") : what;
  }
  return "";
}

// A private directory per process (several fuzz jobs may run at once), removed at exit. The
// targets that read files (the loaders take paths, not bytes) write each input into it.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/ftrun-fuzz-XXXXXX";
    if (!mkdtemp(tmpl.data())) std::abort();
    static const std::string keep = tmpl;  // for the atexit hook, which takes no argument
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return std::filesystem::path(tmpl);
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();  // the scratch directory itself failing is not the input's fault
}

// The input cut at each occurrence of `sep` (targets that take several files or a file plus
// --set lines take them as one input, parts separated by a marker line).
inline std::vector<std::string> split(std::string_view input, std::string_view sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    const size_t at = input.find(sep, start);
    if (at == std::string_view::npos) {
      parts.emplace_back(input.substr(start));
      return parts;
    }
    parts.emplace_back(input.substr(start, at - start));
    start = at + sep.size();
  }
}

}  // namespace ftrun::fuzz

#define FTRUN_FUZZ_CONCAT2(a, b) a##b
#define FTRUN_FUZZ_CONCAT(a, b) FTRUN_FUZZ_CONCAT2(a, b)

#ifdef FTRUN_LIBFUZZER
// FTRUN_FUZZ_PRINT=1 prints each input's outcome (replaying a reproducer by hand).
#define FTRUN_FUZZ_ENTRY(name)                                                      \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {         \
    const std::string got = FTRUN_FUZZ_CONCAT(ftrun_fuzz_, name)(data, size);       \
    if (std::getenv("FTRUN_FUZZ_PRINT"))                                            \
      std::fprintf(stderr, "outcome: %s\n", got.empty() ? "accepted" : got.c_str()); \
    return 0;                                                                       \
  }
#else
#define FTRUN_FUZZ_ENTRY(name)                                                      \
  static const ftrun::fuzz::Registrar FTRUN_FUZZ_CONCAT(ftrun_fuzz_registrar_, name)( \
      #name, &FTRUN_FUZZ_CONCAT(ftrun_fuzz_, name));
#endif

// FTRUN_FUZZ_TARGET(name) { body using `data`, `size`; returns the outcome string }
#define FTRUN_FUZZ_TARGET(name)                                                     \
  std::string FTRUN_FUZZ_CONCAT(ftrun_fuzz_, name)(const uint8_t* data, size_t size); \
  FTRUN_FUZZ_ENTRY(name)                                                            \
  std::string FTRUN_FUZZ_CONCAT(ftrun_fuzz_, name)(const uint8_t* data, size_t size)
