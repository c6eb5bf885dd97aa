// Link stand-ins for the libFuzzer build of runtime/checkpoint.cpp only: the checkpoint target
// exercises the readers (trainer_state.json, layout.json, COMPLETE), which never touch the
// model or the ZeRO engine, while the save/load functions in the same file reference them.
// Compiling the whole model and sharding stack with instrumentation for symbols that are never
// called would triple the fuzz build's time on CI's 2 cores; each stand-in aborts if reached.
#include <cstdio>
#include <cstdlib>

#include "models/model.h"
#include "runtime/device.h"
#include "sharding/zero.h"

namespace {
[[noreturn]] void not_in_fuzz_build(const char* what) {
  std::fprintf(stderr, "fuzz build: %s is a link stand-in (tests/fuzz/clang/checkpoint_stubs.cpp)\n", what);
  std::abort();
}
}  // namespace

namespace ftrun::models {
nlohmann::json config_for_save(const CausalLM&, at::ScalarType) { not_in_fuzz_build("config_for_save"); }
}  // namespace ftrun::models

namespace ftrun::runtime {
at::Tensor cuda_rng_state(const c10::Device&) { not_in_fuzz_build("cuda_rng_state"); }
void set_cuda_rng_state(const c10::Device&, const at::Tensor&) { not_in_fuzz_build("set_cuda_rng_state"); }
}  // namespace ftrun::runtime

namespace ftrun::sharding {
void ZeroEngine::with_full_trainable(const std::function<void()>&) { not_in_fuzz_build("with_full_trainable"); }
void ZeroEngine::for_each_unit_full(const std::function<void(const NamedTensors&)>&) {
  not_in_fuzz_build("for_each_unit_full");
}
std::vector<ZeroEngine::UnitLayout> ZeroEngine::layout() const { not_in_fuzz_build("layout"); }
std::vector<ZeroEngine::OwnedState> ZeroEngine::export_optimizer() const { not_in_fuzz_build("export_optimizer"); }
void ZeroEngine::import_optimizer(int64_t, const Fetch&) { not_in_fuzz_build("import_optimizer"); }
}  // namespace ftrun::sharding
