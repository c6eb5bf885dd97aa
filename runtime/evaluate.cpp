// Evaluation by generation (see evaluate.h).
#include "runtime/evaluate.h"

#include "io/file.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "data/collator.h"
#include "data/dataset.h"
#include "runtime/device.h"
#include "data/templates/glm.h"
#include "data/prompt_fit.h"
#include "runtime/text_metrics.h"

namespace fs = std::filesystem;

namespace ftrun::runtime {

namespace {

std::string strip(const std::string& s) {
  const char* ws = " \t\r\n";
  auto a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  auto b = s.find_last_not_of(ws);
  return s.substr(a, b - a + 1);
}

}  // namespace

std::vector<PredictRow> prediction_rows(const std::string& file, const data::ChatTemplate& tmpl,
                                        const data::Tokenizer& tok, int64_t max_input_length, bool combine) {
  if (file.empty()) throw std::runtime_error("prediction_rows: no data file given");
  if (!fs::exists(file)) throw std::runtime_error(file + ": evaluation data file not found");
  auto examples = data::read_dataset(file);
  std::vector<PredictRow> rows;
  for (const auto& ex : examples) {
    if (ex.pretokenized())
      throw std::runtime_error(ex.where + ": a pre-tokenized record (input_ids/labels) has no text to compare "
                                          "generations with; evaluation by generation needs conversations");
    size_t last = ex.messages.size();
    for (size_t i = ex.messages.size(); i-- > 0;)
      if (ex.messages[i].role == "assistant") {
        last = i;
        break;
      }
    if (last == ex.messages.size())
      throw std::runtime_error(ex.where + ": no assistant message (an evaluation row needs the gold reply)");
    if (tmpl.uses_demo_eval_rows()) {
      // The GLM-4 demo's evaluation rows (B2 fixed): the k-th row answers the k-th assistant
      // message (combine=false) or the last one (combine=true).
      std::vector<std::string> replies;
      for (const auto& m : ex.messages)
        if (m.role == "assistant") replies.push_back(m.content);
      if (combine) replies = {ex.messages[last].content};
      auto demo_rows = data::glm4_eval_rows(ex.messages, tok, combine, max_input_length, 0);
      for (size_t k = 0; k < demo_rows.size() && k < replies.size(); ++k) {
        PredictRow row;
        row.prompt = std::move(demo_rows[k].prompt);
        row.prompt_text = tok.decode(row.prompt, /*skip_special=*/false);
        row.reference = strip(replies[k]);
        rows.push_back(std::move(row));
      }
      continue;
    }
    PredictRow row;
    std::vector<data::Message> context(ex.messages.begin(), ex.messages.begin() + std::ptrdiff_t(last));
    // Other templates: the oldest turns go first, then the question's start (data/prompt_fit.h).
    row.prompt = data::fit_prompt(tmpl, context, tok, max_input_length).ids;
    row.prompt_text = tok.decode(row.prompt, /*skip_special=*/false);
    row.reference = strip(ex.messages[last].content);
    rows.push_back(std::move(row));
  }
  if (rows.empty()) throw std::runtime_error(file + ": no rows to evaluate");
  return rows;
}

std::vector<std::string> all_gather_strings(comm::Comm& comm, const std::string& mine) {
  const int world = comm.world_size();
  if (world == 1) return {mine};
  auto len = torch::tensor({int64_t(mine.size())}, torch::kLong);
  auto lens = torch::empty({world}, torch::kLong);
  comm.all_gather(len, lens);
  int64_t longest = std::max<int64_t>(1, lens.max().item<int64_t>());
  auto bytes = torch::zeros({longest}, torch::kByte);
  if (!mine.empty()) std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  auto all = torch::empty({world * longest}, torch::kByte);
  comm.all_gather(bytes, all);
  std::vector<std::string> out;
  const auto* p = static_cast<const char*>(all.data_ptr());
  for (int r = 0; r < world; ++r) out.emplace_back(p + r * longest, size_t(lens[r].item<int64_t>()));
  return out;
}

PredictResult predict(models::CausalLM& model, const std::vector<PredictRow>& rows, const data::Tokenizer& tok,
                      const PredictOptions& o, comm::Comm& comm) {
  if (o.batch_size < 1) throw std::runtime_error("predict: batch size must be >= 1");
  const int rank = comm.rank(), world = comm.world_size();
  auto start = std::chrono::steady_clock::now();
  std::vector<size_t> mine;  // row i on rank i % world
  for (size_t i = size_t(rank); i < rows.size(); i += size_t(world)) mine.push_back(i);
  int64_t batches = (int64_t(mine.size()) + o.batch_size - 1) / o.batch_size;
  const bool synced = o.synced && world > 1;
  if (synced) {
    // Every rank runs as many batches as the busiest one (the rest are empty: dummy forwards).
    auto mine_t = torch::tensor({batches}, torch::kLong);
    auto all = torch::empty({world}, torch::kLong);
    comm.all_gather(mine_t, all);
    batches = all.max().item<int64_t>();
  }
  std::function<bool(bool)> keep_going;
  if (synced)
    keep_going = [&comm](bool active) {
      auto t = torch::tensor({active ? 1.0f : 0.0f});
      comm.all_reduce_sum(t);
      return t.item<float>() > 0;
    };
  std::string local;  // (row index, byte length, bytes) per row: exact bytes, any encoding
  auto put = [&local](uint64_t v) { local.append(reinterpret_cast<const char*>(&v), sizeof v); };
  int64_t new_tokens = 0;
  for (int64_t b = 0; b < batches; ++b) {
    std::vector<std::vector<int64_t>> prompts;
    std::vector<size_t> which;
    for (int64_t k = b * o.batch_size; k < (b + 1) * o.batch_size && k < int64_t(mine.size()); ++k) {
      which.push_back(mine[size_t(k)]);
      prompts.push_back(rows[mine[size_t(k)]].prompt);
    }
    auto outs = generate_batch(model, prompts, o.generate, keep_going);
    for (size_t k = 0; k < outs.size(); ++k) {
      auto ids = outs[k];
      new_tokens += int64_t(ids.size());
      // The stop token that ended the reply is not part of it.
      if (!ids.empty() && std::find(o.generate.stop_ids.begin(), o.generate.stop_ids.end(), ids.back()) !=
                              o.generate.stop_ids.end())
        ids.pop_back();
      auto text = strip(tok.decode(ids, /*skip_special=*/true));
      put(which[k]);
      put(text.size());
      local += text;
    }
  }
  PredictResult res;
  auto gathered = all_gather_strings(comm, local);
  auto count = torch::tensor({double(new_tokens)}, torch::kDouble);
  if (world > 1) comm.all_reduce_sum(count);
  res.new_tokens = int64_t(count.item<double>());
  if (rank == 0) {
    res.predictions.assign(rows.size(), "");
    std::vector<bool> seen(rows.size(), false);
    for (const auto& blob : gathered) {
      size_t at = 0;
      auto get = [&]() {
        uint64_t v;
        if (at + sizeof v > blob.size()) throw std::logic_error("predict: truncated prediction record");
        std::memcpy(&v, blob.data() + at, sizeof v);
        at += sizeof v;
        return v;
      };
      while (at < blob.size()) {
        auto i = size_t(get());
        auto n = size_t(get());
        if (i >= rows.size() || at + n > blob.size()) throw std::logic_error("predict: bad prediction record");
        res.predictions[i] = blob.substr(at, n);
        seen[i] = true;
        at += n;
      }
    }
    if (std::find(seen.begin(), seen.end(), false) != seen.end())
      throw std::logic_error("predict: some rows came back from no rank");
    std::vector<std::string> refs;
    for (const auto& r : rows) refs.push_back(r.reference);
    res.scores = mean_text_scores(res.predictions, refs);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return res;
}

void write_predictions(const std::string& path, const std::vector<PredictRow>& rows,
                       const std::vector<std::string>& predictions) {
  if (rows.size() != predictions.size())
    throw std::logic_error("write_predictions: " + std::to_string(rows.size()) + " rows but " +
                           std::to_string(predictions.size()) + " predictions");
  std::string text;
  for (size_t i = 0; i < rows.size(); ++i)
    text += nlohmann::ordered_json{{"prompt", rows[i].prompt_text},
                                   {"reference", rows[i].reference},
                                   {"prediction", predictions[i]}}
                .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
            "\n";
  io::write_file_atomic(path, text);
}

std::pair<double, int64_t> loss_sum_and_count(models::CausalLM& model, const std::vector<data::Sample>& samples,
                                              int64_t batch_size, int64_t pad_id) {
  torch::NoGradGuard ng;
  model.eval();
  double sum = 0;
  int64_t count = 0;
  for (size_t i = 0; i < samples.size(); i += size_t(batch_size)) {
    std::vector<const data::Sample*> group;
    for (size_t k = i; k < samples.size() && k < i + size_t(batch_size); ++k) group.push_back(&samples[k]);
    auto b = batch_on(data::collate(group, pad_id), model.device());
    if (b.num_label_tokens == 0) continue;
    // The head and loss over the labelled positions only, in chunks (models/chunked_loss.h).
    sum += model.forward_loss(b.input_ids, b.attention_mask, b.labels).item<double>();
    count += b.num_label_tokens;
  }
  return {sum, count};
}

std::pair<double, int64_t> distributed_loss_sum_and_count(models::CausalLM& model,
                                                          const std::vector<data::Sample>& samples,
                                                          int64_t batch_size, int64_t pad_id, comm::Comm& comm) {
  const int64_t world = comm.world_size(), rank = comm.rank(), n = int64_t(samples.size());
  if (world == 1) return loss_sum_and_count(model, samples, batch_size, pad_id);
  if (n == 0) return {0.0, 0};
  std::vector<const data::Sample*> mine;
  for (int64_t i = rank; i < n; i += world) mine.push_back(&samples[size_t(i)]);
  // Rank 0 has the most samples (ceil(n / world)); every rank runs that many batches.
  const int64_t most = (n + world - 1) / world, batches = (most + batch_size - 1) / batch_size;
  torch::NoGradGuard ng;
  model.eval();
  double sum = 0;
  int64_t count = 0;
  for (int64_t b = 0; b < batches; ++b) {
    std::vector<const data::Sample*> group;
    for (int64_t k = b * batch_size; k < int64_t(mine.size()) && k < (b + 1) * batch_size; ++k)
      group.push_back(mine[size_t(k)]);
    const bool dummy = group.empty();
    if (dummy) group.push_back(&samples[0]);
    auto batch = batch_on(data::collate(group, pad_id), model.device());
    // Run on dummy batches too: under ZeRO-3 every forward is collective.
    auto loss = model.forward_loss(batch.input_ids, batch.attention_mask, batch.labels);
    if (dummy || batch.num_label_tokens == 0) continue;
    sum += loss.item<double>();
    count += batch.num_label_tokens;
  }
  auto totals = torch::tensor({sum, double(count)}, torch::kDouble);
  comm.all_reduce_sum(totals);
  return {totals[0].item<double>(), int64_t(totals[1].item<double>())};
}

int64_t eval_max_new_tokens(const nlohmann::json& gc) {
  if (gc.is_object() && gc.contains("max_new_tokens") && !gc["max_new_tokens"].is_null()) {
    const auto& v = gc["max_new_tokens"];
    if (!v.is_number_integer() || v.get<int64_t>() < 1)
      throw std::runtime_error("training_args.generation_config.max_new_tokens: expected a positive integer, got " +
                               v.dump());
    return v.get<int64_t>();
  }
  return 512;  // the GLM-4 demo's generation_config
}

std::vector<int64_t> eval_stop_ids(const data::ChatTemplate& tmpl, const data::Tokenizer& tok,
                                   const models::ModelConfig& mc) {
  auto ids = tmpl.stop_ids(tok);
  for (auto e : mc.eos_token_id)
    if (e >= 0 && std::find(ids.begin(), ids.end(), e) == ids.end()) ids.push_back(e);
  return ids;
}

}  // namespace ftrun::runtime
