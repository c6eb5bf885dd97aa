// Next-token pre-training on a text file (see pretrain.h), through the same Stepper as
// fine-tuning with every parameter trainable.
#include "runtime/pretrain.h"

#include <torch/torch.h>

#include <fstream>

#include "data/collator.h"
#include "runtime/trainer.h"

namespace ftrun::runtime {

double pretrain_on_text(models::CausalLM& model, const data::Tokenizer& tok, const std::string& text_file,
                        int64_t bos_id, const PretrainOptions& o) {
  std::ifstream in(text_file);
  if (!in) throw std::runtime_error(text_file + ": cannot open pre-training text");
  std::vector<data::Sample> samples;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<int64_t> ids = {bos_id};
    for (auto id : tok.encode(line)) ids.push_back(id);
    if (int64_t(ids.size()) > o.max_length) ids.resize(size_t(o.max_length));
    samples.push_back({ids, ids});
  }
  if (samples.empty()) throw std::runtime_error(text_file + ": no text to pre-train on");

  peft::NamedTensors all;
  for (auto& p : model.named_parameters()) {
    p.value().set_requires_grad(true);
    all.emplace_back(p.key(), p.value());
  }
  TrainingArgs args;
  args.learning_rate = o.learning_rate;
  args.warmup_steps = o.steps / 10;
  Stepper stepper(model, all, args, o.steps);
  auto n = int64_t(samples.size());
  int64_t epoch = 0, cursor = 0;
  auto order = data::epoch_order(n, o.seed, epoch);
  double tail = 0;
  int64_t tail_n = 0;
  for (int64_t s = 0; s < o.steps; ++s) {
    std::vector<const data::Sample*> group;
    while (int64_t(group.size()) < o.batch_size) {
      if (cursor == n) {
        order = data::epoch_order(n, o.seed, ++epoch);
        cursor = 0;
      }
      group.push_back(&samples[size_t(order[size_t(cursor++)])]);
    }
    auto st = stepper.step({data::collate(group, 0)});
    if (s >= o.steps - std::max<int64_t>(1, o.steps / 10)) {
      tail += st.loss;
      ++tail_n;
    }
  }
  return tail / double(tail_n);
}

}  // namespace ftrun::runtime
