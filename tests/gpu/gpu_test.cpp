// The CUDA unit tests (issue 14, "The GPU check"): every buildable model family's tiny model,
// loaded on the CPU in fp32 and again onto the device under test, must give the same logits
// and the same gradient of every trainable parameter after a backward of the same loss, with
// a LoRA adapter on every Linear and without one; and on that device the SDPA attention
// kernel must equal the eager one (models/attention.h) on padded batches.
//
// The device under test is FTRUN_TEST_DEVICE: cuda (the default; bench/gpu/check.sh runs this
// on the lent GPU) or cpu (the dry run ctest registers: the same code with the CPU as "the
// device", so the CPU-vs-device parity then compares the CPU with itself and says so). cuda
// without a usable GPU is a failure with the reason, never a skip.
//
// Tolerances: fp32 with TF32 off (cuBLAS then does true fp32 matmuls, only the summation
// order differs from the CPU's): 1e-4 of the largest magnitude of each compared tensor.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/Context.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "models/attention.h"
#include "models/family.h"
#include "models/model.h"
#include "peft/strategy.h"
#include "testing/tiny.h"

using namespace ftrun;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kVocab = 64;
constexpr double kTol = 1e-4;

// FTRUN_TEST_DEVICE as a device, or nullopt with a gtest failure naming what is missing.
std::optional<c10::Device> device_under_test() {
  const char* env = std::getenv("FTRUN_TEST_DEVICE");
  const std::string want = env && *env ? env : "cuda";
  if (want == "cpu") {
    static bool said = false;
    if (!said)
      std::cout << "[gpu_test] FTRUN_TEST_DEVICE=cpu: CPU dry run; the device under test is the CPU, so every "
                   "CPU-vs-device comparison below compares the CPU with itself\n";
    said = true;
    return c10::Device(c10::kCPU);
  }
  if (want != "cuda") {
    ADD_FAILURE() << "FTRUN_TEST_DEVICE must be cuda or cpu, got '" << want << "'";
    return std::nullopt;
  }
  if (!torch::cuda::is_available()) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    ADD_FAILURE() << "FTRUN_TEST_DEVICE=cuda (the default) but no CUDA GPU is usable here: "
                  << (at::globalContext().hasCUDA()
                          ? std::string("this CUDA build sees no GPU (no driver, no GPU, or none visible") +
                                (visible ? std::string(", CUDA_VISIBLE_DEVICES=") + visible : std::string()) + ")"
                          : std::string("this build is against a CPU-only libtorch (build the CUDA flavour: "
                                        ".ci/build-cuda)"))
                  << ". Run it on a GPU, or set FTRUN_TEST_DEVICE=cpu for the CPU dry run";
    return std::nullopt;
  }
  // True fp32 matmuls on the GPU, so that 1e-4 holds (TF32 rounds inputs to 10 mantissa bits).
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  return c10::Device(c10::kCUDA, 0);
}

// The families the registry can build (the build's tiny models are among them).
std::vector<std::string> buildable_families() {
  std::vector<std::string> out;
  for (const models::Family* f : models::families())
    if (f->build) out.push_back(f->name);
  return out;
}

// The family's tiny model with sharp random weights (norms kept), written in HF's on-disk form
// once per family to a scratch directory, so both sides load the very same file.
std::string tiny_dir(const std::string& family) {
  static std::map<std::string, std::string> made;
  if (auto it = made.find(family); it != made.end()) return it->second;
  const fs::path dir = fs::temp_directory_path() / ("ftrun_gpu_test_" + std::to_string(::getpid())) / family;
  fs::create_directories(dir);
  auto model = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(kVocab, {32, 48, 4, 2}, family), 11, 0.2});
  models::save_pretrained(*model, dir.string());
  return made[family] = dir.string();
}

struct ScratchCleanup {
  ~ScratchCleanup() {
    std::error_code ec;
    fs::remove_all(fs::temp_directory_path() / ("ftrun_gpu_test_" + std::to_string(::getpid())), ec);
  }
} cleanup;

