// load_pretrained without a second copy (HF's low_cpu_mem_usage): the model is made in the
// target dtype without init and each checkpoint tensor is read into its parameter. These
// tests hold it to the old path (build_model + load_weights + to(dtype)) bit for bit, in its
// values and in the CPU generator's state afterwards (seeded runs draw their adapters after
// loading), and bound the bytes it allocates with the counting allocator.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "models/model.h"
#include "models/safetensors.h"
#include "models/tiny.h"
#include "testing/alloc_counter.h"

namespace fs = std::filesystem;
using namespace ftrun::models;

namespace {

ModelConfig config_of(const std::string& type, bool tie = false, int64_t hidden = 32, int64_t vocab = 50,
                      int64_t ffn = 48) {
  TinySpec s;
  s.model_type = type;
  s.vocab_size = vocab;
  s.hidden_size = hidden;
  s.intermediate_size = ffn;
  s.num_attention_heads = 4;
  s.num_key_value_heads = 2;
  s.tie_word_embeddings = tie;
  return parse_model_config(tiny_config(s), "tiny/config.json");
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("ftrun_load_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A random model of `cfg` saved (in `dtype`) to dir; its config.json gets the path dir.
void write_model(const ModelConfig& cfg, const fs::path& dir, at::ScalarType dtype, uint64_t seed = 1) {
  torch::manual_seed(seed);
  auto m = build_model(cfg);
  m->to(dtype);
  save_pretrained(*m, dir.string());
}

// The path load_pretrained took before: fp32 build with init, load, then cast.
std::shared_ptr<CausalLM> old_load(const fs::path& dir, at::ScalarType dtype) {
  auto m = build_model(load_model_config(dir.string()));
  load_weights(*m, dir.string());
  m->to(dtype);
  return m;
}

void expect_same_parameters(CausalLM& a, CausalLM& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& kv : pa) {
    ASSERT_TRUE(pb.contains(kv.key())) << kv.key();
    const auto& x = kv.value();
    const auto& y = pb[kv.key()];
    EXPECT_EQ(x.scalar_type(), y.scalar_type()) << kv.key();
    EXPECT_EQ(x.requires_grad(), y.requires_grad()) << kv.key();
    EXPECT_TRUE(torch::equal(x, y)) << kv.key();
  }
  EXPECT_EQ(a.base_parameter_names(), b.base_parameter_names());
}

int64_t model_bytes(CausalLM& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel() * int64_t(p.element_size());
  return n;
}

}  // namespace

TEST(Load, SkippingDrawsEqualsDrawing) {
  for (uint64_t n : {0ull, 1ull, 2ull, 622ull, 623ull, 624ull, 625ull, 1247ull, 1248ull, 1249ull, 100003ull}) {
    for (int pre : {0, 1, 300}) {  // the engine part-way through a block, too
      torch::manual_seed(17);
      auto gen = at::detail::getDefaultCPUGenerator();
      auto* impl = gen.get<at::CPUGeneratorImpl>();
      for (int i = 0; i < pre; ++i) impl->random();
      for (uint64_t i = 0; i < n; ++i) impl->random();
      auto want = torch::rand({40});
      torch::manual_seed(17);
      for (int i = 0; i < pre; ++i) impl->random();
      advance_cpu_rng(n);
      EXPECT_TRUE(torch::equal(torch::rand({40}), want)) << n << " draws after " << pre;
    }
  }
}

TEST(Load, EqualsBuildLoadCastAndLeavesTheGeneratorAsBuildModel) {
  struct Case {
    std::string type;
    bool tie;
  };
  for (const Case& c : {Case{"llama", false}, Case{"llama", true}, Case{"qwen2", false}, Case{"glm4", false},
                        Case{"chatglm3", false}}) {
    auto cfg = config_of(c.type, c.tie);
    for (auto file_dtype : {at::kFloat, at::kBFloat16}) {
      auto dir = temp_dir(c.type);
      write_model(cfg, dir, file_dtype);
      for (auto dtype : {at::kFloat, at::kBFloat16}) {
        SCOPED_TRACE(c.type + (c.tie ? " tied" : "") + ", file " + c10::toString(file_dtype) + ", model " +
                     c10::toString(dtype));
        torch::manual_seed(23);
        auto old = old_load(dir, dtype);
        auto old_next = torch::rand({64});
        torch::manual_seed(23);
        auto fresh = load_pretrained(dir.string(), dtype);
        auto fresh_next = torch::rand({64});
        expect_same_parameters(*fresh, *old);
        EXPECT_TRUE(torch::equal(fresh_next, old_next)) << "generator state after loading differs";
        for (const auto& p : fresh->parameters()) EXPECT_EQ(p.scalar_type(), dtype);
        torch::NoGradGuard ng;
        auto x = torch::tensor({3, 1, 4, 1, 5}, torch::kLong).view({1, -1});
        EXPECT_TRUE(torch::equal(fresh->forward(x, {}), old->forward(x, {})));
      }
      fs::remove_all(dir);
    }
  }
}

TEST(Load, MissingTensorStillAnErrorInEveryDtype) {
  for (const std::string type : {"llama", "glm4"}) {
    auto cfg = config_of(type);
    auto dir = temp_dir("missing_" + type);
    write_model(cfg, dir, at::kBFloat16);
    auto all = ftrun::st::load_all(dir.string());
    const std::string victim = type == "llama" ? "model.layers.1.mlp.up_proj.weight"
                                               : "transformer.encoder.layers.1.mlp.dense_h_to_4h.weight";
    ASSERT_TRUE(all.erase(victim));
    ftrun::st::NamedTensors v(all.begin(), all.end());
    ftrun::st::save((dir / "model.safetensors").string(), v);
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      try {
        load_pretrained(dir.string(), dtype);
        FAIL() << "expected a missing-tensor error";
      } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find("missing tensors: " + victim), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(dir.string()), std::string::npos) << e.what();
      }
    }
    fs::remove_all(dir);
  }
}

