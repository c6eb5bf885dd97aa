// The ChatGLM family (ChatGLM3, GLM-4): config parsing, weight names, the GLM rotary layout,
// padding behaviour, and exact parity with the independent Python re-implementation of
// THUDM's modeling_chatglm.py in tests/reference/chatglm_ref.py (logits to 1e-5, LoRA
// training steps to 1e-4 relative), which writes the model in THUDM's on-disk form.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "models/chatglm.h"
#include "models/model.h"
#include "tests/parity/reference_io.h"
#include "models/safetensors.h"
#include "models/tiny.h"
#include "peft/lora.h"
#include "peft/strategy.h"
#include "runtime/trainer.h"
#include "testing/tiny.h"

namespace fs = std::filesystem;
using namespace ftrun;
using namespace ftrun::models;

namespace {

// config.json of THUDM/glm-4-9b-chat and THUDM/chatglm3-6b as published (key sets and
// values; auto_map shortened to the entries that matter here).
const char* kGlm4Config = R"({
  "_name_or_path": "THUDM/glm-4-9b-chat", "model_type": "chatglm", "architectures": ["ChatGLMModel"],
  "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
               "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
               "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
               "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
               "AutoModelForSequenceClassification": "modeling_chatglm.ChatGLMForSequenceClassification"},
  "add_bias_linear": false, "add_qkv_bias": true, "apply_query_key_layer_scaling": true,
  "apply_residual_connection_post_layernorm": false, "attention_dropout": 0.0,
  "attention_softmax_in_fp32": true, "bias_dropout_fusion": true,
  "ffn_hidden_size": 13696, "fp32_residual_connection": false, "hidden_dropout": 0.0,
  "hidden_size": 4096, "kv_channels": 128, "layernorm_epsilon": 1.5625e-07,
  "multi_query_attention": true, "multi_query_group_num": 2, "num_attention_heads": 32,
  "num_hidden_layers": 40, "num_layers": 40, "rope_ratio": 500, "original_rope": true,
  "padded_vocab_size": 151552, "post_layer_norm": true, "rmsnorm": true, "seq_length": 131072,
  "use_cache": true, "torch_dtype": "bfloat16", "transformers_version": "4.44.0",
  "tie_word_embeddings": false, "eos_token_id": [151329, 151336, 151338], "pad_token_id": 151329})";

const char* kChatGlm3Config = R"({
  "_name_or_path": "THUDM/chatglm3-6b", "model_type": "chatglm", "architectures": ["ChatGLMModel"],
  "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
               "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
               "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
               "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration"},
  "add_bias_linear": false, "add_qkv_bias": true, "apply_query_key_layer_scaling": true,
  "apply_residual_connection_post_layernorm": false, "attention_dropout": 0.0,
  "attention_softmax_in_fp32": true, "bias_dropout_fusion": true, "ffn_hidden_size": 13696,
  "fp32_residual_connection": false, "hidden_dropout": 0.0, "hidden_size": 4096,
  "kv_channels": 128, "layernorm_epsilon": 1e-05, "multi_query_attention": true,
  "multi_query_group_num": 2, "num_attention_heads": 32, "num_layers": 28, "original_rope": true,
  "padded_vocab_size": 65024, "post_layer_norm": true, "rmsnorm": true, "seq_length": 8192,
  "use_cache": true, "torch_dtype": "float16", "transformers_version": "4.30.2",
  "tie_word_embeddings": false, "eos_token_id": 2, "pad_token_id": 0})";

TinySpec tiny_spec(const std::string& flavor) {
  TinySpec s = ftrun::testing::tiny_spec(61, {32, 40, 4, 2}, flavor);
  s.max_position_embeddings = 64;
  s.eos_token_id = 2;
  s.extra_eos_token_ids = {3, 4};
  s.pad_token_id = 0;
  return s;
}

