// Tests of the config loader: the shipped configs load with the demo's values, YAML 1.2
// typing, HF defaults, and that every mistake is reported with file, line, key and a hint.
#include "runtime/config.h"

#include <gtest/gtest.h>
#include <torch/version.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/log.h"

namespace fs = std::filesystem;
using ftrun::runtime::accepted_keys;
using ftrun::runtime::closest_key;
using ftrun::runtime::Config;
using ftrun::runtime::config_to_json;
using ftrun::runtime::KeyClass;
using ftrun::runtime::load_config;
using ftrun::runtime::yaml12_scalar;
using nlohmann::json;

namespace {

std::string repo(const std::string& rel) { return std::string(FTRUN_SOURCE_DIR) + "/" + rel; }

bool has_warning(const Config& c, const std::string& needle) {
  for (const auto& w : c.warnings)
    if (w.find(needle) != std::string::npos) return true;
  return false;
}

// A minimal valid config; tests append to it or replace pieces.
const char* kBase =
    "data_config:\n"          // 1
    "  train_file: train.jsonl\n"  // 2
    "  val_file: dev.jsonl\n"      // 3
    "max_input_length: 64\n"       // 4
    "max_output_length: 32\n";     // 5

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ftrun-config-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& text, const std::string& name = "c.yaml") {
    const std::string path = (fs::path(dir_) / name).string();
    std::ofstream(path) << text;
    return path;
  }
  // The message of the error that loading `text` raises ("" if it loads).
  std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}) {
    const std::string path = write(text);
    try {
      load_config(path, sets);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }
  std::string file() const { return (fs::path(dir_) / "c.yaml").string(); }

  std::string dir_;
};

// ---- shipped configs -----------------------------------------------------------------------