TEST(Load, Bf16CheckpointLoadsWithoutAnFp32Copy) {
  // Big enough that the weights dominate: vocab 4096 x hidden 256, ffn 768.
  for (const std::string type : {"llama", "glm4"}) {
    auto cfg = config_of(type, false, 256, 4096, 768);
    auto dir = temp_dir("peak_" + type);
    write_model(cfg, dir, at::kBFloat16);
    std::shared_ptr<CausalLM> m;
    const int64_t peak = ftrun::testing::peak_extra_bytes([&] { m = load_pretrained(dir.string(), at::kBFloat16); });
    const int64_t bf16 = model_bytes(*m);
    // The model itself and nothing like a second copy (the old path held 2x fp32 = 4x this).
    EXPECT_LT(double(peak), 1.5 * double(bf16)) << type << ": peak " << peak << " bytes, model " << bf16;
    EXPECT_GE(peak, bf16);
    m.reset();

    // An fp32 checkpoint into bf16: cast one read chunk at a time (the model plus at most one
    // chunk; here the largest fp32 tensor, the embedding or the head, is under 64 MiB).
    write_model(cfg, dir, at::kFloat);
    const int64_t peak32 =
        ftrun::testing::peak_extra_bytes([&] { m = load_pretrained(dir.string(), at::kBFloat16); });
    const int64_t largest = cfg.vocab_size * cfg.hidden_size * 4;
    EXPECT_LT(double(peak32), 1.1 * double(bf16 + largest)) << type << ": peak " << peak32 << " bytes";
    fs::remove_all(dir);
  }
}

TEST(Load, ReadIntoEqualsGetAcrossChunks) {
  // Tensors over the 64 MiB read chunk, odd-sized, same dtype and cast both ways.
  auto dir = temp_dir("chunks");
  torch::manual_seed(31);
  auto a = torch::randn({40'000'003}).to(at::kBFloat16);  // 80 MB of bf16
  auto b = torch::randn({3, 7'000'001});                  // 84 MB of fp32
  const auto path = (dir / "t.safetensors").string();
  ftrun::st::save(path, {{"a", a}, {"b", b}});
  auto f = ftrun::st::File::open(path);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (const char* name : {"a", "b"}) {
      auto want = f->get(name).to(dtype);
      auto got = torch::empty(want.sizes(), torch::TensorOptions().dtype(dtype));
      f->read_into(name, got);
      EXPECT_TRUE(torch::equal(got, want)) << name << " into " << c10::toString(dtype);
    }
  }
  fs::remove_all(dir);
}