// load_pretrained straight onto `device` (on a GPU each tensor is read into device memory).
std::shared_ptr<models::CausalLM> load_on(const std::string& dir, const c10::Device& device) {
  return models::load_pretrained(dir, at::kFloat, device);
}

// LoRA on every Linear of the model (leaf module names: the families name them differently).
nlohmann::json lora_config(models::CausalLM& m) {
  std::set<std::string> leaves;
  for (auto& [path, lin] : m.linears()) leaves.insert(path.substr(path.rfind('.') + 1));
  return {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"lora_dropout", 0.0},
          {"target_modules", std::vector<std::string>(leaves.begin(), leaves.end())}};
}

struct Run {
  at::Tensor logits;                         // on the CPU
  std::map<std::string, at::Tensor> grads;   // on the CPU
};

// The loss sum of a padded batch (labels masked at padding), backward, then the logits.
Run run(models::CausalLM& m, const at::Tensor& ids_cpu, const at::Tensor& mask_cpu, const c10::Device& device) {
  auto ids = ids_cpu.to(device), mask = mask_cpu.to(device);
  m.zero_grad();
  m.forward_loss(ids, mask, ids.masked_fill(mask == 0, -100)).backward();
  Run r;
  for (auto& p : m.named_parameters())
    if (p.value().requires_grad() && p.value().grad().defined()) r.grads[p.key()] = p.value().grad().cpu();
  torch::NoGradGuard ng;
  r.logits = m.forward(ids, mask).cpu();
  return r;
}

double max_abs(const at::Tensor& t) { return t.numel() ? t.abs().max().item<double>() : 0.0; }

void expect_close(const Run& got, const Run& ref, const at::Tensor& mask, double tol, const std::string& what) {
  ASSERT_EQ(got.logits.sizes(), ref.logits.sizes()) << what;
  auto keep = (mask != 0).unsqueeze(-1).expand_as(ref.logits);
  EXPECT_TRUE(torch::isfinite(got.logits).all().item<bool>()) << what << ": logits not finite";
  EXPECT_LE(max_abs((got.logits - ref.logits).masked_select(keep)), tol * std::max(1.0, max_abs(ref.logits)))
      << what << ": logits";
  ASSERT_FALSE(ref.grads.empty()) << what;
  ASSERT_EQ(got.grads.size(), ref.grads.size()) << what;
  for (const auto& [name, g] : ref.grads) {
    ASSERT_TRUE(got.grads.count(name)) << what << ": no grad for " << name;
    EXPECT_LE(max_abs(got.grads.at(name) - g), tol * std::max(1e-3, max_abs(g))) << what << ": grad " << name;
  }
}

// A batch of 2 rows x 12 tokens, the second right-padded by 4.
std::pair<at::Tensor, at::Tensor> batch() {
  torch::manual_seed(5);
  auto ids = torch::randint(1, kVocab, {2, 12}, torch::kLong);
  auto mask = torch::ones({2, 12}, torch::kLong);
  mask[1].narrow(0, 8, 4).fill_(0);
  return {ids, mask};
}

class GpuParity : public ::testing::TestWithParam<std::string> {};