TEST(ShippedConfigs, LoraMatchesTheDemo) {
  const Config c = load_config(repo("configs/lora.yaml"));
  EXPECT_EQ(c.data_config.train_file, "train.jsonl");
  EXPECT_EQ(c.data_config.val_file, "dev.jsonl");
  EXPECT_EQ(c.data_config.test_file, "dev.jsonl");
  EXPECT_EQ(c.data_config.num_proc, 1);
  EXPECT_TRUE(c.combine);
  EXPECT_TRUE(c.freezeV);
  EXPECT_EQ(c.max_input_length, 512);
  EXPECT_EQ(c.max_output_length, 512);
  const auto& t = c.training_args;
  EXPECT_EQ(t.output_dir, "./output");
  EXPECT_EQ(t.max_steps, 3000);
  EXPECT_DOUBLE_EQ(t.learning_rate, 5e-4);
  EXPECT_EQ(t.per_device_train_batch_size, 1);
  EXPECT_EQ(t.dataloader_num_workers, 16);
  EXPECT_EQ(t.save_strategy, "steps");
  EXPECT_EQ(t.save_steps, 500);
  EXPECT_EQ(t.log_level, "info");
  EXPECT_EQ(t.logging_strategy, "steps");
  EXPECT_EQ(t.logging_steps, 10);
  EXPECT_EQ(t.per_device_eval_batch_size, 4);
  EXPECT_EQ(t.eval_strategy, "steps");
  EXPECT_EQ(t.eval_steps, 500);
  EXPECT_TRUE(t.predict_with_generate);
  EXPECT_EQ(t.generation_config, json({{"max_new_tokens", 512}}));
  EXPECT_EQ(t.deepspeed, "");  // commented out in the demo's lora.yaml
  // keys the file does not set keep HF's defaults
  EXPECT_EQ(t.lr_scheduler_type, "linear");
  EXPECT_DOUBLE_EQ(t.adam_epsilon, 1e-8);
  EXPECT_EQ(t.gradient_accumulation_steps, 1);
  EXPECT_EQ(t.seed, 42);

  ASSERT_TRUE(c.peft_config.is_object());
  EXPECT_EQ(c.peft_config["peft_type"], "LORA");
  EXPECT_EQ(c.peft_config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(c.peft_config["r"], 8);
  EXPECT_TRUE(c.peft_config["r"].is_number_integer());
  EXPECT_EQ(c.peft_config["lora_alpha"], 32);
  EXPECT_DOUBLE_EQ(c.peft_config["lora_dropout"].get<double>(), 0.1);
  EXPECT_EQ(c.peft_config["target_modules"], json::array({"query_key_value"}));

  EXPECT_TRUE(has_warning(c, "training_args.remove_unused_columns"));
  EXPECT_TRUE(has_warning(c, "freezeV"));
  EXPECT_EQ(c.model_dir, "");
  EXPECT_EQ(c.data_dir, "");
}

TEST(ShippedConfigs, PtuningV2DiffersOnlyWhereTheDemoDoes) {
  const Config c = load_config(repo("configs/ptuning_v2.yaml"));
  const auto& t = c.training_args;
  EXPECT_EQ(t.per_device_train_batch_size, 4);
  EXPECT_EQ(t.per_device_eval_batch_size, 16);
  EXPECT_DOUBLE_EQ(t.learning_rate, 5e-4);
  EXPECT_EQ(t.deepspeed, "");
  EXPECT_EQ(t.max_steps, 3000);
  EXPECT_EQ(c.max_input_length, 512);
  EXPECT_EQ(c.peft_config["peft_type"], "PREFIX_TUNING");
  EXPECT_EQ(c.peft_config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(c.peft_config["num_virtual_tokens"], 512);
  EXPECT_EQ(c.peft_config["num_attention_heads"], 2);
  EXPECT_EQ(c.peft_config["token_dim"], 256);
  EXPECT_FALSE(c.peft_config.contains("prefix_projection"));
}

TEST(ShippedConfigs, SftIsFullFineTuningWithZero3) {
  const Config c = load_config(repo("configs/sft.yaml"));
  const auto& t = c.training_args;
  EXPECT_EQ(t.per_device_train_batch_size, 1);
  EXPECT_EQ(t.per_device_eval_batch_size, 16);
  EXPECT_DOUBLE_EQ(t.learning_rate, 5e-5);
  EXPECT_EQ(t.deepspeed, "configs/ds_zero_3.json");
  EXPECT_TRUE(c.peft_config.is_null());
}

TEST(ShippedConfigs, DeepSpeedFilesMatchTheDemo) {
  const json z2 = json::parse(std::ifstream(repo("configs/ds_zero_2.json")));
  EXPECT_EQ(z2["zero_optimization"]["stage"], 2);
  EXPECT_DOUBLE_EQ(z2["zero_optimization"]["allgather_bucket_size"].get<double>(), 5e8);
  EXPECT_DOUBLE_EQ(z2["zero_optimization"]["reduce_bucket_size"].get<double>(), 5e8);
  EXPECT_EQ(z2["fp16"]["enabled"], "auto");
  EXPECT_EQ(z2["fp16"]["initial_scale_power"], 16);
  EXPECT_EQ(z2["bf16"]["enabled"], "auto");
  EXPECT_EQ(z2["train_micro_batch_size_per_gpu"], "auto");
  EXPECT_EQ(z2["steps_per_print"], 2000);
  EXPECT_FALSE(z2.contains("optimizer"));
  EXPECT_FALSE(z2.contains("scheduler"));

  const json z3 = json::parse(std::ifstream(repo("configs/ds_zero_3.json")));
  EXPECT_EQ(z3["zero_optimization"]["stage"], 3);
  EXPECT_DOUBLE_EQ(z3["zero_optimization"]["sub_group_size"].get<double>(), 1e9);
  EXPECT_DOUBLE_EQ(z3["zero_optimization"]["stage3_max_live_parameters"].get<double>(), 1e9);
  EXPECT_EQ(z3["zero_optimization"]["reduce_bucket_size"], "auto");
  EXPECT_EQ(z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"], true);
  EXPECT_EQ(z3["optimizer"]["type"], "AdamW");
  EXPECT_EQ(z3["optimizer"]["params"]["lr"], "auto");
  EXPECT_EQ(z3["zero_allow_untested_optimizer"], true);
  EXPECT_FALSE(z3.contains("scheduler"));
}

TEST(ShippedConfigs, TinyLoraRunsOnTheEmbeddedModel) {
  const Config c = load_config(repo("configs/tiny/lora.yaml"));
  EXPECT_EQ(c.model_dir, "examples/tiny/model");
  EXPECT_EQ(c.data_dir, "examples/tiny");
  EXPECT_EQ(c.chat_template, "llama3");
  EXPECT_EQ(c.data_config.train_file, "examples/tiny/train.jsonl");
  EXPECT_EQ(c.data_config.val_file, "examples/tiny/dev.jsonl");
  EXPECT_EQ(c.data_config.test_file, "examples/tiny/dev.jsonl");
  EXPECT_EQ(c.max_input_length, 128);
  EXPECT_EQ(c.max_output_length, 64);
  const auto& t = c.training_args;
  EXPECT_EQ(t.output_dir, "./output/tiny-lora");
  EXPECT_EQ(t.max_steps, 60);
  EXPECT_DOUBLE_EQ(t.learning_rate, 5e-3);
  EXPECT_EQ(t.per_device_train_batch_size, 8);
  EXPECT_EQ(t.logging_steps, 10);
  EXPECT_EQ(t.save_steps, 60);
  EXPECT_EQ(t.eval_strategy, "no");
  EXPECT_EQ(t.generation_config["max_new_tokens"], 32);
  EXPECT_EQ(c.peft_config["peft_type"], "LORA");
  EXPECT_EQ(c.peft_config["r"], 8);
  EXPECT_EQ(c.peft_config["lora_alpha"], 32);
  EXPECT_DOUBLE_EQ(c.peft_config["lora_dropout"].get<double>(), 0.0);
  EXPECT_EQ(c.peft_config["target_modules"].size(), 7u);
  EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
}

// ---- YAML 1.2 typing -----------------------------------------------------------------------

TEST(Yaml12Scalar, NumbersFollowTheCoreSchema) {
  for (const char* s : {"5e-4", "5e8", "1e9", "1.0e9", "1.5", ".5", "1.", "-2.5E+3", "+1e2"})
    EXPECT_TRUE(yaml12_scalar(s).is_number_float()) << s;
  EXPECT_DOUBLE_EQ(yaml12_scalar("5e-4").get<double>(), 5e-4);
  EXPECT_DOUBLE_EQ(yaml12_scalar("5e8").get<double>(), 5e8);
  EXPECT_DOUBLE_EQ(yaml12_scalar("-2.5E+3").get<double>(), -2500.0);
  EXPECT_EQ(yaml12_scalar("3000"), 3000);
  EXPECT_TRUE(yaml12_scalar("3000").is_number_integer());
  EXPECT_EQ(yaml12_scalar("-7"), -7);
  EXPECT_EQ(yaml12_scalar("+3"), 3);
  EXPECT_EQ(yaml12_scalar("012"), 12);  // no octal without 0o in YAML 1.2
  EXPECT_EQ(yaml12_scalar("0o17"), 15);
  EXPECT_EQ(yaml12_scalar("0x1F"), 31);
  EXPECT_TRUE(std::isinf(yaml12_scalar(".inf").get<double>()));
  EXPECT_LT(yaml12_scalar("-.Inf").get<double>(), 0);
  EXPECT_TRUE(std::isnan(yaml12_scalar(".nan").get<double>()));
}

TEST(Yaml12Scalar, BoolsNullsAndStrings) {
  for (const char* s : {"true", "True", "TRUE"}) EXPECT_EQ(yaml12_scalar(s), true) << s;
  for (const char* s : {"false", "False", "FALSE"}) EXPECT_EQ(yaml12_scalar(s), false) << s;
  for (const char* s : {"null", "Null", "NULL", "~", ""}) EXPECT_TRUE(yaml12_scalar(s).is_null()) << s;
  // YAML 1.1 booleans and other look-alikes are plain strings in 1.2
  for (const char* s : {"yes", "no", "on", "off", "tRUE", "1_000", "1e", "e5", "0x", "abc",
                        "train.jsonl", "1.2.3"})
    EXPECT_TRUE(yaml12_scalar(s).is_string()) << s;
}

TEST_F(ConfigTest, QuotedScalarsStayStrings) {
  const std::string err = error_of(std::string(kBase) +
                                   "training_args:\n"             // 6
                                   "  learning_rate: \"5e-4\"\n");  // 7
  EXPECT_NE(err.find(file() + ":7: training_args.learning_rate: expected a number, got '5e-4'"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("drop the quotes"), std::string::npos) << err;

  const Config c = load_config(write(std::string(kBase) +
                                     "training_args:\n"
                                     "  output_dir: '123'\n"
                                     "  learning_rate: 1e-3\n"
                                     "  save_steps: 1e3\n"
                                     "  eval_strategy: no\n"
                                     "peft_config: {peft_type: LORA, r: 8, alpha: !!float 16, "
                                     "tag: '8', x: !!str 5}\n"));
  EXPECT_EQ(c.training_args.output_dir, "123");
  EXPECT_DOUBLE_EQ(c.training_args.learning_rate, 1e-3);
  EXPECT_EQ(c.training_args.save_steps, 1000);  // an integral float is fine for an int key
  EXPECT_EQ(c.training_args.eval_strategy, "no");  // YAML 1.2: `no` is a string
  EXPECT_TRUE(c.peft_config["alpha"].is_number_float());
  EXPECT_EQ(c.peft_config["tag"], "8");
  EXPECT_EQ(c.peft_config["x"], "5");
}

// ---- defaults and paths --------------------------------------------------------------------

TEST_F(ConfigTest, DefaultsWhenTrainingArgsAbsent) {
  const Config c = load_config(write(kBase));
  EXPECT_EQ(c.path, file());
  const auto& t = c.training_args;
  EXPECT_EQ(t.output_dir, "./output");
  EXPECT_EQ(t.max_steps, -1);
  EXPECT_DOUBLE_EQ(t.num_train_epochs, 3.0);
  EXPECT_DOUBLE_EQ(t.learning_rate, 5e-5);
  EXPECT_EQ(t.per_device_train_batch_size, 8);
  EXPECT_EQ(t.per_device_eval_batch_size, 8);
  EXPECT_EQ(t.gradient_accumulation_steps, 1);
  EXPECT_DOUBLE_EQ(t.weight_decay, 0.0);
  EXPECT_DOUBLE_EQ(t.adam_beta1, 0.9);
  EXPECT_DOUBLE_EQ(t.adam_beta2, 0.999);
  EXPECT_DOUBLE_EQ(t.adam_epsilon, 1e-8);
  EXPECT_DOUBLE_EQ(t.max_grad_norm, 1.0);
  EXPECT_EQ(t.lr_scheduler_type, "linear");
  EXPECT_EQ(t.warmup_steps, 0);
  EXPECT_EQ(t.logging_steps, 500);
  EXPECT_EQ(t.save_strategy, "steps");
  EXPECT_EQ(t.save_steps, 500);
  EXPECT_EQ(t.save_total_limit, -1);
  EXPECT_EQ(t.eval_strategy, "no");
  EXPECT_EQ(t.eval_steps, -1);
  EXPECT_EQ(t.seed, 42);
  EXPECT_FALSE(t.predict_with_generate);
  EXPECT_TRUE(t.generation_config.is_null());
  EXPECT_EQ(t.deepspeed, "");
  EXPECT_FALSE(t.bf16);
  EXPECT_FALSE(t.fp16);
  EXPECT_EQ(t.log_level, "passive");
  EXPECT_TRUE(c.combine);
  EXPECT_TRUE(c.freezeV);
  EXPECT_TRUE(c.peft_config.is_null());
  EXPECT_EQ(c.data_config.test_file, "");
  EXPECT_TRUE(c.warnings.empty());

  // `training_args:` with nothing under it is the same as leaving it out
  const Config e = load_config(write(std::string(kBase) + "training_args:\n", "e.yaml"));
  EXPECT_EQ(e.training_args.max_steps, -1);
}

TEST_F(ConfigTest, NullsAndDataDir) {
  const Config c = load_config(write(
      "data_dir: /data/adgen\n"
      "data_config: {train_file: train.jsonl, val_file: null, test_file: /abs/test.jsonl, "
      "num_proc: ~}\n"
      "max_input_length: 64\nmax_output_length: 32\n"
      "training_args: {save_total_limit: null, eval_steps: null, deepspeed: null}\n"
      "peft_config: null\n"));
  EXPECT_EQ(c.data_config.train_file, "/data/adgen/train.jsonl");
  EXPECT_EQ(c.data_config.val_file, "");
  EXPECT_EQ(c.data_config.test_file, "/abs/test.jsonl");  // absolute paths stay
  EXPECT_EQ(c.data_config.num_proc, 1);
  EXPECT_EQ(c.training_args.save_total_limit, -1);
  EXPECT_EQ(c.training_args.eval_steps, -1);
  EXPECT_TRUE(c.peft_config.is_null());
}

// ---- unknown keys --------------------------------------------------------------------------

TEST_F(ConfigTest, UnknownTopLevelKey) {
  const std::string err = error_of(std::string(kBase) + "max_input_lenght: 3\n");  // line 6
  EXPECT_EQ(err.rfind(file() + ":6: max_input_lenght: unknown key (did you mean "
                               "'max_input_length'?)", 0),
            0u)
      << err;

  const std::string far = error_of(std::string(kBase) + "zzzzzz: 1\n");
  EXPECT_NE(far.find(":6: zzzzzz: unknown key (known keys: data_config"), std::string::npos)
      << far;

  // a training argument at the top level: say where it belongs
  const std::string misplaced = error_of(std::string(kBase) + "learning_rate: 1e-4\n");
  EXPECT_NE(misplaced.find(":6: learning_rate: unknown key (it belongs under training_args: "
                           "training_args.learning_rate)"),
            std::string::npos)
      << misplaced;
}

TEST_F(ConfigTest, UnknownDataConfigKey) {
  const std::string err = error_of(
      "max_input_length: 64\n"
      "max_output_length: 32\n"
      "data_config:\n"
      "  train_file: train.jsonl\n"
      "  trian_file: x.jsonl\n");  // line 5
  EXPECT_EQ(err.rfind(file() + ":5: data_config.trian_file: unknown key (did you mean "
                               "'train_file'?)", 0),
            0u)
      << err;
}

TEST_F(ConfigTest, UnknownTrainingArgsKey) {
  const std::string err = error_of(
      "data_config:\n"                 // 1
      "  train_file: train.jsonl\n"    // 2
      "max_input_length: 64\n"         // 3
      "max_output_length: 32\n"        // 4
      "training_args:\n"               // 5
      "  output_dir: ./out\n"          // 6
      "  max_steps: 10\n"              // 7
      "  per_device_train_batch_size: 2\n"  // 8
      "  logging_steps: 1\n"           // 9
      "  save_steps: 5\n"              // 10
      "  warmup_steps: 0\n"            // 11
      "  learning_rat: 1e-4\n");       // 12
  EXPECT_EQ(err, file() + ":12: training_args.learning_rat: unknown key (did you mean "
                          "'learning_rate'?)");

  const std::string far = error_of(std::string(kBase) + "training_args:\n  qqqqqqqqqq: 1\n");
  EXPECT_NE(far.find(":7: training_args.qqqqqqqqqq: unknown key (not a "
                     "Seq2SeqTrainingArguments option)"),
            std::string::npos)
      << far;
}

TEST_F(ConfigTest, ErrorsAreListedInFileOrder) {
  const std::string err = error_of(std::string(kBase) +
                                   "training_args:\n"        // 6
                                   "  zeta_key: 1\n"         // 7
                                   "  alpha_key: 2\n"        // 8
                                   "combined: true\n");      // 9
  const auto a = err.find(":7: training_args.zeta_key");
  const auto b = err.find(":8: training_args.alpha_key");
  const auto c = err.find(":9: combined: unknown key (did you mean 'combine'?)");
  ASSERT_NE(a, std::string::npos) << err;
  ASSERT_NE(b, std::string::npos) << err;
  ASSERT_NE(c, std::string::npos) << err;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
}

// ---- types, values, required keys ----------------------------------------------------------

TEST_F(ConfigTest, WrongTypes) {
  auto with_args = [&](const std::string& line) {
    return error_of(std::string(kBase) + "training_args:\n  " + line + "\n");  // line 7
  };
  EXPECT_NE(with_args("max_steps: abc").find(
                ":7: training_args.max_steps: expected an integer, got 'abc'"),
            std::string::npos);
  EXPECT_NE(with_args("max_steps: 1.5").find("expected an integer, got 1.5"), std::string::npos);
  EXPECT_NE(with_args("predict_with_generate: yes").find(
                "training_args.predict_with_generate: expected true or false, got 'yes' (YAML "
                "1.2"),
            std::string::npos);
  EXPECT_NE(with_args("output_dir: 5").find("expected a string, got 5"), std::string::npos);
  EXPECT_NE(with_args("generation_config: 512").find("expected a map of generation options"),
            std::string::npos);
  EXPECT_NE(with_args("deepspeed: {zero_optimization: {stage: 3}}").find("inline DeepSpeed"),
            std::string::npos);

  EXPECT_NE(error_of(std::string(kBase) + "combine: 3\n").find(
                ":6: combine: expected true or false, got 3"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "training_args: [1, 2]\n").find(
                ":6: training_args: expected a map"),
            std::string::npos);
  EXPECT_NE(error_of("data_config: train.jsonl\nmax_input_length: 1\nmax_output_length: 1\n")
                .find(":1: data_config: expected a map"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "peft_config: {r: 8}\n").find(
                ":6: peft_config.peft_type: required key missing"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "peft_config: LORA\n").find(
                ":6: peft_config: expected a map"),
            std::string::npos);
  EXPECT_NE(error_of("- a\n- b\n").find("expected a map of keys at the top level"),
            std::string::npos);
}

TEST_F(ConfigTest, BadValues) {
  auto with_args = [&](const std::string& lines) {
    return error_of(std::string(kBase) + "training_args:\n" + lines);
  };
  EXPECT_NE(with_args("  learning_rate: 0\n").find(
                ":7: training_args.learning_rate: must be > 0"),
            std::string::npos);
  EXPECT_NE(with_args("  per_device_train_batch_size: 0\n").find("must be >= 1, got 0"),
            std::string::npos);
  EXPECT_NE(with_args("  gradient_accumulation_steps: -2\n").find("must be >= 1, got -2"),
            std::string::npos);
  EXPECT_NE(with_args("  warmup_ratio: 1.0\n").find("must be in [0, 1)"), std::string::npos);
  EXPECT_NE(with_args("  lr_scheduler_type: cosin\n").find(
                "expected one of linear, constant, constant_with_warmup, cosine, got 'cosin' "
                "(did you mean 'cosine'?)"),
            std::string::npos);
  EXPECT_NE(with_args("  lr_scheduler_type: polynomial\n").find(
                "'polynomial' is not supported by ftrun"),
            std::string::npos);
  EXPECT_NE(with_args("  eval_strategy: stesp\n").find("(did you mean 'steps'?)"),
            std::string::npos);
  EXPECT_NE(with_args("  save_strategy: best\n").find("'best' is not supported by ftrun"),
            std::string::npos);
  EXPECT_NE(with_args("  optim: sgd\n").find(":7: training_args.optim: ftrun's optimizer is AdamW"),
            std::string::npos);
  EXPECT_NE(with_args("  fsdp: full_shard\n").find("FSDP is not supported"), std::string::npos);
  EXPECT_NE(with_args("  label_smoothing_factor: 0.1\n").find("label smoothing"),
            std::string::npos);
  EXPECT_NE(with_args("  bf16: true\n  fp16: true\n").find("choose one"), std::string::npos);
  EXPECT_NE(with_args("  log_level: verbose\n").find("training_args.log_level: expected one of"),
            std::string::npos);
  EXPECT_NE(with_args("  save_steps: 0\n").find("save_steps: must be >= 1"), std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "max_input_length: 0\n").find("duplicate key"),
            std::string::npos);

  // values at HF's default pass silently
  const Config ok = load_config(write(std::string(kBase) +
                                      "training_args:\n"
                                      "  optim: adamw_torch\n"
                                      "  label_smoothing_factor: 0.0\n"
                                      "  fsdp: ''\n"
                                      "  save_total_limit: 0\n"
                                      "  eval_steps: 0\n"
                                      "  bf16: true\n"));
  EXPECT_TRUE(ok.warnings.empty());
  EXPECT_TRUE(ok.training_args.bf16);
  EXPECT_EQ(ok.training_args.save_total_limit, -1);
  EXPECT_EQ(ok.training_args.eval_steps, -1);
}

TEST_F(ConfigTest, RequiredKeys) {
  const std::string none = error_of("combine: true\n");
  EXPECT_NE(none.find(file() + ":1: data_config: required key missing"), std::string::npos) << none;
  EXPECT_NE(none.find("max_input_length: required key missing"), std::string::npos);
  EXPECT_NE(none.find("max_output_length: required key missing"), std::string::npos);

  const std::string no_train = error_of("data_config:\n  val_file: dev.jsonl\n"
                                        "max_input_length: 64\nmax_output_length: 32\n");
  EXPECT_NE(no_train.find(":1: data_config.train_file: required"), std::string::npos) << no_train;
  EXPECT_NE(error_of(std::string(kBase) + "training_args: {}\nmax_output_length: 0\n")
                .find("duplicate key (first given at line 5)"),
            std::string::npos);
}

TEST_F(ConfigTest, EvaluationStrategyAlias) {
  const Config c = load_config(write(std::string(kBase) +
                                     "training_args:\n  evaluation_strategy: steps\n"));
  EXPECT_EQ(c.training_args.eval_strategy, "steps");
  EXPECT_TRUE(has_warning(c, "training_args.evaluation_strategy"));

  EXPECT_NE(error_of(std::string(kBase) +
                     "training_args:\n  evaluation_strategy: steps\n  eval_strategy: 'no'\n")
                .find("evaluation_strategy: conflicts with eval_strategy"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "training_args:\n  evaluation_strategy: step\n")
                .find(":7: training_args.evaluation_strategy: expected one of no, steps, epoch"),
            std::string::npos);
}

TEST_F(ConfigTest, IgnoredHfKeysWarn) {
  const Config c = load_config(write(std::string(kBase) +
                                     "training_args:\n"                // 6
                                     "  report_to: none\n"             // 7
                                     "  run_name: glm4\n"              // 8
                                     "  swanlab: local\n"              // 9
                                     "  resume_from_checkpoint: true\n"  // 10
                                     "  dataloader_num_workers: 4\n"   // stored, warned (issue 13)
                                     "  gradient_checkpointing: true\n"
                                     "  log_level: warning\n"));
  EXPECT_EQ(c.warnings.size(), 4u);
  // Was a warning before issue 17: report_to acts now (runtime/tensorboard.h); none = off.
  EXPECT_FALSE(has_warning(c, "training_args.report_to"));
  EXPECT_TRUE(c.training_args.report_to.empty());
  EXPECT_TRUE(has_warning(c, ":8: training_args.run_name"));
  EXPECT_TRUE(has_warning(c, ":9: training_args.swanlab"));
  EXPECT_TRUE(has_warning(c, "training_args.resume_from_checkpoint: accepted but ignored"));
  EXPECT_TRUE(has_warning(c, "--resume"));
  // Was EXPECT_FALSE before issue 13: a worker count that does nothing must say so.
  EXPECT_TRUE(has_warning(c, "training_args.dataloader_num_workers: accepted but ignored"));
  EXPECT_EQ(c.training_args.dataloader_num_workers, 4);
  EXPECT_TRUE(c.training_args.gradient_checkpointing);
  EXPECT_EQ(c.training_args.log_level, "warning");
}

// report_to and logging_dir as HF reads them (issue 17): "all" (HF 4.x's default) = every
// integration ftrun has = tensorboard; other HF integrations warn; unknown names are errors.
TEST_F(ConfigTest, ReportToAndLoggingDir) {
  auto with_args = [&](const std::string& lines) {
    return load_config(write(std::string(kBase) + "training_args:\n" + lines));
  };
  const std::vector<std::string> tb = {"tensorboard"};
  const Config plain = load_config(write(kBase));
  EXPECT_EQ(plain.training_args.report_to, tb);  // HF 4.x: None -> "all"
  EXPECT_EQ(plain.training_args.logging_dir, "");
  EXPECT_EQ(with_args("  report_to: all\n").training_args.report_to, tb);
  EXPECT_EQ(with_args("  report_to: null\n").training_args.report_to, tb);
  EXPECT_EQ(with_args("  report_to: [all]\n").training_args.report_to, tb);
  EXPECT_EQ(with_args("  report_to: tensorboard\n").training_args.report_to, tb);
  EXPECT_TRUE(with_args("  report_to: none\n").training_args.report_to.empty());
  EXPECT_TRUE(with_args("  report_to: [none]\n").training_args.report_to.empty());
  EXPECT_TRUE(with_args("  report_to: []\n").training_args.report_to.empty());
  const Config both = with_args("  report_to: [tensorboard, wandb]\n");
  EXPECT_EQ(both.training_args.report_to, tb);
  EXPECT_TRUE(has_warning(both, ":7: training_args.report_to: accepted but ignored: wandb (ftrun reports to "
                                "tensorboard only"));
  const Config wandb = with_args("  report_to: wandb\n");
  EXPECT_TRUE(wandb.training_args.report_to.empty());
  EXPECT_TRUE(has_warning(wandb, "training_args.report_to: accepted but ignored: wandb"));
  EXPECT_NE(error_of(std::string(kBase) + "training_args:\n  report_to: tensorbord\n")
                .find(":7: training_args.report_to: 'tensorbord' is not an integration HF knows (known: all, "
                      "none, azure_ml,"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "training_args:\n  report_to: tensorbord\n")
                .find("(did you mean 'tensorboard'?)"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "training_args:\n  report_to: 3\n")
                .find("training_args.report_to: expected all, none, an integration name or a list of them"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "training_args:\n  report_to: [all, wandb]\n")
                .find("training_args.report_to: 'all' cannot be combined with other integrations"),
            std::string::npos);
  const Config dir = with_args("  logging_dir: /tmp/tb-logs\n");
  EXPECT_EQ(dir.training_args.logging_dir, "/tmp/tb-logs");
  EXPECT_TRUE(dir.warnings.empty());
}

// ---- --set ---------------------------------------------------------------------------------

TEST_F(ConfigTest, SetOverridesAreTyped) {
  const Config c = load_config(write(kBase), {"training_args.max_steps=5",
                                              "training_args.learning_rate=1e-4",
                                              "data_config.val_file=null",
                                              "training_args.generation_config.max_new_tokens=16",
                                              "model_dir=/models/glm-4-9b-chat",
                                              "data_dir=/data",
                                              "peft_config={peft_type: LORA, r: 4}",
                                              "training_args.output_dir='007'"});
  EXPECT_EQ(c.training_args.max_steps, 5);
  EXPECT_DOUBLE_EQ(c.training_args.learning_rate, 1e-4);
  EXPECT_EQ(c.data_config.val_file, "");
  EXPECT_EQ(c.training_args.generation_config, json({{"max_new_tokens", 16}}));
  EXPECT_EQ(c.model_dir, "/models/glm-4-9b-chat");
  EXPECT_EQ(c.data_config.train_file, "/data/train.jsonl");
  EXPECT_EQ(c.peft_config["r"], 4);
  EXPECT_EQ(c.training_args.output_dir, "007");

  // overriding a key that exists replaces it
  const Config lora = load_config(repo("configs/lora.yaml"),
                                  {"training_args.learning_rate=2e-4", "peft_config.r=16"});
  EXPECT_DOUBLE_EQ(lora.training_args.learning_rate, 2e-4);
  EXPECT_EQ(lora.peft_config["r"], 16);
  EXPECT_EQ(lora.peft_config["lora_alpha"], 32);
}

TEST_F(ConfigTest, SetErrors) {
  const std::string path = write(kBase);
  auto err = [&](const std::string& expr) {
    try {
      load_config(path, {expr});
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err("training_args.max_steps").find(
                path + ": --set 'training_args.max_steps': malformed override"),
            std::string::npos);
  EXPECT_NE(err("=3").find("--set '=3': malformed override"), std::string::npos);
  EXPECT_NE(err("training_args..max_steps=3").find("empty segment"), std::string::npos);
  EXPECT_EQ(err("training_args.max_steps=abc"),
            path + ": --set 'training_args.max_steps=abc': training_args.max_steps: expected an "
                   "integer, got 'abc'");
  EXPECT_NE(err("training_args.learning_rat=1").find(
                "training_args.learning_rat: unknown key (did you mean 'learning_rate'?)"),
            std::string::npos);
  EXPECT_NE(err("training_args.learning_rate=\"5e-4\"").find("expected a number, got '5e-4'"),
            std::string::npos);
  EXPECT_NE(err("data_config.train_file.x=1").find("data_config.train_file is 'train.jsonl', "
                                                   "not a map"),
            std::string::npos);
  EXPECT_NE(err("data_config.train_file=[a").find("value is not valid YAML"), std::string::npos);
  EXPECT_NE(err("data_config.train_file=null").find("data_config.train_file: required"),
            std::string::npos);
}

// ---- files ---------------------------------------------------------------------------------

TEST_F(ConfigTest, MissingFileAndSyntaxErrors) {
  const std::string missing = (fs::path(dir_) / "nope.yaml").string();
  try {
    load_config(missing);
    FAIL() << "no error for a missing file";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(missing + ": cannot open config file", 0), 0u)
        << e.what();
  }
  const std::string syntax = error_of("data_config:\n  train_file: a: b\n");
  EXPECT_EQ(syntax.rfind(file() + ":2:", 0), 0u) << syntax;
  EXPECT_NE(syntax.find("YAML syntax error"), std::string::npos) << syntax;
  EXPECT_NE(error_of("").find("empty config file"), std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "---\na: 1\n").find("more than one YAML document"),
            std::string::npos);
}

// ---- no silently ignored settings (issue 13) ------------------------------------------------

// Every key the reader accepts, set to its example through --set on a plain config, behaves as
// its class says: acted keys change the parsed Config, warned keys draw a warning naming them,
// refused keys are an error naming them.
TEST_F(ConfigTest, EveryAcceptedKeyActsWarnsOrIsRefused) {
  const std::string base = write(std::string(kBase) + "peft_config:\n  peft_type: LORA\n");
  const Config plain_cfg = load_config(base);
  ASSERT_TRUE(plain_cfg.warnings.empty()) << plain_cfg.warnings.front();
  const json plain = config_to_json(plain_cfg);
  std::set<std::string> seen;
  size_t counts[3] = {0, 0, 0};
  for (const auto& k : accepted_keys()) {
    const std::string dotted = k.section.empty() ? k.key : k.section + "." + k.key;
    EXPECT_TRUE(seen.insert(dotted).second) << dotted << " is listed twice";
    const std::string set = dotted + "=" + k.example.dump();
    SCOPED_TRACE("--set " + set);
    Config c;
    std::string err;
    try {
      c = load_config(base, {set});
    } catch (const std::runtime_error& e) {
      err = e.what();
    }
    switch (k.cls) {
      case KeyClass::kActed:
        ++counts[0];
        EXPECT_EQ(err, "");
        EXPECT_NE(config_to_json(c), plain) << dotted << " is accepted but not read into the Config";
        break;
      case KeyClass::kWarned:
        ++counts[1];
        EXPECT_EQ(err, "");
        EXPECT_TRUE(has_warning(c, dotted + ": ")) << dotted << " is ignored without a warning";
        break;
      case KeyClass::kRefused:
        ++counts[2];
        EXPECT_NE(err.find(dotted + ": "), std::string::npos) << err;
        break;
    }
  }
  EXPECT_GT(counts[0], 40u);
  EXPECT_GT(counts[1], 100u);
  EXPECT_GE(counts[2], 10u);
  // the ones issue 13 found parsed and unused
  for (const char* k : {"training_args.dataloader_num_workers", "data_config.num_proc"})
    EXPECT_TRUE(seen.count(k)) << k;
}

// The past bug was a key read into a TrainingArgs field that nothing ever read back. A textual
// guard: every acted key's field (or JSON key) is named outside the config reader, in the
// sources that build ftrun.
TEST(AcceptedKeys, ActedKeysAreReadOutsideTheReader) {
  // Keys acted on by decision whose use is still being built (none now: gradient_checkpointing
  // and bf16, the two wired for issue 13, are read by the Stepper).
  const std::set<std::string> being_wired = {};
  // Acted on by the reader itself: data_dir is joined to the relative data_config paths.
  const std::set<std::string> acted_in_reader = {"data_dir"};
  std::string sources;
  for (const char* dir : {"runtime", "launcher", "peft", "sharding", "data", "models", "comm", "io"}) {
    for (const auto& e : fs::recursive_directory_iterator(repo(dir))) {
      const auto name = e.path().filename().string();
      const auto ext = e.path().extension().string();
      if (!e.is_regular_file() || (ext != ".cpp" && ext != ".h")) continue;
      if (e.path().parent_path().filename() == "runtime" && (name == "config.cpp" || name == "config.h"))
        continue;
      std::ifstream in(e.path());
      std::stringstream text;
      text << in.rdbuf();
      sources += text.str();
    }
  }
  ASSERT_GT(sources.size(), 100000u);
  auto named = [&](const std::string& field) {
    if (sources.find("\"" + field + "\"") != std::string::npos) return true;  // a JSON key
    for (size_t at = sources.find(field); at != std::string::npos; at = sources.find(field, at + 1)) {
      const char before = at > 0 ? sources[at - 1] : ' ';
      const size_t end = at + field.size();
      const char after = end < sources.size() ? sources[end] : ' ';
      if ((before == '.' || before == '>') && !std::isalnum(static_cast<unsigned char>(after)) &&
          after != '_')
        return true;  // a member access: cfg.field, args_->field
    }
    return false;
  };
  for (const auto& k : accepted_keys()) {
    if (k.cls != KeyClass::kActed) continue;
    // HF's deprecated spellings are read into their successors' fields.
    const std::string field = k.key == "evaluation_strategy" ? "eval_strategy" : k.key == "no_cuda" ? "use_cpu" : k.key;
    if (being_wired.count(field) || acted_in_reader.count(field)) continue;
    EXPECT_TRUE(named(field)) << (k.section.empty() ? "" : k.section + ".") << k.key
                              << " is classified as acted on, but nothing outside runtime/config.* reads "
                              << field;
  }
}

TEST_F(ConfigTest, IssueThirteenKeys) {
  auto with_args = [&](const std::string& lines) {
    return load_config(write(std::string(kBase) + "training_args:\n" + lines));
  };
  auto args_error = [&](const std::string& lines) {
    return error_of(std::string(kBase) + "training_args:\n" + lines);
  };
  // fp16 is refused, never run as fp32
  const std::string fp16 = args_error("  fp16: true\n");
  EXPECT_NE(fp16.find(file() + ":7: training_args.fp16: fp16 mixed precision is not implemented "
                               "(no dynamic loss scaling); use bf16: true"),
            std::string::npos)
      << fp16;
  EXPECT_TRUE(with_args("  fp16: false\n").warnings.empty());
  // workers and processes that have nothing to do say so, at non-default values only
  EXPECT_TRUE(with_args("  dataloader_num_workers: 0\n").warnings.empty());
  const Config workers = with_args("  dataloader_num_workers: 16\n");
  ASSERT_EQ(workers.warnings.size(), 1u);
  EXPECT_NE(workers.warnings[0].find(":7: training_args.dataloader_num_workers: accepted but ignored: "
                                     "ftrun tokenizes the data up front into its token cache"),
            std::string::npos)
      << workers.warnings[0];
  auto procs = [&](const std::string& n) {
    return load_config(write("data_config:\n  train_file: train.jsonl\n  num_proc: " + n +
                             "\nmax_input_length: 64\nmax_output_length: 32\n"));
  };
  EXPECT_TRUE(procs("1").warnings.empty());
  EXPECT_TRUE(has_warning(procs("8"), ":3: data_config.num_proc: accepted but ignored"));
  // generation_config: max_new_tokens acts; HF defaults pass; other values warn; typos fail
  EXPECT_TRUE(with_args("  generation_config: {max_new_tokens: 8, do_sample: false, num_beams: 1, "
                        "temperature: 1}\n")
                  .warnings.empty());
  EXPECT_TRUE(has_warning(with_args("  generation_config: {do_sample: true, top_p: 0.8}\n"),
                          "training_args.generation_config.do_sample: accepted but ignored: evaluation "
                          "decodes greedily"));
  EXPECT_TRUE(has_warning(with_args("  generation_config: {do_sample: true, top_p: 0.8}\n"),
                          "training_args.generation_config.top_p"));
  EXPECT_NE(args_error("  generation_config: {max_new_token: 8}\n")
                .find("training_args.generation_config.max_new_token: unknown key (did you mean "
                      "'max_new_tokens'?)"),
            std::string::npos);
  // log_level acts (runtime/log.h); every HF name is read
  EXPECT_EQ(with_args("  log_level: error\n").training_args.log_level, "error");
  // peft_config: PEFT's metadata warns when set; task_type other than CAUSAL_LM is refused
  auto peft = [&](const std::string& lines) {
    return std::string(kBase) + "peft_config:\n  peft_type: LORA\n" + lines;
  };
  EXPECT_TRUE(load_config(write(peft("  inference_mode: false\n  base_model_name_or_path: null\n")))
                  .warnings.empty());
  EXPECT_TRUE(has_warning(load_config(write(peft("  inference_mode: true\n"))),
                          ":8: peft_config.inference_mode: accepted but ignored"));
  EXPECT_TRUE(has_warning(load_config(write(peft("  base_model_name_or_path: THUDM/glm-4-9b-chat\n"))),
                          "peft_config.base_model_name_or_path: accepted but ignored (the base model is "
                          "model_dir)"));
  EXPECT_NE(error_of(peft("  task_type: SEQ_2_SEQ_LM\n")).find(":8: peft_config.task_type: only CAUSAL_LM"),
            std::string::npos);
}

TEST(LogLevel, HfNamesSetFtrunsInfoLines) {
  using namespace ftrun::runtime;
  for (const char* l : {"passive", "info", "debug"}) {
    set_log_level(l);
    EXPECT_TRUE(info_enabled()) << l;
  }
  EXPECT_TRUE(debug_enabled());
  for (const char* l : {"warning", "error", "critical"}) {
    set_log_level(l);
    EXPECT_FALSE(info_enabled()) << l;
    EXPECT_FALSE(debug_enabled()) << l;
  }
  set_log_level("passive");
  EXPECT_FALSE(debug_enabled());
}

// ---- closest_key ---------------------------------------------------------------------------

TEST(ClosestKey, SuggestsOnlyCloseKeys) {
  const std::vector<std::string> known = {"learning_rate", "max_steps", "save_steps",
                                          "eval_steps", "seed", "r"};
  EXPECT_EQ(closest_key("learning_rat", known), "learning_rate");
  EXPECT_EQ(closest_key("learnign_rate", known), "learning_rate");  // transposition
  EXPECT_EQ(closest_key("Learning_Rate", known), "learning_rate");  // case
  EXPECT_EQ(closest_key("max_step", known), "max_steps");
  EXPECT_EQ(closest_key("seeds", known), "seed");
  EXPECT_EQ(closest_key("save_steps", known), "save_steps");
  EXPECT_EQ(closest_key("lr", {"learning_rate", "seed"}), "");  // all would have to change
  EXPECT_EQ(closest_key("xy", known), "");
  EXPECT_EQ(closest_key("completely_different", known), "");
  EXPECT_EQ(closest_key("anything", {}), "");
  // the limit grows with the key: 4 edits on a 14-character key is still a typo
  EXPECT_EQ(closest_key("lerningg_rrate", known), "learning_rate");
}

}  // namespace

// Issue 18: LoRA+ is read from peft_config or (LLaMA-Factory's spelling) the top level, lands
// in peft_config and training_args.loraplus_lr_ratio, and is refused wherever it could do
// nothing; NEFTune's alpha is read (null = off) and must be a number >= 0.
TEST_F(ConfigTest, LoraPlusAndNeftuneKeys) {
  const std::string lora = std::string(kBase) + "peft_config:\n  peft_type: LORA\n";
  {
    const Config c = load_config(write(lora + "  loraplus_lr_ratio: 8\n"));
    EXPECT_EQ(c.training_args.loraplus_lr_ratio, 8.0);
    EXPECT_EQ(c.peft_config["loraplus_lr_ratio"], 8.0);
  }
  {
    const Config c = load_config(write(lora + "loraplus_lr_ratio: 16\n"));
    EXPECT_EQ(c.training_args.loraplus_lr_ratio, 16.0);
    EXPECT_EQ(c.peft_config["loraplus_lr_ratio"], 16.0);  // recorded where a checkpoint keeps it
  }
  EXPECT_EQ(load_config(write(lora)).training_args.loraplus_lr_ratio, 0.0);
  EXPECT_EQ(load_config(write(lora + "loraplus_lr_ratio: null\n")).training_args.loraplus_lr_ratio, 0.0);
  EXPECT_EQ(error_of(lora + "  loraplus_lr_ratio: 8\nloraplus_lr_ratio: 8\n"), "");
  EXPECT_NE(error_of(lora + "  loraplus_lr_ratio: 8\nloraplus_lr_ratio: 4\n").find("given twice"), std::string::npos);
  auto e = error_of(std::string(kBase) + "peft_config:\n  peft_type: PREFIX_TUNING\n  loraplus_lr_ratio: 8\n");
  EXPECT_NE(e.find("peft_config.loraplus_lr_ratio: LoRA+ scales the learning rate of LoRA's B matrices, but "
                   "peft_type is PREFIX_TUNING"), std::string::npos) << e;
  e = error_of(std::string(kBase) + "loraplus_lr_ratio: 8\n");
  EXPECT_NE(e.find("loraplus_lr_ratio: LoRA+ scales"), std::string::npos) << e;
  EXPECT_NE(e.find("full fine-tuning"), std::string::npos) << e;
  e = error_of(lora + "  loraplus_lr_ratio: -2\n");
  EXPECT_NE(e.find("expected a positive number"), std::string::npos) << e;
  for (const std::string& where : {lora + "  loraplus_lr_embedding: 1.0e-6\n", lora + "loraplus_lr_embedding: 1.0e-6\n"}) {
    e = error_of(where);
    EXPECT_NE(e.find("loraplus_lr_embedding: LoRA+'s embedding learning rate"), std::string::npos) << e;
  }

  EXPECT_EQ(load_config(write(lora + "training_args:\n  neftune_noise_alpha: 5\n")).training_args.neftune_noise_alpha, 5.0);
  EXPECT_EQ(load_config(write(lora + "training_args:\n  neftune_noise_alpha: null\n")).training_args.neftune_noise_alpha, 0.0);
  e = error_of(lora + "training_args:\n  neftune_noise_alpha: -1\n");
  EXPECT_NE(e.find("training_args.neftune_noise_alpha: expected a number >= 0"), std::string::npos) << e;
}

// attn_implementation (issue 14): HF's key; auto by default; errors name the file and line.
TEST_F(ConfigTest, AttnImplementation) {
  EXPECT_EQ(load_config(write(kBase)).attn_implementation, "auto");
  EXPECT_EQ(load_config(write(std::string(kBase) + "attn_implementation: eager\n")).attn_implementation, "eager");
  const std::string flash = error_of(std::string(kBase) + "attn_implementation: flash_attention_2\n");  // line 6
  EXPECT_NE(flash.find(file() + ":6: attn_implementation: flash_attention_2 is not a separate kernel"), std::string::npos)
      << flash;
  const std::string bad = error_of(std::string(kBase) + "attn_implementation: fast\n");
  EXPECT_NE(bad.find(":6: attn_implementation: expected auto, eager or sdpa, got 'fast'"), std::string::npos) << bad;
  const std::string sdpa = error_of(std::string(kBase) + "attn_implementation: sdpa\n");
#if TORCH_VERSION_MAJOR >= 2
  EXPECT_EQ(sdpa, "");
#else
  EXPECT_NE(sdpa.find(":6: attn_implementation: sdpa needs a build against libtorch >= 2.0"), std::string::npos) << sdpa;
#endif
}
