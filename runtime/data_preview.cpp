// `ftrun data`: a split rendered and counted exactly as training renders it (see
// data_preview.h for the definitions and why every number comes from the trainer's own code).
#include "runtime/data_preview.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "data/collator.h"
#include "data/dataset.h"
#include "data/token_cache.h"
#include "runtime/run_setup.h"

namespace ftrun::runtime {
namespace {

constexpr int64_t kIgnore = -100;
constexpr const char* kLossOn = "\033[1;32m";  // bold green
constexpr const char* kLossOff = "\033[0m";

int64_t first_loss(const data::Sample& s) {
  for (size_t i = 0; i < s.labels.size(); ++i)
    if (s.labels[i] != kIgnore) return int64_t(i);
  return int64_t(s.labels.size());
}

// What the loss counts in a sample: data::collate's rule (positions 1..T-1).
int64_t counted_loss(const data::Sample& s) {
  int64_t n = 0;
  for (size_t t = 1; t < s.labels.size(); ++t) n += s.labels[t] != kIgnore;
  return n;
}

// The padding of one batch as data::collate builds it: B x T slots, attention_mask 0 on pads.
void add_batch(const std::vector<const data::Sample*>& group, int64_t pad_id, DataStats& st) {
  const data::Batch b = data::collate(group, pad_id);
  const int64_t slots = b.attention_mask.numel();
  st.batches += 1;
  st.slots += slots;
  st.pad_slots += slots - b.attention_mask.sum().item<int64_t>();
}

std::string pct(int64_t part, int64_t whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", whole > 0 ? 100.0 * double(part) / double(whole) : 0.0);
  return buf;
}

std::string rows_word(int64_t n) { return std::to_string(n) + (n == 1 ? " row" : " rows"); }

// Length of the valid UTF-8 sequence starting at s[i], 0 when it is not one.
size_t utf8_len(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  return n;
}

// Text made safe to print: control bytes and bytes that are not valid UTF-8 as \xNN, so data
// can neither garble the terminal nor pass for the colour codes. one_line: also \n, \t, \r
// and the backslash escaped (the per-token listing); else newlines and tabs stay as they are.
std::string escape(const std::string& s, bool one_line = true) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = utf8_len(s, i);
    if (!one_line && (c == '\n' || c == '\t')) out += char(c);
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c == '\\' && one_line) out += "\\\\";
    else if (n == 0 || c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
      i += 1;
      continue;
    } else {
      out.append(s, i, n);
      i += n;
      continue;
    }
    i += 1;
  }
  return out;
}

// The text tokens [i, k] add after the tokens before i: decode(..k] minus decode(..i), over a
// few tokens of context (decoding a token alone can lose what it means in place: sentencepiece
// drops a lone leading space). None when that is not a clean suffix: the shorter decode is not
// a prefix of the longer, or the added text holds U+FFFD (part of a character).
std::optional<std::string> added_text(const std::vector<int64_t>& ids, size_t i, size_t k,
                                      const data::Tokenizer& tok) {
  const size_t from = i >= 16 ? i - 16 : 0;
  const std::vector<int64_t> before(ids.begin() + long(from), ids.begin() + long(i));
  const std::vector<int64_t> with(ids.begin() + long(from), ids.begin() + long(k) + 1);
  const std::string a = tok.decode(before, false), b = tok.decode(with, false);
  if (b.compare(0, a.size(), a) != 0) return std::nullopt;
  std::string added = b.substr(a.size());
  if (added.find("\xEF\xBF\xBD") != std::string::npos) return std::nullopt;
  return added;
}

// Each token's text for the per-token listing. A character spread over byte tokens (byte
// fallback, byte-level BPE) is shown on each of them as `<char> [j/n]`.
std::vector<std::string> token_texts(const std::vector<int64_t>& ids, const data::Tokenizer& tok) {
  std::vector<std::string> out(ids.size());
  for (size_t i = 0; i < ids.size();) {
    if (tok.is_special(ids[i])) {
      out[i] = tok.decode({ids[i]}, false);
      ++i;
      continue;
    }
    if (auto t = added_text(ids, i, i, tok)) {
      out[i] = *t;
      ++i;
      continue;
    }
    // Part of a character: the shortest run i..k (UTF-8 characters are at most 4 bytes) that
    // adds clean text.
    size_t k = i + 1;
    std::optional<std::string> text;
    for (; k < ids.size() && k < i + 4 && !tok.is_special(ids[k]); ++k)
      if ((text = added_text(ids, i, k, tok))) break;
    if (!text) {  // a character cut off (or not text at all): the token decoded alone
      out[i] = tok.decode({ids[i]}, false);
      ++i;
      continue;
    }
    const size_t n = k - i + 1;
    for (size_t j = i; j <= k; ++j) out[j] = *text + " [" + std::to_string(j - i + 1) + "/" + std::to_string(n) + "]";
    i = k + 1;
  }
  return out;
}

}  // namespace