// CPU fp32 against the device, base model and LoRA on every Linear (adapter values set equal
// on both sides, lora_B non-zero so every adapter tensor gets a gradient).
TEST_P(GpuParity, ForwardBackwardEqualsCpu) {
  auto device = device_under_test();
  ASSERT_TRUE(device);
  const std::string family = GetParam();
  const std::string dir = tiny_dir(family);
  auto [ids, mask] = batch();

  auto cpu = load_on(dir, c10::Device(c10::kCPU));
  auto dev = load_on(dir, *device);
  for (auto& p : dev->parameters()) ASSERT_EQ(p.device(), *device) << family;
  EXPECT_EQ(dev->device(), *device) << family;
  cpu->set_attention_kernel(models::AttentionKernel::kEager);
  dev->set_attention_kernel(models::AttentionKernel::kEager);
  expect_close(run(*dev, ids, mask, *device), run(*cpu, ids, mask, c10::Device(c10::kCPU)), mask, kTol,
               family + " base (" + device->str() + " vs cpu)");

  // LoRA: applied on each side (adapter tensors are made on the CPU, then moved with the model).
  const auto lora = lora_config(*cpu);
  auto s_cpu = peft::make_strategy(lora), s_dev = peft::make_strategy(lora);
  s_cpu->apply(*cpu);
  s_dev->apply(*dev);
  dev->to(*device);
  {
    torch::NoGradGuard ng;
    torch::manual_seed(2);
    auto src = s_cpu->trainable(), dst = s_dev->trainable();
    ASSERT_EQ(src.size(), dst.size());
    ASSERT_FALSE(src.empty());
    for (size_t i = 0; i < src.size(); ++i) {
      ASSERT_EQ(src[i].first, dst[i].first);
      src[i].second.normal_(0, 0.2);
      dst[i].second.copy_(src[i].second);
      ASSERT_EQ(dst[i].second.device(), *device) << dst[i].first;
    }
  }
  auto got = run(*dev, ids, mask, *device), ref = run(*cpu, ids, mask, c10::Device(c10::kCPU));
  // LoRA freezes the base: only adapter tensors carry gradients.
  for (const auto& [name, g] : ref.grads) EXPECT_NE(name.find("lora_"), std::string::npos) << name;
  expect_close(got, ref, mask, kTol, family + " LoRA (" + device->str() + " vs cpu)");
}

// SDPA against eager attention on the device (fp32, padded batch: the explicit-mask kernels;
// and unpadded: the plain causal call, FlashAttention's case for half types), with LoRA off.
TEST_P(GpuParity, SdpaEqualsEagerOnDevice) {
  auto device = device_under_test();
  ASSERT_TRUE(device);
  const std::string family = GetParam();
  auto m = load_on(tiny_dir(family), *device);
  if (!models::sdpa_available()) {
    // libtorch 1.13 (the Debian CPU build; never a GPU build): no SDPA, the choice falls back.
    EXPECT_FALSE(device->is_cuda());
    EXPECT_EQ(models::resolve_attention_kernel("auto"), models::AttentionKernel::kEager);
    std::cout << "[gpu_test] " << family << ": no SDPA in this libtorch (1.13); eager fallback asserted instead\n";
    return;
  }
  auto [ids, mask] = batch();
  for (const auto& [what, msk] : std::vector<std::pair<std::string, at::Tensor>>{{"padded", mask},
                                                                                  {"unpadded", torch::ones_like(mask)}}) {
    m->set_attention_kernel(models::AttentionKernel::kEager);
    auto eager = run(*m, ids, msk, *device);
    m->set_attention_kernel(models::AttentionKernel::kSdpa);
    auto sdpa = run(*m, ids, msk, *device);
    expect_close(sdpa, eager, msk, kTol, family + " " + what + " sdpa vs eager on " + device->str());
  }
  // bf16 weights on the device: the kernels round differently; within bf16's few ulps.
  m->to(torch::kBFloat16);
  torch::NoGradGuard ng;
  auto d_ids = ids.to(*device), d_mask = mask.to(*device);
  m->set_attention_kernel(models::AttentionKernel::kEager);
  auto eager = m->forward(d_ids, d_mask).cpu();
  m->set_attention_kernel(models::AttentionKernel::kSdpa);
  auto sdpa = m->forward(d_ids, d_mask).cpu();
  auto keep = (mask != 0).unsqueeze(-1).expand_as(eager);
  EXPECT_LE(max_abs((sdpa - eager).masked_select(keep)), 0.05 * std::max(1.0, max_abs(eager))) << family << " bf16";
}

// Named gpu/GpuParity.*/FAMILY, so that `ctest -R gpu` (and -L gpu) select them.
INSTANTIATE_TEST_SUITE_P(gpu, GpuParity, ::testing::ValuesIn(buildable_families()), [](const auto& info) {
  std::string n = info.param;
  for (auto& c : n)
    if (c == '-') c = '_';
  return n;
});

}  // namespace