ModelConfig tiny(const std::string& flavor = "glm4") {
  return parse_model_config(tiny_config(tiny_spec(flavor)), "tiny/config.json");
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("ftrun_chatglm_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::set<std::string> keys_of(const nlohmann::json& j) {
  std::set<std::string> out;
  for (const auto& kv : j.items()) out.insert(kv.key());
  return out;
}

void expect_config_error(nlohmann::json j, const std::string& phrase) {
  try {
    parse_model_config(j, "/m/config.json");
    ADD_FAILURE() << "expected an error containing: " << phrase;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("/m/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(phrase), std::string::npos) << msg;
  }
}

}  // namespace

TEST(ChatGLM, ParsesTheRealConfigFiles) {
  auto g4 = parse_model_config(nlohmann::json::parse(kGlm4Config), "glm4/config.json");
  EXPECT_EQ(g4.model_type, "chatglm");
  EXPECT_EQ(g4.vocab_size, 151552);
  EXPECT_EQ(g4.num_hidden_layers, 40);
  EXPECT_EQ(g4.hidden_size, 4096);
  EXPECT_EQ(g4.intermediate_size, 13696);
  EXPECT_EQ(g4.num_attention_heads, 32);
  EXPECT_EQ(g4.num_key_value_heads, 2);
  EXPECT_EQ(g4.head_dim, 128);
  EXPECT_EQ(g4.chatglm.rotary_dim, 64);
  EXPECT_EQ(g4.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(g4.rms_norm_eps, 1.5625e-07);
  EXPECT_DOUBLE_EQ(g4.chatglm.rope_ratio, 500.0);
  EXPECT_DOUBLE_EQ(g4.rope_theta, 5e6);
  EXPECT_TRUE(g4.qkv_bias);
  EXPECT_FALSE(g4.attention_bias);
  EXPECT_FALSE(g4.mlp_bias);
  EXPECT_FALSE(g4.tie_word_embeddings);
  EXPECT_EQ(g4.eos_token_id, (std::vector<int64_t>{151329, 151336, 151338}));
  EXPECT_EQ(g4.pad_token_id, 151329);
  EXPECT_EQ(g4.torch_dtype, "bfloat16");

  auto g3 = parse_model_config(nlohmann::json::parse(kChatGlm3Config), "glm3/config.json");
  EXPECT_EQ(g3.vocab_size, 65024);
  EXPECT_EQ(g3.num_hidden_layers, 28);
  EXPECT_EQ(g3.num_key_value_heads, 2);
  EXPECT_DOUBLE_EQ(g3.chatglm.rope_ratio, 1.0);  // no rope_ratio key in ChatGLM3-6B
  EXPECT_DOUBLE_EQ(g3.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(g3.rms_norm_eps, 1e-5);
  EXPECT_EQ(g3.eos_token_id, (std::vector<int64_t>{2}));
  EXPECT_EQ(g3.pad_token_id, 0);

  // GLM-4-9B: query_key_value is 4096 -> (32 + 2*2) * 128 = 4608 (formats.md, the demo notes).
  auto j = nlohmann::json::parse(kGlm4Config);
  j["num_layers"] = 1;
  j["padded_vocab_size"] = 8;
  j["ffn_hidden_size"] = 8;
  auto one = parse_model_config(j, "x/config.json");
  auto shapes = make_chatglm(one)->named_parameters();
  EXPECT_EQ(shapes["transformer.encoder.layers.0.self_attention.query_key_value.weight"].sizes(),
            (std::vector<int64_t>{4608, 4096}));
}

TEST(ChatGLM, ConfigErrorsNameFileAndKey) {
  auto good = nlohmann::json::parse(kGlm4Config);
  EXPECT_NO_THROW(parse_model_config(good, "/m/config.json"));
  auto with = [&](const char* key, nlohmann::json v) {
    auto j = good;
    j[key] = v;
    return j;
  };
  expect_config_error(with("rmsnorm", false), "'rmsnorm'");
  expect_config_error(with("apply_residual_connection_post_layernorm", true),
                      "'apply_residual_connection_post_layernorm'");
  expect_config_error(with("post_layer_norm", false), "'post_layer_norm'");
  expect_config_error(with("fp32_residual_connection", true), "'fp32_residual_connection'");
  expect_config_error(with("hidden_dropout", 0.1), "'hidden_dropout'");
  expect_config_error(with("pre_seq_len", 128), "'pre_seq_len'");
  expect_config_error(with("quantization_bit", 4), "'quantization_bit'");
  expect_config_error(with("multi_query_group_num", 3), "'multi_query_group_num'");
  expect_config_error(with("kv_channels", 126), "'kv_channels'");
  expect_config_error(with("rope_ratio", 0), "'rope_ratio'");
  expect_config_error(with("rmsnorm", "yes"), "'rmsnorm' must be true or false");
  expect_config_error(with("num_layers", "forty"), "'num_layers' must be an integer");
  for (const char* k : {"num_layers", "hidden_size", "ffn_hidden_size", "kv_channels", "num_attention_heads",
                        "padded_vocab_size"}) {
    auto j = good;
    j.erase(k);
    expect_config_error(j, std::string("missing required key '") + k + "'");
  }
  // original_rope is stored but never read by THUDM's rotary forward: either value is the
  // same model, so it is accepted; bias_dropout_fusion likewise.
  EXPECT_NO_THROW(parse_model_config(with("original_rope", false), "/m/config.json"));
  EXPECT_NO_THROW(parse_model_config(with("bias_dropout_fusion", false), "/m/config.json"));
  // Without multi-query attention every head has its own k/v.
  auto mha = parse_model_config(with("multi_query_attention", false), "/m/config.json");
  EXPECT_EQ(mha.num_key_value_heads, 32);
}

TEST(ChatGLM, TinyConfigsHaveTheRealKeySets) {
  auto t4 = tiny_config(tiny_spec("glm4"));
  auto t3 = tiny_config(tiny_spec("chatglm3"));
  EXPECT_EQ(keys_of(t4), keys_of(nlohmann::json::parse(kGlm4Config)));
  EXPECT_EQ(keys_of(t3), keys_of(nlohmann::json::parse(kChatGlm3Config)));
  EXPECT_EQ(t4["model_type"], "chatglm");
  EXPECT_EQ(t4["rope_ratio"], 500);
  EXPECT_EQ(t4["eos_token_id"], nlohmann::json({2, 3, 4}));
  EXPECT_EQ(t3["eos_token_id"], 2);
  EXPECT_FALSE(t3.contains("rope_ratio"));
  EXPECT_EQ(t4["kv_channels"], 8);
  EXPECT_EQ(t4["multi_query_group_num"], 2);
  EXPECT_EQ(t4["padded_vocab_size"], 61);
  auto c = tiny("glm4");
  EXPECT_EQ(c.vocab_size, 61);
  EXPECT_EQ(c.eos_token_id, (std::vector<int64_t>{2, 3, 4}));
}

TEST(ChatGLM, WeightNamesAreThudmNames) {
  torch::manual_seed(0);
  auto cfg = tiny("glm4");
  auto m = build_model(cfg);
  std::vector<std::string> want = {"transformer.embedding.word_embeddings.weight"};
  for (int i = 0; i < 2; ++i) {
    std::string p = "transformer.encoder.layers." + std::to_string(i) + ".";
    for (const char* n : {"input_layernorm.weight", "self_attention.query_key_value.weight",
                          "self_attention.query_key_value.bias", "self_attention.dense.weight",
                          "post_attention_layernorm.weight", "mlp.dense_h_to_4h.weight", "mlp.dense_4h_to_h.weight"})
      want.push_back(p + n);
  }
  want.push_back("transformer.encoder.final_layernorm.weight");
  want.push_back("transformer.output_layer.weight");
  EXPECT_EQ(m->base_parameter_names(), want);  // and in the checkpoint's order

  auto params = m->named_parameters();
  // heads 4, groups 2, kv_channels 8: (4 + 2*2) * 8 = 64 outputs
  EXPECT_EQ(params["transformer.encoder.layers.0.self_attention.query_key_value.weight"].sizes(),
            (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(params["transformer.encoder.layers.0.self_attention.dense.weight"].sizes(), (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(params["transformer.encoder.layers.0.mlp.dense_h_to_4h.weight"].sizes(), (std::vector<int64_t>{80, 32}));
  EXPECT_EQ(params["transformer.encoder.layers.0.mlp.dense_4h_to_h.weight"].sizes(), (std::vector<int64_t>{32, 40}));
  EXPECT_EQ(params["transformer.output_layer.weight"].sizes(), (std::vector<int64_t>{61, 32}));
  EXPECT_TRUE(params["transformer.encoder.layers.1.self_attention.query_key_value.bias"].eq(0).all().item<bool>());
  EXPECT_TRUE(params["transformer.encoder.final_layernorm.weight"].eq(1).all().item<bool>());

  // Every linear with its HF module path, so PEFT target names address them.
  std::set<std::string> lin;
  for (const auto& kv : m->linears()) lin.insert(kv.first);
  EXPECT_EQ(lin.size(), 2u * 4 + 1);
  for (const char* n : {"transformer.encoder.layers.0.self_attention.query_key_value",
                        "transformer.encoder.layers.1.self_attention.dense",
                        "transformer.encoder.layers.1.mlp.dense_h_to_4h",
                        "transformer.encoder.layers.0.mlp.dense_4h_to_h", "transformer.output_layer"})
    EXPECT_TRUE(lin.count(n)) << n;

  // LoRA targets resolve as in the GLM-4 demo (query_key_value) and LLaMA-Factory (all four).
  peft::LoraConfig lc;
  lc.target_modules = {"query_key_value"};
  EXPECT_EQ(peft::lora_targets(lc, *m),
            (std::vector<std::string>{"transformer.encoder.layers.0.self_attention.query_key_value",
                                      "transformer.encoder.layers.1.self_attention.query_key_value"}));
  lc.target_modules = {"dense", "dense_h_to_4h", "query_key_value", "dense_4h_to_h"};
  EXPECT_EQ(peft::lora_targets(lc, *m).size(), 8u);

  // Units: every parameter belongs to exactly the unit its prefix names.
  auto units = m->unit_prefixes();
  ASSERT_EQ(units.size(), 4u);
  for (const auto& name : want) {
    int hits = 0;
    for (const auto& u : units)
      for (const auto& p : u) hits += name.rfind(p, 0) == 0;
    EXPECT_EQ(hits, 1) << name;
  }
}

TEST(ChatGLM, RotaryRotatesPairsOfTheFirstHalfOnly) {
  // kv_channels 8 -> rotary_dim 4 = two pairs (x0,x1), (x2,x3); theta = (1, base^-1/2) with
  // base = 10000 * rope_ratio; features 4..7 carry no position.
  auto j = tiny_config(tiny_spec("glm4"));
  j["hidden_size"] = 16;
  j["num_attention_heads"] = 2;
  j["multi_query_group_num"] = 1;
  j["kv_channels"] = 8;
  j["rope_ratio"] = 2;
  auto c = parse_model_config(j, "rot/config.json");
  ASSERT_EQ(c.chatglm.rotary_dim, 4);
  auto pos = torch::tensor({3}, torch::kLong).view({1, 1});
  auto cache = chatglm_rope_cache(c, pos);  // [1, 1, 2, 2]
  ASSERT_EQ(cache.sizes(), (std::vector<int64_t>{1, 1, 2, 2}));
  double th1 = 1.0 / std::sqrt(20000.0);
  EXPECT_NEAR(cache[0][0][0][0].item<double>(), std::cos(3.0), 1e-6);
  EXPECT_NEAR(cache[0][0][0][1].item<double>(), std::sin(3.0), 1e-6);
  EXPECT_NEAR(cache[0][0][1][0].item<double>(), std::cos(3.0 * th1), 1e-6);
  EXPECT_NEAR(cache[0][0][1][1].item<double>(), std::sin(3.0 * th1), 1e-6);

  auto x = torch::tensor({1.0f, 0.0f, 0.0f, 1.0f, 5.0f, 6.0f, 7.0f, 8.0f}).view({1, 1, 1, 8});
  auto y = chatglm_apply_rotary(x, cache).flatten();
  // (1,0) rotated by 3 rad; (0,1) rotated by 3*th1: (0*c - 1*s, 1*c + 0*s) = (-s, c)
  std::vector<double> expect = {std::cos(3.0), std::sin(3.0), -std::sin(3.0 * th1), std::cos(3.0 * th1), 5, 6, 7, 8};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i].item<double>(), expect[i], 1e-6) << i;

  // The second half of every head is independent of position; position 0 is the identity.
  torch::manual_seed(1);
  auto xs = torch::randn({2, 3, 5, 8});
  auto positions = torch::tensor({0, 7, 2, 9, 4, 0, 1, 2, 3, 11}, torch::kLong).view({2, 5});
  auto r = chatglm_apply_rotary(xs, chatglm_rope_cache(c, positions));
  EXPECT_TRUE(torch::equal(r.narrow(-1, 4, 4), xs.narrow(-1, 4, 4)));
  EXPECT_TRUE(torch::equal(r.select(0, 0).select(1, 0), xs.select(0, 0).select(1, 0)));
  EXPECT_FALSE(torch::allclose(r.narrow(-1, 0, 4), xs.narrow(-1, 0, 4)));
  // Rotation keeps each pair's length.
  auto n_in = xs.narrow(-1, 0, 4).view({2, 3, 5, 2, 2}).pow(2).sum(-1);
  auto n_out = r.narrow(-1, 0, 4).view({2, 3, 5, 2, 2}).pow(2).sum(-1);
  EXPECT_TRUE(torch::allclose(n_in, n_out, 1e-5, 1e-5));
}

TEST(ChatGLM, PositionIdsFollowTheGlmTokenizer) {
  auto right = torch::tensor({1, 1, 1, 0, 0}, torch::kLong).view({1, 5});
  auto left = torch::tensor({0, 0, 1, 1, 1}, torch::kLong).view({1, 5});
  EXPECT_TRUE(torch::equal(chatglm_position_ids(right, 1, 5).flatten(), torch::tensor({0, 1, 2, 0, 0}, torch::kLong)));
  EXPECT_TRUE(torch::equal(chatglm_position_ids(left, 1, 5).flatten(), torch::tensor({0, 0, 0, 1, 2}, torch::kLong)));
  EXPECT_TRUE(torch::equal(chatglm_position_ids(at::Tensor(), 2, 3),
                           torch::tensor({0, 1, 2, 0, 1, 2}, torch::kLong).view({2, 3})));
}

TEST(ChatGLM, RealTokenLogitsDoNotDependOnPadding) {
  torch::manual_seed(3);
  auto m = build_model(tiny("glm4"));
  torch::NoGradGuard ng;
  auto toks = torch::tensor({5, 17, 33, 9, 41}, torch::kLong).view({1, 5});
  auto alone = m->forward(toks, at::Tensor());
  auto zeros = torch::zeros({1, 3}, torch::kLong);
  auto ones = torch::ones({1, 5}, torch::kLong);
  auto r_ids = torch::cat({toks, zeros}, 1), r_mask = torch::cat({ones, zeros}, 1);
  auto l_ids = torch::cat({zeros, toks}, 1), l_mask = torch::cat({zeros, ones}, 1);
  auto both = m->forward(torch::cat({r_ids, l_ids}), torch::cat({r_mask, l_mask}));
  EXPECT_LT((both[0].narrow(0, 0, 5) - alone[0]).abs().max().item<double>(), 1e-5);
  EXPECT_LT((both[1].narrow(0, 3, 5) - alone[0]).abs().max().item<double>(), 1e-5);
  EXPECT_TRUE(torch::isfinite(both).all().item<bool>());  // padding queries see all keys
  // An all-ones mask is the same as none; causal: a later token does not change earlier logits.
  EXPECT_LT((m->forward(toks, ones) - alone).abs().max().item<double>(), 1e-6);
  auto prefix = m->forward(toks.narrow(1, 0, 3), at::Tensor());
  EXPECT_LT((prefix[0] - alone[0].narrow(0, 0, 3)).abs().max().item<double>(), 1e-5);
  // Logits span the padded vocabulary.
  EXPECT_EQ(alone.size(2), 61);
  // Longer than seq_length (64) is refused, as THUDM's rotary table is that long.
  EXPECT_THROW(m->forward(torch::zeros({1, 65}, torch::kLong), at::Tensor()), std::exception);
}

TEST(ChatGLM, Bf16ForwardStaysCloseToFp32) {
  // GPU training computes in bf16: the rotary table and mask follow the model dtype.
  torch::manual_seed(4);
  auto m = build_model(tiny("chatglm3"));
  torch::NoGradGuard ng;
  auto ids = torch::tensor({5, 17, 33, 9, 41, 0, 0, 3, 8, 13, 21, 34}, torch::kLong).view({2, 6});
  auto mask = torch::tensor({1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}, torch::kLong).view({2, 6});
  auto full = m->forward(ids, mask);
  m->to(torch::kBFloat16);
  auto half = m->forward(ids, mask);
  EXPECT_EQ(half.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::isfinite(half).all().item<bool>());
  double scale = full.abs().max().item<double>();
  EXPECT_LT((half - full).abs().max().item<double>(), 0.1 * scale + 0.05);
}

TEST(ChatGLM, SaveLoadRoundTripIgnoresInvFreq) {
  auto dir = temp_dir("roundtrip");
  auto spec = tiny_spec("chatglm3");
  write_tiny_model((dir / "a").string(), spec);
  auto a = load_pretrained((dir / "a").string());
  EXPECT_EQ(a->config().model_type, "chatglm");
  // A checkpoint as THUDM ships it also holds the (unused) rotary buffer.
  auto tensors = st::load_all((dir / "a").string());
  st::NamedTensors list;
  for (const auto& kv : tensors) list.emplace_back(kv.first, kv.second);
  list.emplace_back("transformer.rotary_pos_emb.inv_freq", torch::ones({2}));
  fs::create_directories(dir / "b");
  fs::copy_file(dir / "a" / "config.json", dir / "b" / "config.json");
  st::save_model((dir / "b").string(), list);
  auto b = load_pretrained((dir / "b").string());
  auto ids = torch::tensor({1, 7, 9, 30}, torch::kLong).view({1, 4});
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::equal(a->forward(ids, at::Tensor()), b->forward(ids, at::Tensor())));
  // save_pretrained writes THUDM's names back and the config unchanged.
  save_pretrained(*b, (dir / "c").string());
  auto c = st::load_all((dir / "c").string());
  EXPECT_TRUE(c.count("transformer.encoder.layers.1.mlp.dense_4h_to_h.weight"));
  EXPECT_FALSE(c.count("transformer.rotary_pos_emb.inv_freq"));
  nlohmann::json saved;
  std::ifstream(dir / "c" / "config.json") >> saved;
  EXPECT_EQ(saved, tiny_config(spec));
  // A missing tensor is named.
  list.erase(std::remove_if(list.begin(), list.end(),
                            [](const auto& kv) { return kv.first == "transformer.output_layer.weight"; }),
             list.end());
  st::save_model((dir / "b").string(), list);
  try {
    load_pretrained((dir / "b").string());
    ADD_FAILURE() << "expected a missing-tensor error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("transformer.output_layer.weight"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Parity with tests/reference/chatglm_ref.py
// ---------------------------------------------------------------------------------------------

namespace {

struct Case {
  std::string make_args, data_args;
  std::vector<std::string> targets;
  int64_t r;
  double alpha, lr, weight_decay, max_grad_norm;
  int64_t warmup, grad_accum;
};

// Max |ftrun - reference| over all logits of all micro-batches (padding positions included:
// they follow THUDM's mask too).
double logits_diff(CausalLM& model, const std::vector<data::Batch>& batches, st::File& file,
                   const std::string& key) {
  torch::NoGradGuard ng;
  model.eval();
  double worst = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    auto ours = model.forward(batches[i].input_ids, batches[i].attention_mask);
    auto theirs = file.get(key + "." + std::to_string(i));
    EXPECT_EQ(ours.sizes(), theirs.sizes());
    if (ours.sizes() != theirs.sizes()) return 1e9;
    worst = std::max(worst, (ours - theirs).abs().max().item<double>());
  }
  return worst;
}

void check_case(const std::string& name, const Case& c) {
  auto dir = temp_dir("parity_" + name);
  std::string ref = ftrun::testing::reference_python() + " " FTRUN_SOURCE_DIR "/tests/reference/chatglm_ref.py";
  std::string targets;
  for (const auto& t : c.targets) targets += (targets.empty() ? "" : ",") + t;
  ftrun::testing::run_reference(ref + " make --out " + (dir / "model").string() + " " + c.make_args);
  ftrun::testing::run_reference(ref + " data --out " + (dir / "data.json").string() + " --seed 3 --micro-batches 6 --batch 2 --seq 12 " +
      "--prompt-len 3 " + c.data_args);
  ftrun::testing::run_reference(ref + " run --model " + (dir / "model").string() + " --data " + (dir / "data.json").string() + " --out " +
      (dir / "ref").string() + " --r " + std::to_string(c.r) + " --alpha " + std::to_string(c.alpha) +
      " --target-modules " + targets + " --seed 5 --nonzero-b --lr " + std::to_string(c.lr) +
      " --weight-decay " + std::to_string(c.weight_decay) + " --warmup-steps " + std::to_string(c.warmup) +
      " --max-grad-norm " + std::to_string(c.max_grad_norm) + " --grad-accum " + std::to_string(c.grad_accum) +
      " --num-items shifted --positions tokenizer");

  nlohmann::json golden, data_json;
  std::ifstream(dir / "ref" / "golden.json") >> golden;
  std::ifstream(dir / "data.json") >> data_json;
  auto batches = ftrun::testing::load_reference_batches(data_json);
  auto logits_file = st::File::open((dir / "ref" / "logits.safetensors").string());

  // The model directory as the reference wrote it (THUDM names, inv_freq buffer), unchanged.
  auto model = load_pretrained((dir / "model").string());
  double d_base = logits_diff(*model, batches, *logits_file, "logits_base");
  EXPECT_LT(d_base, 1e-5) << name << " base logits";

  nlohmann::json peft_cfg = {{"peft_type", "LORA"}, {"r", c.r}, {"lora_alpha", c.alpha},
                             {"lora_dropout", 0.0}, {"target_modules", c.targets}};
  auto strategy = peft::make_strategy(peft_cfg);
  strategy->apply(*model);
  strategy->load((dir / "ref" / "start_adapter").string());
  double d_adapter = logits_diff(*model, batches, *logits_file, "logits_adapter");
  EXPECT_LT(d_adapter, 1e-5) << name << " adapter logits";

  runtime::TrainingArgs args;
  args.learning_rate = c.lr;
  args.weight_decay = c.weight_decay;
  args.warmup_steps = c.warmup;
  args.max_grad_norm = c.max_grad_norm;
  args.gradient_accumulation_steps = c.grad_accum;
  int64_t steps = golden["loss_per_step"].size();
  ASSERT_GT(steps, 0);
  runtime::Stepper stepper(*model, strategy->trainable(), args, steps);
  double worst_rel = 0;
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<data::Batch> micro(batches.begin() + s * c.grad_accum, batches.begin() + (s + 1) * c.grad_accum);
    auto st = stepper.step(micro);
    double ref_loss = golden["loss_per_step"][s].get<double>();
    EXPECT_NEAR(st.loss, ref_loss, 1e-4 * std::abs(ref_loss)) << name << " step " << s;
    double ref_norm = golden["grad_norm_per_step"][s].get<double>();
    EXPECT_NEAR(st.grad_norm, ref_norm, 1e-4 * std::abs(ref_norm)) << name << " step " << s;
    EXPECT_NEAR(st.lr, golden["lr_per_step"][s].get<double>(), 1e-12) << name << " step " << s;
    worst_rel = std::max(worst_rel, std::abs(st.loss - ref_loss) / std::abs(ref_loss));
  }
  double d_final = logits_diff(*model, batches, *logits_file, "logits_final");
  EXPECT_LT(d_final, 1e-5) << name << " final logits";
  auto final_file = st::File::open(golden["final_adapter"].get<std::string>());
  double d_weights = 0;
  for (const auto& kv : strategy->trainable()) {
    auto theirs = final_file->get(kv.first);
    d_weights = std::max(d_weights, (kv.second - theirs).abs().max().item<double>());
  }
  EXPECT_LT(d_weights, 1e-5) << name << " final LoRA weights";
  std::cout << "[ parity  ] " << name << ": max |logit diff| base " << d_base << ", adapter " << d_adapter
            << ", final " << d_final << "; max rel loss diff " << worst_rel << "; LoRA weights " << d_weights
            << " (" << steps << " steps)\n";
  fs::remove_all(dir);
}

}  // namespace

TEST(ChatGLMParity, ChatGLM3QueryKeyValueLoraRightPadding) {
  check_case("chatglm3", {"--flavor chatglm3 --seed 1 --vocab 97 --hidden 32 --layers 2 --heads 4 --groups 2 --ffn 48",
                          "--vocab 90 --padding-side right",
                          {"query_key_value"},
                          4, 32.0, 5e-3, 0.0, 1.0, 0, 1});
}

TEST(ChatGLMParity, Glm4AllLinearTargetsGradAccumRightPadding) {
  check_case("glm4", {"--flavor glm4 --seed 2 --vocab 101 --hidden 48 --layers 2 --heads 4 --groups 2 --ffn 40",
                      "--vocab 96 --padding-side right",
                      {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
                      4, 8.0, 5e-3, 0.01, 1.0, 1, 2});
}

TEST(ChatGLMParity, Glm4LeftPaddingAsTheDemoCollates) {
  check_case("glm4_left", {"--flavor glm4 --seed 4 --vocab 89 --hidden 32 --layers 2 --heads 4 --groups 1 --ffn 40 "
                           "--rope-ratio 50",
                           "--vocab 89 --padding-side left",
                           {"query_key_value", "dense_4h_to_h"},
                           2, 16.0, 1e-2, 0.0, 0.5, 0, 3});
}

TEST(ChatGLMParity, PerHeadQkvLayoutWithLinearBiases) {
  check_case("mha_bias", {"--flavor chatglm3 --seed 6 --vocab 71 --hidden 24 --layers 1 --heads 3 --no-mqa "
                          "--add-bias-linear --kv-channels 12 --ffn 36",
                          "--vocab 71 --padding-side right",
                          {"query_key_value", "dense"},
                          3, 6.0, 2e-2, 0.1, 0.0, 0, 2});
}