LengthStats length_stats(std::vector<int64_t> v) {
  LengthStats ls;
  if (v.empty()) return ls;
  std::sort(v.begin(), v.end());
  const auto rank = [&](int p) {
    // Nearest rank: ceil(p/100 * n), 1-based, in integers.
    const size_t r = (size_t(p) * v.size() + 99) / 100;
    return v[std::max<size_t>(r, 1) - 1];
  };
  ls.p50 = rank(50);
  ls.p90 = rank(90);
  ls.p99 = rank(99);
  ls.max = v.back();
  return ls;
}

std::string split_file(const RunSetup& setup, const std::string& split) {
  const auto& dc = setup.cfg->data_config;
  const std::string* file = split == "train" ? &dc.train_file
                            : split == "val" ? &dc.val_file
                            : split == "test" ? &dc.test_file
                                              : nullptr;
  if (!file) throw std::runtime_error("--split must be train, val or test (got '" + split + "')");
  if (file->empty())
    throw std::runtime_error(setup.cfg->path + ": data_config." + split + "_file is not set, so there is no " +
                             split + " split to show");
  return *file;
}

DataPreview preview_data(const RunSetup& setup, const std::string& split, comm::Comm& comm) {
  const Config& cfg = *setup.cfg;
  DataPreview p;
  p.split = split;
  p.file = split_file(setup, split);
  // Training's own call: the token cache, the template, the lengths, and its errors.
  p.samples = setup.encode(p.file, comm);

  // The same rows through the same template without the final cut (both lengths 0 means no
  // cut; nothing else in the encoders depends on them), for what the cut removes.
  const data::EncodeOptions opts{cfg.max_input_length, cfg.max_output_length, cfg.combine};
  const data::EncodeOptions uncut_opts{0, 0, cfg.combine};
  const auto examples = data::read_dataset(p.file);
  if (examples.size() != p.samples.size())
    throw std::runtime_error(p.file + ": internal error: " + std::to_string(examples.size()) + " rows read but " +
                             std::to_string(p.samples.size()) + " samples encoded");
  const int64_t cut = setup.chat_template->max_length(opts);
  DataStats& st = p.stats;
  st.rows = int64_t(examples.size());
  st.max_input_length = cfg.max_input_length;
  st.max_output_length = cfg.max_output_length;
  st.cut_length = cut > 0 ? cut : 0;
  std::vector<int64_t> prompt_len, response_len, trained_len;
  for (size_t i = 0; i < examples.size(); ++i) {
    p.where.push_back(examples[i].where);
    data::Sample full = data::encode_example(examples[i], *setup.chat_template, *setup.tokenizer, uncut_opts);
    const data::Sample& s = p.samples[i];
    const size_t keep = s.input_ids.size();
    // The trained sample must be the uncut one's start; otherwise these numbers would lie.
    const int64_t whole = int64_t(full.input_ids.size());
    if (int64_t(keep) != (cut > 0 ? std::min(cut, whole) : whole) ||
        !std::equal(s.input_ids.begin(), s.input_ids.end(), full.input_ids.begin()) ||
        !std::equal(s.labels.begin(), s.labels.end(), full.labels.begin()))
      throw std::runtime_error(examples[i].where + ": internal error: the trained sample is not the start of the "
                               "uncut rendering, so the preview cannot count the cut");
    const int64_t n = int64_t(full.input_ids.size());
    const int64_t removed = n - int64_t(keep);
    if (removed > 0) {
      st.cut_rows += 1;
      st.cut_tokens += removed;
      st.cut_max = std::max(st.cut_max, removed);
      for (size_t t = keep; t < full.labels.size(); ++t) st.cut_loss_tokens += full.labels[t] != kIgnore;
    }
    const int64_t counted = counted_loss(s);
    st.no_loss_rows += counted == 0;
    st.tokens += int64_t(keep);
    st.loss_tokens += counted;
    const int64_t prompt = first_loss(full), response = n - prompt;
    prompt_len.push_back(prompt);
    response_len.push_back(response);
    trained_len.push_back(int64_t(keep));
    if (cfg.max_input_length > 0 && prompt > cfg.max_input_length) {
      const int64_t over = prompt - cfg.max_input_length;
      st.prompt_over += 1;
      st.prompt_over_tokens += over;
      st.prompt_over_max = std::max(st.prompt_over_max, over);
    }
    if (cfg.max_output_length > 0 && response > cfg.max_output_length) {
      const int64_t over = response - cfg.max_output_length;
      st.response_over += 1;
      st.response_over_tokens += over;
      st.response_over_max = std::max(st.response_over_max, over);
    }
    p.uncut.push_back(std::move(full));
  }
  st.prompt = length_stats(prompt_len);
  st.response = length_stats(response_len);
  st.trained = length_stats(trained_len);

  // Padding of the batches the run builds from these samples, through data::collate.
  const auto& args = cfg.training_args;
  const int64_t n = int64_t(p.samples.size());
  if (split == "train") {
    // The trainer's sample stream on one rank: position pos is epoch_order(n, seed,
    // pos / n)[pos % n]; one epoch is ceil(n / bs) micro-batches, the last one running into
    // the next epoch's order when bs does not divide n (runtime/trainer.cpp sample_at).
    st.batch_size = args.per_device_train_batch_size;
    st.batch_size_key = "per_device_train_batch_size";
    const int64_t bs = st.batch_size, batches = (n + bs - 1) / bs;
    std::vector<int64_t> order;
    int64_t order_epoch = -1;
    for (int64_t b = 0; b < batches; ++b) {
      std::vector<const data::Sample*> group;
      for (int64_t k = 0; k < bs; ++k) {
        const int64_t pos = b * bs + k;
        if (pos / n != order_epoch) {
          order_epoch = pos / n;
          order = data::epoch_order(n, uint64_t(args.seed), order_epoch);
        }
        group.push_back(&p.samples[size_t(order[size_t(pos % n)])]);
      }
      add_batch(group, setup.pad_id, st);
    }
  } else {
    // Evaluation on one rank: consecutive rows in file order (runtime/evaluate.cpp).
    st.batch_size = args.per_device_eval_batch_size;
    st.batch_size_key = "per_device_eval_batch_size";
    for (int64_t from = 0; from < n; from += st.batch_size) {
      std::vector<const data::Sample*> group;
      for (int64_t k = from; k < std::min(n, from + st.batch_size); ++k) group.push_back(&p.samples[size_t(k)]);
      add_batch(group, setup.pad_id, st);
    }
  }
  return p;
}

