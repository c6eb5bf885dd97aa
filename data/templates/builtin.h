// The built-in chat templates, one file each in data/templates/ (llama3.cpp, glm.cpp for glm4
// and chatglm3, qwen.cpp, bluelm.cpp): their factories, which make_template() (chat_template.cpp)
// lists, and the few helpers they share. Internal to data/: callers use chat_template.h, and
// templates/glm.h for the GLM-4 demo's sample and evaluation rows.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "data/chat_template.h"

namespace ftrun::data {

std::unique_ptr<ChatTemplate> make_llama3_template();
std::unique_ptr<ChatTemplate> make_glm4_template();
std::unique_ptr<ChatTemplate> make_chatglm3_template();
std::unique_ptr<ChatTemplate> make_qwen_template();
std::unique_ptr<ChatTemplate> make_bluelm_template();

namespace templates {

constexpr int64_t kIgnore = -100;  // the label of a position that carries no loss

using Ids = std::vector<int64_t>;

inline void append(Ids& ids, const Ids& more) { ids.insert(ids.end(), more.begin(), more.end()); }

// Appends `ids` to the sample; their labels are the ids themselves when `train`, else -100.
inline void append(Sample& s, const Ids& ids, bool train) {
  append(s.input_ids, ids);
  if (train)
    append(s.labels, ids);
  else
    s.labels.insert(s.labels.end(), ids.size(), kIgnore);
}

}  // namespace templates
}  // namespace ftrun::data
