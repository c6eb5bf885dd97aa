// Checks load_pretrained makes before and while it allocates (issue 16, "Check before
// allocating" and "Numeric health"): config.json against the safetensors headers before any
// weight exists (hidden_size 10^9, vocab_size 10^12, a layer count the weights lack), the
// memory estimate for absurd sizes when there are no weights to compare with (build_model),
// and NaN / inf in a loaded weight named with its tensor and file. Each on the llama and the
// glm4 (ChatGLM key set) tiny models.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>

#include "models/model.h"
#include "models/safetensors.h"
#include "models/tiny.h"

namespace fs = std::filesystem;
using namespace ftrun::models;

namespace {

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("ftrun_load_checks_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

nlohmann::json tiny_json(const std::string& type) {
  TinySpec s;
  s.model_type = type;
  s.vocab_size = 50;
  s.hidden_size = 32;
  s.intermediate_size = 48;
  s.num_attention_heads = 4;
  s.num_key_value_heads = 2;
  return tiny_config(s);
}

// A random tiny model of `type` saved to dir.
void write_model(const std::string& type, const fs::path& dir) {
  torch::manual_seed(1);
  auto m = build_model(parse_model_config(tiny_json(type), "tiny/config.json"));
  save_pretrained(*m, dir.string());
}

void edit_config(const fs::path& dir, const std::string& key, const nlohmann::json& value) {
  auto p = dir / "config.json";
  nlohmann::json j;
  std::ifstream(p) >> j;
  j[key] = value;
  std::ofstream(p) << j.dump(2);
}

// load_pretrained's error, or "" when it loaded.
std::string load_error(const fs::path& dir, at::ScalarType dtype = at::kFloat) {
  try {
    load_pretrained(dir.string(), dtype);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

void expect_has(const std::string& msg, const std::vector<std::string>& parts) {
  ASSERT_FALSE(msg.empty()) << "expected an error";
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
  EXPECT_EQ(msg.find("frame #"), std::string::npos) << msg;
}

const char* embedding_of(const std::string& type) {
  return type == "llama" ? "model.embed_tokens.weight" : "transformer.embedding.word_embeddings.weight";
}

}  // namespace

TEST(ModelLoadChecks, HiddenSizeOfABillionIsRefusedBeforeAllocating) {
  for (const std::string type : {"llama", "glm4"}) {
    auto dir = temp_dir("hidden_" + type);
    write_model(type, dir);
    edit_config(dir, "hidden_size", int64_t(1000000000));
    const auto t0 = std::chrono::steady_clock::now();
    auto msg = load_error(dir);
    // Refused from the headers: nothing of 10^9 * 50 floats was ever asked of the allocator.
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
    expect_has(msg, {"hidden_size 1000000000", (dir / "config.json").string(),
                     (dir / "model.safetensors").string(), "has shape"});
    fs::remove_all(dir);
  }
}

TEST(ModelLoadChecks, VocabSizeOfATrillionIsRefusedBeforeAllocating) {
  for (const std::string type : {"llama", "glm4"}) {
    auto dir = temp_dir("vocab_" + type);
    write_model(type, dir);
    // The ChatGLM key set spells it padded_vocab_size; the error names the key the file uses.
    const std::string key = type == "llama" ? "vocab_size" : "padded_vocab_size";
    edit_config(dir, key, int64_t(1000000000000));
    expect_has(load_error(dir, at::kBFloat16), {key + " 1000000000000", (dir / "config.json").string(),
                                                (dir / "model.safetensors").string(), embedding_of(type),
                                                "has shape [50, 32]"});
    fs::remove_all(dir);
  }
}

TEST(ModelLoadChecks, MoreLayersThanTheWeightsHoldIsRefusedBeforeAllocating) {
  for (const std::string type : {"llama", "glm4"}) {
    auto dir = temp_dir("layers_" + type);
    write_model(type, dir);
    const std::string key = type == "llama" ? "num_hidden_layers" : "num_layers";
    edit_config(dir, key, int64_t(1000000));
    expect_has(load_error(dir), {key + " is 1000000", "hold 2 layers", (dir / "config.json").string()});
    fs::remove_all(dir);
  }
}

TEST(ModelLoadChecks, IntermediateSizeMismatchNamesTheKey) {
  auto dir = temp_dir("ffn");
  write_model("glm4", dir);
  edit_config(dir, "ffn_hidden_size", int64_t(4096));
  expect_has(load_error(dir), {"ffn_hidden_size 4096", "dense_4h_to_h.weight", "has shape [32, 48]"});
  fs::remove_all(dir);
}

TEST(ModelLoadChecks, AbsurdSizesWithoutWeightsGetAMemoryEstimate) {
  auto j = tiny_json("llama");
  j["hidden_size"] = int64_t(1000000000);
  j["head_dim"] = 8;
  auto cfg = parse_model_config(j, "/m/config.json");
  try {
    build_model(cfg);
    FAIL() << "expected the memory estimate's error";
  } catch (const std::exception& e) {
    expect_has(e.what(), {"/m/config.json", "needs ~", "GB in float32; this machine has", "hidden_size 1000000000"});
  }
  // An ordinary size passes the estimate.
  EXPECT_NO_THROW(check_model_fits_memory(parse_model_config(tiny_json("llama"), "t"), 4, "float32"));
  EXPECT_GT(estimate_parameters(cfg), 1e10);
}

// Issue 16: rope_theta -1 gave NaN rotary angles and a NaN loss from step 1; zero, negative
// and non-numbers are refused at parse time naming config.json and the key. HF's default
// (absent) and ordinary bases still parse.
TEST(ModelLoadChecks, RopeThetaMustBePositive) {
  for (const nlohmann::json& bad : {nlohmann::json(-1), nlohmann::json(0), nlohmann::json(-1e4)}) {
    auto j = tiny_json("llama");
    j["rope_theta"] = bad;
    try {
      parse_model_config(j, "/m/config.json");
      ADD_FAILURE() << "rope_theta " << bad.dump() << " was accepted";
    } catch (const std::exception& e) {
      expect_has(e.what(), {"/m/config.json", "'rope_theta'", "positive", bad.dump()});
    }
  }
  auto j = tiny_json("llama");
  j.erase("rope_theta");
  EXPECT_EQ(parse_model_config(j, "t").rope_theta, 10000.0);
  j["rope_theta"] = 500000.0;
  EXPECT_EQ(parse_model_config(j, "t").rope_theta, 500000.0);
}

TEST(ModelLoadChecks, NonFiniteWeightsAreAnErrorNamingTensorAndFile) {
  for (const std::string type : {"llama", "glm4"}) {
    auto dir = temp_dir("nan_" + type);
    write_model(type, dir);
    auto all = ftrun::st::load_all(dir.string());
    const std::string victim = type == "llama" ? "model.layers.1.mlp.up_proj.weight"
                                               : "transformer.encoder.layers.1.mlp.dense_h_to_4h.weight";
    auto rewrite = [&](float value, int64_t at) {
      auto t = all;
      t[victim] = t[victim].clone();
      t[victim].view({-1})[at] = value;
      ftrun::st::NamedTensors v(t.begin(), t.end());
      ftrun::st::save((dir / "model.safetensors").string(), v);
    };
    rewrite(std::numeric_limits<float>::quiet_NaN(), 17);
    for (auto dtype : {at::kFloat, at::kBFloat16})
      expect_has(load_error(dir, dtype), {(dir / "model.safetensors").string(), "'" + victim + "'", "NaN",
                                          "first at element 17"});
    rewrite(-std::numeric_limits<float>::infinity(), 3);
    expect_has(load_error(dir), {"'" + victim + "'", "inf", "first at element 3"});
    // load_weights into an existing model checks the same way.
    auto m = build_model(load_model_config(dir.string()));
    try {
      load_weights(*m, dir.string());
      FAIL() << "expected an error";
    } catch (const std::exception& e) {
      expect_has(e.what(), {"'" + victim + "'", "inf"});
    }
    fs::remove_all(dir);
  }
}

TEST(ModelLoadChecks, IntactModelsStillLoad) {
  for (const std::string type : {"llama", "glm4"}) {
    auto dir = temp_dir("ok_" + type);
    write_model(type, dir);
    EXPECT_EQ(load_error(dir), "");
    EXPECT_EQ(load_error(dir, at::kBFloat16), "");
    fs::remove_all(dir);
  }
}