std::string render_sample(const data::Sample& s, const data::Tokenizer& tok, bool color) {
  const char* open = color ? kLossOn : "[[";
  const char* close = color ? kLossOff : "]]";
  std::string out;
  std::vector<int64_t> text;  // a run of ordinary tokens with the same loss flag
  const auto flush = [&] {
    if (!text.empty()) out += escape(tok.decode(text, false), false);
    text.clear();
  };
  bool in_loss = false;
  for (size_t i = 0; i < s.input_ids.size(); ++i) {
    const bool loss = i < s.labels.size() && s.labels[i] != kIgnore;
    if (loss != in_loss) {
      flush();
      out += loss ? open : close;
      in_loss = loss;
    }
    const int64_t id = s.input_ids[i];
    if (tok.is_special(id)) {
      flush();
      out += escape(tok.decode({id}, false), false);  // spelled as is, e.g. <|user|>
    } else {
      text.push_back(id);
    }
  }
  flush();
  if (in_loss) out += close;
  return out;
}

std::string render_tokens(const data::Sample& s, const data::Tokenizer& tok) {
  std::string out;
  char buf[96];
  const std::vector<std::string> texts = token_texts(s.input_ids, tok);
  for (size_t i = 0; i < s.input_ids.size(); ++i) {
    const int64_t label = i < s.labels.size() ? s.labels[i] : kIgnore;
    std::snprintf(buf, sizeof buf, "%6zu %8lld %8lld %c ", i, (long long)s.input_ids[i], (long long)label,
                  label != kIgnore ? '*' : ' ');
    out += buf;
    out += escape(texts[i]);
    out += "\n";
  }
  return out;
}

