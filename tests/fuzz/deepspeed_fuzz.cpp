// Fuzz target `deepspeed`: a DeepSpeed JSON config (runtime/deepspeed.cpp read_deepspeed),
// checked against HF's default training_args on 2 ranks. Input: the file's bytes.
#include <nlohmann/json.hpp>

#include "runtime/deepspeed.h"
#include "tests/fuzz/fuzz_util.h"

FTRUN_FUZZ_TARGET(deepspeed) {
  const auto path = ftrun::fuzz::scratch_dir() / "ds_config.json";
  ftrun::fuzz::write_file(path, {reinterpret_cast<const char*>(data), size});
  return ftrun::fuzz::outcome([&] {
    const ftrun::runtime::TrainingArgs args;  // per_device_train_batch_size 8, max_grad_norm 1, ...
    const auto ds = ftrun::runtime::read_deepspeed(path.string(), args, 2);
    if (ds.zero_stage < 0 || ds.zero_stage > 3) std::abort();  // the engine has stages 0-3 only
    // An accepted stage is the one written, never a truncation of it (4294967298 is not 2).
    const auto j = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(data), size));
    const auto z = j.find("zero_optimization");
    if (z != j.end() && z->is_object() && z->contains("stage") && (*z)["stage"].is_number_integer() &&
        (*z)["stage"].get<int64_t>() != ds.zero_stage)
      std::abort();
  });
}
