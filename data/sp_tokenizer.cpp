// SentencePiece tokenizer: loads/trains `tokenizer.model` plus the HF-style
// `tokenizer_config.json` whose added tokens sit after the sentencepiece vocabulary (read by
// added_tokens.h, shared with the BPE tokenizers). Also load_tokenizer(), which picks BPE or
// sentencepiece. sentencepiece itself lives in a run-time-loaded module (see sp_shim.h for why).
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/added_tokens.h"
#include "data/bpe_tokenizer.h"
#include "data/fingerprint.h"
#include "data/sp_shim.h"
#include "data/tokenizer.h"
#include "io/file.h"

namespace ftrun::data {
namespace {

namespace fs = std::filesystem;

constexpr const char* kModuleName = "libftrun_sentencepiece.so";

// The dlopen()ed sentencepiece module, loaded once per process and never unloaded.
struct SpModule {
  ftrun_sp_new_fn create = nullptr;
  ftrun_sp_delete_fn destroy = nullptr;
  ftrun_sp_load_fn load = nullptr;
  ftrun_sp_piece_size_fn piece_size = nullptr;
  ftrun_sp_piece_to_id_fn piece_to_id = nullptr;
  ftrun_sp_encode_fn encode = nullptr;
  ftrun_sp_decode_fn decode = nullptr;
  ftrun_sp_train_fn train = nullptr;

  static const SpModule& get() {
    static const SpModule m = open();
    return m;
  }

 private:
  // Where to look: $FTRUN_SP_MODULE, the build tree this binary came from, then beside the
  // executable and in ../lib/ftrun (an installed layout).
  static std::vector<std::string> candidates() {
    std::vector<std::string> out;
    if (const char* env = std::getenv("FTRUN_SP_MODULE"); env && *env) out.push_back(env);
#ifdef FTRUN_SP_MODULE_PATH
    out.push_back(FTRUN_SP_MODULE_PATH);
#endif
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
      out.push_back((exe.parent_path() / kModuleName).string());
      out.push_back((exe.parent_path().parent_path() / "lib" / "ftrun" / kModuleName).string());
    }
    return out;
  }

  template <class Fn>
  static Fn sym(void* lib, const char* name, const std::string& path) {
    void* p = dlsym(lib, name);
    if (!p) throw std::runtime_error("tokenizer: " + path + " lacks symbol " + name);
    return reinterpret_cast<Fn>(p);
  }

  static SpModule open() {
    std::string tried;
    for (const std::string& path : candidates()) {
      if (!fs::exists(path)) {
        tried += "\n  " + path + " (missing)";
        continue;
      }
      void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (!lib) {
        const char* e = dlerror();
        tried += "\n  " + path + " (" + (e ? e : "dlopen failed") + ")";
        continue;
      }
      const int abi = sym<ftrun_sp_abi_version_fn>(lib, "ftrun_sp_abi_version", path)();
      if (abi != FTRUN_SP_ABI_VERSION) {
        tried += "\n  " + path + " (interface version " + std::to_string(abi) + ", need " +
                 std::to_string(FTRUN_SP_ABI_VERSION) + ")";
        continue;
      }
      SpModule m;
      m.create = sym<ftrun_sp_new_fn>(lib, "ftrun_sp_new", path);
      m.destroy = sym<ftrun_sp_delete_fn>(lib, "ftrun_sp_delete", path);
      m.load = sym<ftrun_sp_load_fn>(lib, "ftrun_sp_load", path);
      m.piece_size = sym<ftrun_sp_piece_size_fn>(lib, "ftrun_sp_piece_size", path);
      m.piece_to_id = sym<ftrun_sp_piece_to_id_fn>(lib, "ftrun_sp_piece_to_id", path);
      m.encode = sym<ftrun_sp_encode_fn>(lib, "ftrun_sp_encode", path);
      m.decode = sym<ftrun_sp_decode_fn>(lib, "ftrun_sp_decode", path);
      m.train = sym<ftrun_sp_train_fn>(lib, "ftrun_sp_train", path);
      return m;
    }
    throw std::runtime_error(std::string("tokenizer: cannot load the sentencepiece module ") +
                             kModuleName + "; set FTRUN_SP_MODULE to its path. Tried:" + tried);
  }
};

void append_bytes(void* ctx, const char* data, size_t n) {
  static_cast<std::string*>(ctx)->append(data, n);
}

void append_ids(void* ctx, const int* ids, size_t n) {
  auto* v = static_cast<std::vector<int64_t>*>(ctx);
  v->insert(v->end(), ids, ids + n);
}

// One loaded sentencepiece model.
class SpModel {
 public:
  SpModel() : m_(SpModule::get()), h_(m_.create()) {
    if (!h_) throw std::runtime_error("tokenizer: cannot create a sentencepiece processor");
  }
  ~SpModel() { m_.destroy(h_); }
  SpModel(const SpModel&) = delete;
  SpModel& operator=(const SpModel&) = delete;