std::string format_stats(const DataStats& st) {
  std::ostringstream o;
  o << "rows: " << st.rows << " (ftrun drops no row; a row longer than the cut loses its end)\n";
  if (st.cut_length > 0)
    o << "cut at " << st.cut_length << " tokens (max_input_length " << st.max_input_length
      << " + max_output_length " << st.max_output_length
      << (st.cut_length == st.max_input_length + st.max_output_length ? "" : " + 1")
      << ", one right cut as training makes it)\n";
  else
    o << "no cut (max_input_length + max_output_length is 0)\n";
  o << "  rows cut: " << st.cut_rows;
  if (st.cut_rows > 0)
    o << " (" << st.cut_tokens << " tokens removed, at most " << st.cut_max << " from one row; "
      << st.cut_loss_tokens << " of them carried loss)";
  o << "\n";
  o << "  rows left without loss: " << st.no_loss_rows << " (they stay in their batches and train nothing)\n";
  o << "  prompts longer than max_input_length " << st.max_input_length << ": " << rows_word(st.prompt_over);
  if (st.prompt_over > 0)
    o << " (by " << st.prompt_over_tokens << " tokens in all, at most " << st.prompt_over_max << ")";
  o << "\n";
  o << "  responses longer than max_output_length " << st.max_output_length << ": " << rows_word(st.response_over);
  if (st.response_over > 0)
    o << " (by " << st.response_over_tokens << " tokens in all, at most " << st.response_over_max << ")";
  o << "\n";
  o << "lengths in tokens (nearest rank)     p50      p90      p99      max\n";
  const auto row = [&](const char* name, const LengthStats& ls) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "  %-32s %6lld %8lld %8lld %8lld\n", name, (long long)ls.p50, (long long)ls.p90,
                  (long long)ls.p99, (long long)ls.max);
    o << buf;
  };
  row("prompt (before the cut)", st.prompt);
  row("response (before the cut)", st.response);
  row("trained sample (after the cut)", st.trained);
  o << "loss tokens: " << st.loss_tokens << " of " << st.tokens << " trained tokens (" << pct(st.loss_tokens, st.tokens)
    << ")\n";
  o << "padding at " << st.batch_size_key << " " << st.batch_size << ": " << st.pad_slots << " of " << st.slots
    << " token slots in " << st.batches << (st.batches == 1 ? " batch" : " batches") << " ("
    << pct(st.pad_slots, st.slots) << ")"
    << (st.batch_size_key == "per_device_train_batch_size" ? ", one epoch in the trainer's order on one rank"
                                                           : ", in file order on one rank")
    << "\n";
  return o.str();
}

std::string format_preview(const DataPreview& p, const data::Tokenizer& tok, const PreviewFormat& f) {
  std::ostringstream o;
  const int64_t shown = std::min<int64_t>(std::max<int64_t>(f.show, 0), int64_t(p.samples.size()));
  if (shown > 0)
    o << "== " << p.split << ": " << p.file << " (" << shown << " of " << p.samples.size()
      << " samples as training sees them; loss-carrying tokens "
      << (f.color ? std::string(kLossOn) + "in green" + kLossOff : std::string("in [[ ]]")) << ")\n";
  for (int64_t i = 0; i < shown; ++i) {
    const data::Sample& s = p.samples[size_t(i)];
    int64_t marked = 0;
    for (int64_t l : s.labels) marked += l != kIgnore;
    const int64_t full = int64_t(p.uncut[size_t(i)].input_ids.size());
    o << "\n-- sample " << i + 1 << ": " << p.where[size_t(i)] << " | " << s.input_ids.size() << " tokens";
    if (full > int64_t(s.input_ids.size())) o << " (cut from " << full << ")";
    o << ", " << marked << " carry loss\n";
    o << render_sample(s, tok, f.color) << "\n";
    if (f.tokens) o << "   pos       id    label   token\n" << render_tokens(s, tok);
  }
  o << "\n== statistics: " << p.split << " (" << p.file << ")\n" << format_stats(p.stats);
  return o.str();
}

}  // namespace ftrun::runtime
