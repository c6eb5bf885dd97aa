// See prompt_fit.h for the rule.
#include "data/prompt_fit.h"

#include <algorithm>

namespace ftrun::data {
namespace {

// The tokens a template puts before the text of a first user message: the common prefix of
// two one-question prompts that differ only in that text.
std::vector<int64_t> template_head(const ChatTemplate& tmpl, std::vector<Message> base, const Tokenizer& tok) {
  base.push_back({"user", "a"});
  auto a = tmpl.prompt(base, tok);
  base.back().content = "b";
  auto b = tmpl.prompt(base, tok);
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  a.resize(n);
  return a;
}

}  // namespace

FittedPrompt fit_prompt(const ChatTemplate& tmpl, const std::vector<Message>& messages, const Tokenizer& tok,
                        int64_t max_tokens) {
  FittedPrompt out;
  std::vector<Message> kept = messages;
  out.ids = tmpl.prompt(kept, tok);
  const auto budget = size_t(std::max<int64_t>(max_tokens, 0));
  if (max_tokens <= 0 || out.ids.size() <= budget) return out;

  auto first_turn = [&] {
    return std::find_if(kept.begin(), kept.end(), [](const Message& m) { return m.role != "system"; });
  };
  for (;;) {
    auto from = first_turn();
    if (from == kept.end()) break;
    auto next_user = std::find_if(from + 1, kept.end(), [](const Message& m) { return m.role == "user"; });
    if (next_user == kept.end()) break;  // the question itself stays
    // Back to front, so the indices in front stay valid; system messages in between stay.
    for (auto k = next_user - kept.begin(); k-- > from - kept.begin();)
      if (kept[size_t(k)].role != "system") {
        kept.erase(kept.begin() + k);
        ++out.dropped_messages;
      }
    out.ids = tmpl.prompt(kept, tok);
    if (out.ids.size() <= budget) return out;
  }

  std::vector<Message> systems(kept.begin(), first_turn());
  auto head = template_head(tmpl, systems, tok);
  if (head.size() >= budget) head = template_head(tmpl, {}, tok);
  if (head.size() >= budget) head.clear();
  std::vector<int64_t> ids = head;
  ids.insert(ids.end(), out.ids.end() - std::ptrdiff_t(budget - head.size()), out.ids.end());
  out.ids = std::move(ids);
  out.cut = true;
  return out;
}

}  // namespace ftrun::data
