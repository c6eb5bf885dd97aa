// Fuzz target `safetensors`: the safetensors header parser and tensor reader
// (models/safetensors.cpp File::open, then every tensor copied out). Input: the file's bytes.
// A header that passes validation tiles the file, so get() never allocates more than the input.
#include <ATen/core/Tensor.h>

#include "models/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

FTRUN_FUZZ_TARGET(safetensors) {
  const auto path = ftrun::fuzz::scratch_dir() / "model.safetensors";
  ftrun::fuzz::write_file(path, {reinterpret_cast<const char*>(data), size});
  return ftrun::fuzz::outcome([&] {
    const auto f = ftrun::st::File::open(path.string());
    for (const auto& info : f->tensors()) {
      const at::Tensor t = f->get(info.name);
      if (t.numel() != 0 && t.data_ptr() == nullptr) std::abort();
    }
  });
}