  // Returns "" on success, else sentencepiece's message.
  std::string load(const std::string& bytes) {
    std::string err;
    if (m_.load(h_, bytes.data(), bytes.size(), append_bytes, &err) != 0)
      return err.empty() ? "load failed" : err;
    return "";
  }
  int64_t size() const { return m_.piece_size(h_); }
  int64_t piece_to_id(const std::string& piece) const {
    return m_.piece_to_id(h_, piece.data(), piece.size());
  }
  std::vector<int64_t> encode(const std::string& text, const std::string& who) const {
    std::vector<int64_t> ids;
    std::string err;
    if (m_.encode(h_, text.data(), text.size(), append_ids, &ids, append_bytes, &err) != 0)
      throw std::runtime_error("tokenizer (" + who + "): encode failed: " + err);
    return ids;
  }
  std::string decode(const std::vector<int>& ids, const std::string& who) const {
    std::string out, err;
    if (m_.decode(h_, ids.data(), ids.size(), append_bytes, &out, append_bytes, &err) != 0)
      throw std::runtime_error("tokenizer (" + who + "): decode failed: " + err);
    return out;
  }

 private:
  const SpModule& m_;
  void* h_;
};

constexpr const char* kModelFile = "tokenizer.model";
constexpr const char* kConfigFile = kTokenizerConfigFile;

// The special-token accessors come from WithAddedTokens (added_tokens.h), shared with BPE.
class SpTokenizer : public WithAddedTokens<Tokenizer> {
 public:
  explicit SpTokenizer(const std::string& dir)
      : WithAddedTokens(AddedTokens(dir, std::string(" in ") + kConfigFile)), dir_(dir) {
    fs::path d(dir);
    if (!fs::is_directory(d))
      throw std::runtime_error("tokenizer: directory '" + dir + "' does not exist");
    const fs::path model_path = d / kModelFile, config_path = d / kConfigFile;
    if (!fs::exists(model_path))
      throw std::runtime_error("tokenizer: " + model_path.string() + " not found (directory '" +
                               dir + "' has no sentencepiece model)");
    if (!fs::exists(config_path))
      throw std::runtime_error("tokenizer: " + config_path.string() + " not found");

    const std::string model_bytes = read_tokenizer_file(model_path);
    if (std::string err = sp_.load(model_bytes); !err.empty())
      throw std::runtime_error("tokenizer: " + model_path.string() +
                               " is not a sentencepiece model: " + err);
    sp_size_ = sp_.size();
    vocab_size_ = sp_size_;

    TokenizerConfig cfg =
        parse_tokenizer_config(read_tokenizer_json(config_path), config_path.string());
    for (auto& [id, tok] : cfg.added) {
      // Entries below sp_size re-label sentencepiece pieces (ChatGLM3 lists <unk>, <s>, </s>).
      vocab_size_ = std::max(vocab_size_, id + 1);
      added_.add(id, std::move(tok));
    }
    // bos/eos/pad: an added token, else a sentencepiece piece.
    added_.resolve(
        cfg.names, cfg.path, [this](const std::string& name) { return sp_.piece_to_id(name); },
        "a sentencepiece piece");

    Fnv1a64 h;
    h.add_str(model_bytes);
    added_.hash(h);
    fingerprint_ = h.hex();
  }

