// testing/errors.h: small helpers for tests that check error messages and need a scratch
// directory (header-only; no GoogleTest).
#pragma once
#include <stdlib.h>

#include <exception>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>

namespace ftrun::testing {

// The message of what fn throws; "(no error)" when it returns normally, so a comparison
// against an expected message fails with a readable value.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// A fresh directory under /tmp, removed with everything in it at scope exit.
struct ScratchDir {
  std::filesystem::path path;
  ScratchDir() {
    char tmpl[] = "/tmp/ftrun_test_XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

}  // namespace ftrun::testing
