// Device choice (runtime/device.h, issue 14) on a machine without a GPU: what `device`,
// `training_args.use_cpu` / `no_cuda` and `comm_backend` resolve to, and the errors for a GPU
// request this build or machine cannot meet. Runs on both flavours (Debian's CPU libtorch 1.13
// and the CUDA libtorch 2.11 build, whose binaries run on this CPU): the expected message
// differs by flavour, and each is asserted where it applies.
#include "runtime/device.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "testing/errors.h"

namespace fs = std::filesystem;
using ftrun::runtime::batch_on;
using ftrun::runtime::build_has_cuda;
using ftrun::runtime::comm_backend_for;
using ftrun::runtime::Config;
using ftrun::runtime::cuda_peak_memory;
using ftrun::runtime::load_config;
using ftrun::runtime::resolve_device;
using ftrun::runtime::visible_cuda_devices;
using ftrun::testing::error_of;

namespace {

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

class DeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(visible_cuda_devices(), 0) << "these tests describe a machine without a GPU";
    std::string tmpl = (fs::temp_directory_path() / "ftrun-device-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  Config config(const std::string& extra) {
    const std::string path = (fs::path(dir_) / "c.yaml").string();
    std::ofstream(path) << "data_config:\n  train_file: train.jsonl\nmax_input_length: 64\nmax_output_length: 32\n"
                        << extra;
    return load_config(path);
  }
  std::string dir_;
};

TEST_F(DeviceTest, AutoAndCpuResolveToTheCpuWithoutAGpu) {
  EXPECT_TRUE(resolve_device(config("")).is_cpu());
  EXPECT_TRUE(resolve_device(config("device: auto\n")).is_cpu());
  EXPECT_TRUE(resolve_device(config("device: cpu\n")).is_cpu());
  EXPECT_TRUE(resolve_device(config("training_args:\n  use_cpu: true\n")).is_cpu());
  // A local rank beyond the (zero) visible GPUs does not matter on the CPU.
  EXPECT_TRUE(resolve_device(config(""), 3).is_cpu());
}

TEST_F(DeviceTest, CudaWithoutAGpuIsAnErrorNamingTheKeyAndWhy) {
  auto cfg = config("device: cuda\n");
  const std::string e = error_of([&] { resolve_device(cfg, 0); });
  EXPECT_TRUE(contains(e, "c.yaml")) << e;
  EXPECT_TRUE(contains(e, "device: cuda")) << e;
  if (build_has_cuda())
    EXPECT_TRUE(contains(e, "no CUDA GPU is usable here")) << e;
  else
    EXPECT_TRUE(contains(e, "CUDA build of ftrun")) << e;
}

TEST_F(DeviceTest, CudaContradictingUseCpuIsAnError) {
  auto cfg = config("device: cuda\ntraining_args:\n  use_cpu: true\n");
  const std::string e = error_of([&] { resolve_device(cfg, 0); });
  EXPECT_TRUE(contains(e, "use_cpu")) << e;
}

TEST_F(DeviceTest, NoCudaIsReadAsUseCpuWithAWarning) {
  auto cfg = config("training_args:\n  no_cuda: true\n");
  EXPECT_TRUE(cfg.training_args.use_cpu);
  bool warned = false;
  for (const auto& w : cfg.warnings) warned = warned || (contains(w, "no_cuda") && contains(w, "use_cpu"));
  EXPECT_TRUE(warned);
  EXPECT_FALSE(config("training_args:\n  no_cuda: false\n").training_args.use_cpu);
}

TEST_F(DeviceTest, UnknownDeviceIsAConfigError) {
  const std::string e = error_of([&] { config("device: gpu\n"); });
  EXPECT_TRUE(contains(e, "device")) << e;
  EXPECT_TRUE(contains(e, "expected auto, cpu or cuda")) << e;
}

TEST_F(DeviceTest, CommBackendFollowsTheDevice) {
  const c10::Device cpu(c10::kCPU), gpu(c10::kCUDA, 0);
  // A world of one keeps the name (init_comm makes no backend for it).
  EXPECT_EQ(comm_backend_for(config(""), gpu, 1), "auto");
  // On the CPU, auto is gloo even where a GPU might exist; mpi stays mpi.
  EXPECT_EQ(comm_backend_for(config(""), cpu, 2), "gloo");
  EXPECT_EQ(comm_backend_for(config("comm_backend: mpi\n"), cpu, 2), "mpi");
  const std::string nccl_on_cpu = error_of([&] { comm_backend_for(config("comm_backend: nccl\n"), cpu, 2); });
  EXPECT_TRUE(contains(nccl_on_cpu, "comm_backend: nccl")) << nccl_on_cpu;
  // On a GPU, auto is nccl and host-memory backends are refused.
  EXPECT_EQ(comm_backend_for(config(""), gpu, 4), "nccl");
  EXPECT_EQ(comm_backend_for(config("comm_backend: nccl\n"), gpu, 4), "nccl");
  for (const char* b : {"gloo", "mpi"}) {
    const std::string e = error_of([&] { comm_backend_for(config(std::string("comm_backend: ") + b + "\n"), gpu, 2); });
    EXPECT_TRUE(contains(e, std::string("comm_backend: ") + b)) << e;
    EXPECT_TRUE(contains(e, "use comm_backend: nccl")) << e;
  }
}

TEST_F(DeviceTest, CpuBatchesAndPeaksAreUntouched) {
  ftrun::data::Batch b;
  b.input_ids = torch::arange(6).view({2, 3});
  b.attention_mask = torch::ones({2, 3}, torch::kLong);
  b.labels = torch::full({2, 3}, -100, torch::kLong);
  b.num_label_tokens = 0;
  auto same = batch_on(b, c10::Device(c10::kCPU));
  EXPECT_TRUE(same.input_ids.is_same(b.input_ids));
  EXPECT_TRUE(same.labels.is_same(b.labels));
  EXPECT_FALSE(cuda_peak_memory(c10::Device(c10::kCPU)).has_value());
}

}  // namespace