  std::vector<int64_t> encode(const std::string& text) const override {
    return sp_.encode(text, dir_);
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    // Runs of sentencepiece ids are decoded together so that byte-fallback pieces of one
    // character join up; added tokens split the runs.
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      out += sp_.decode(run, dir_);
      run.clear();
    };
    for (int64_t id : ids) {
      if (id < 0 || id >= vocab_size_)
        throw std::runtime_error("tokenizer (" + dir_ + "): token id " + std::to_string(id) +
                                 " is outside the vocabulary [0, " +
                                 std::to_string(vocab_size_) + ")");
      if (const AddedToken* tok = added_.find(id)) {
        flush();
        if (!(skip_special && tok->special)) out += tok->content;
      } else if (id >= sp_size_) {
        throw std::runtime_error("tokenizer (" + dir_ + "): token id " + std::to_string(id) +
                                 " is not assigned to any token");
      } else {
        run.push_back(static_cast<int>(id));
      }
    }
    flush();
    return out;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  std::string fingerprint() const override { return fingerprint_; }

 private:
  std::string dir_;
  SpModel sp_;
  int64_t sp_size_ = 0, vocab_size_ = 0;
  std::string fingerprint_;
};

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  // Byte-level BPE files (tokenizer.json, vocab.json + merges.txt, tiktoken text) win;
  // otherwise the directory must hold a sentencepiece model.
  if (auto bpe = try_load_bpe_tokenizer(dir)) return bpe;
  return std::make_unique<SpTokenizer>(dir);
}

void train_tokenizer(const std::string& text_file, const std::string& dir, int vocab_size,
                     const std::vector<std::string>& specials) {
  if (!fs::is_regular_file(text_file))
    throw std::runtime_error("train_tokenizer: text file '" + text_file + "' not found");
  for (size_t i = 0; i < specials.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (specials[i] == specials[j])
        throw std::runtime_error("train_tokenizer: special token '" + specials[i] +
                                 "' is listed twice");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir))
    throw std::runtime_error("train_tokenizer: cannot create directory '" + dir + "'");

  // Byte-exact settings (identity normaliser, whitespace kept, no dummy prefix) make text
  // segments concatenate at the token level, which the chat templates rely on. Specials are
  // not user-defined symbols: they live after the SP vocabulary so encode() never emits them.
  // hard_vocab_limit=false lets a small corpus yield a smaller vocabulary instead of failing.
  const std::vector<std::pair<std::string, std::string>> args = {
      {"input", text_file},
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", "1.0"},
      {"num_threads", "1"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"hard_vocab_limit", "false"},
      {"shuffle_input_sentence", "false"},
      {"input_sentence_size", "0"},
      {"minloglevel", "2"},
  };
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : args) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  std::string model, err;
  if (SpModule::get().train(keys.data(), values.data(), args.size(), /*seed=*/42, append_bytes,
                            &model, append_bytes, &err) != 0)
    throw std::runtime_error("train_tokenizer: training on '" + text_file + "' failed: " + err);
  io::write_file_atomic(fs::path(dir) / kModelFile, model);

  SpModel sp;
  if (std::string e = sp.load(model); !e.empty())
    throw std::runtime_error("train_tokenizer: the trained model does not load: " + e);
  const int64_t sp_size = sp.size();

  nlohmann::ordered_json added = nlohmann::ordered_json::object();
  for (size_t i = 0; i < specials.size(); ++i) {
    added[std::to_string(sp_size + static_cast<int64_t>(i))] = {
        {"content", specials[i]}, {"lstrip", false},   {"normalized", false},
        {"rstrip", false},        {"single_word", false}, {"special", true}};
  }
  nlohmann::ordered_json cfg;
  cfg["tokenizer_class"] = "ftrun-sentencepiece";
  cfg["added_tokens_decoder"] = added;
  if (contains(specials, "<|begin_of_text|>")) cfg["bos_token"] = "<|begin_of_text|>";
  if (contains(specials, "<|eot_id|>"))
    cfg["eos_token"] = "<|eot_id|>";
  else if (contains(specials, "<|end_of_text|>"))
    cfg["eos_token"] = "<|end_of_text|>";
  if (contains(specials, "<|end_of_text|>")) cfg["pad_token"] = "<|end_of_text|>";
  io::write_file_atomic(fs::path(dir) / kConfigFile, cfg.dump(2) + "\n");
}

}  // namespace ftrun::data
