// The model-family registry's list and its look-ups (see family.h).
#include "models/family.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "models/families/family_parts.h"

namespace ftrun::models {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

const std::vector<const Family*>& families() {
  // Listed rather than self-registered: a static library drops object files nothing refers
  // to, and with them their registration. The order is the order of supported_model_types()
  // and of make-tiny-model's list.
  static const std::vector<const Family*> kFamilies = {
      &llama_family(), &qwen2_family(), &mistral_family(), &chatglm3_family(), &glm4_family(), &glm_family(), &glm4_0414_family(),
      &bluelm_family(),
  };
  return kFamilies;
}

const Family* find_family(const std::string& name) {
  for (const Family* f : families())
    if (f->name == name) return f;
  return nullptr;
}

const Family* buildable_family(const std::string& model_type) {
  for (const Family* f : families())
    if (f->build && f->model_type == model_type) return f;
  return nullptr;
}

const Family& family_for(const ModelConfig& config) {
  if (const Family* f = buildable_family(config.model_type)) return *f;
  throw std::runtime_error(config.path + ": model_type '" + config.model_type + "' is not supported");
}

std::string supported_model_types() {
  std::vector<std::string> seen;
  for (const Family* f : families())
    if (f->build && std::find(seen.begin(), seen.end(), f->model_type) == seen.end()) seen.push_back(f->model_type);
  std::string out;
  for (const auto& t : seen) out += (out.empty() ? "" : ", ") + t;
  return out;
}

std::vector<std::string> tiny_family_names() {
  std::vector<std::string> out;
  for (const Family* f : families())
    if (f->tiny.config && !f->tiny.specials.empty()) out.push_back(f->name);
  return out;
}

std::string default_template(const std::string& model_type, const HasToken& has_token) {
  const std::string t = lower(model_type);
  std::vector<const Family*> candidates;
  for (const Family* f : families()) {
    const auto& more = f->template_only_model_types;
    if (lower(f->model_type) == t || std::find(more.begin(), more.end(), t) != more.end()) candidates.push_back(f);
  }
  if (candidates.empty()) return "";
  // Entries sharing a model_type: the one whose marker token the tokenizer has, else the one
  // without a marker, else (a template-only model_type) the first.
  for (const Family* f : candidates)
    if (!f->tokenizer_marker.empty() && has_token(f->tokenizer_marker)) return f->chat_template;
  for (const Family* f : candidates)
    if (f->tokenizer_marker.empty()) return f->chat_template;
  return candidates.front()->chat_template;
}

}  // namespace ftrun::models
