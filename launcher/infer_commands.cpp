// ftrun generate / eval / chat: inference with a base model, an adapter or a full fine-tune
// (see commands.h). Command-line parsing only; the work is in runtime/ (generate.h,
// eval_run.h).
#include <boost/program_options.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "data/prompt_fit.h"
#include "launcher/commands.h"
#include "runtime/device.h"
#include "runtime/config.h"
#include "comm/rank_info.h"
#include "comm/rendezvous.h"
#include "runtime/eval_run.h"
#include "runtime/generate.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace ftrun::launcher {

std::string g_rank_prefix;

namespace {

// The sampling options generate and chat share (HF GenerationConfig names).
void add_sampling_options(po::options_description& opts, runtime::GenerateOptions& go, int64_t default_max_new) {
  opts.add_options()("max-new-tokens", po::value(&go.max_new_tokens)->default_value(default_max_new),
                     "at most this many new tokens")(
      "temperature", po::value(&go.temperature), "sample with this temperature (> 0; implies sampling)")(
      "top-p", po::value(&go.top_p), "nucleus sampling: keep the most likely tokens up to this mass (implies sampling)")(
      "top-k", po::value(&go.top_k), "keep only the k most likely tokens (implies sampling)")(
      "repetition-penalty", po::value(&go.repetition_penalty)->default_value(1.0),
      "HF's penalty on tokens already in the sequence (1 = off)")(
      "do-sample", "sample (temperature 1, no top-k/top-p unless given) instead of greedy decoding")(
      "seed", po::value(&go.seed)->default_value(0), "sampling seed")(
      "no-cache", "recompute the whole sequence each step instead of using the KV cache");
}

void finish_sampling_options(const po::variables_map& vm, runtime::GenerateOptions& go) {
  go.do_sample = vm.count("do-sample") || vm.count("temperature") || vm.count("top-p") || vm.count("top-k");
  go.use_cache = !vm.count("no-cache");
  // Each test is written !(ok) so that NaN (which compares false with everything) fails it;
  // the value given is echoed back.
  auto got = [](double v) {
    std::ostringstream os;
    os << " (got " << v << ")";
    return os.str();
  };
  if (go.max_new_tokens < 1)
    throw po::error("--max-new-tokens must be >= 1 (got " + std::to_string(go.max_new_tokens) + ")");
  if (vm.count("temperature") && !(go.temperature > 0 && std::isfinite(go.temperature)))
    throw po::error("--temperature must be > 0 (leave sampling options out for greedy decoding)" + got(go.temperature));
  if (vm.count("top-p") && !(go.top_p > 0 && go.top_p <= 1)) throw po::error("--top-p must be in (0, 1]" + got(go.top_p));
  if (vm.count("top-k") && go.top_k < 0) throw po::error("--top-k must be >= 0" + got(double(go.top_k)));
  if (!(go.repetition_penalty > 0 && std::isfinite(go.repetition_penalty)))
    throw po::error("--repetition-penalty must be > 0" + got(go.repetition_penalty));
}

std::string strip(const std::string& s) {
  const char* ws = " \t\r\n";
  auto a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

// The reply text of generated ids: the stop token that ended it dropped, specials skipped.
std::string reply_text(const runtime::Inference& inf, std::vector<int64_t> ids, const std::vector<int64_t>& stop_ids) {
  if (!ids.empty() && std::find(stop_ids.begin(), stop_ids.end(), ids.back()) != stop_ids.end()) ids.pop_back();
  return inf.tokenizer->decode(ids, /*skip_special=*/true);
}

}  // namespace

int cmd_generate(const std::vector<std::string>& argv) {
  po::options_description opts("generate options");
  std::string path, prompt, base, system;
  runtime::GenerateOptions go;
  opts.add_options()("help,h", "show help")("path", po::value(&path), "model or adapter directory")(
      "prompt", po::value(&prompt), "the user message")(
      "system", po::value(&system), "an optional system message")(
      "base", po::value(&base), "base model directory (overrides the adapter's)");
  add_sampling_options(opts, go, 64);
  po::positional_options_description pos;
  pos.add("path", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help") || path.empty() || prompt.empty()) {
    std::cout << "usage: ftrun generate PATH --prompt TEXT [options]\n" << opts;
    return vm.count("help") ? 0 : 2;
  }
  finish_sampling_options(vm, go);
  std::vector<data::Message> msgs;
  if (!system.empty()) msgs.push_back({"system", system});
  msgs.push_back({"user", prompt});
  // The prompt is tokenized, and refused when longer than the model's context, before any
  // weight is loaded (generate refuses rather than cuts; chat drops old turns instead).
  std::vector<int64_t> ids;
  auto inf = runtime::load_for_inference(
      path, base, "",
      [&](const models::ModelConfig& config, const data::Tokenizer& tok, const data::ChatTemplate& tmpl) {
        ids = tmpl.prompt(msgs, tok);
        runtime::check_prompt_fits(config, int64_t(ids.size()));
      });
  go.stop_ids = inf.chat_template->stop_ids(*inf.tokenizer);
  runtime::GenerateStats stats;
  auto out = runtime::generate(*inf.model, ids, go, &stats);
  std::cout << inf.tokenizer->decode(out, /*skip_special=*/true) << std::endl;
  // Speed on stderr, so stdout stays the reply alone.
  std::cerr << "ftrun: " << stats.new_tokens << " tokens in " << stats.total_seconds << " s ("
            << stats.tokens_per_second() << " tokens/s, first token after " << stats.first_token_seconds * 1000.0
            << " ms, prompt " << ids.size() << " tokens" << (go.use_cache ? "" : ", no KV cache") << ")\n";
  return 0;
}

int cmd_eval(const std::vector<std::string>& argv) {
  po::options_description opts("eval options");
  std::vector<std::string> sets;
  std::string config, checkpoint, split = "val", output;
  int64_t max_new = 0, batch = 0;
  opts.add_options()("help,h", "show help")("config", po::value(&config), "the training YAML")(
      "checkpoint", po::value(&checkpoint),
      "adapter, checkpoint-N or full model directory (default: training_args.output_dir, the final result)")(
      "split", po::value(&split)->default_value(split), "val (data_config.val_file) or test (data_config.test_file)")(
      "set", po::value(&sets)->composing(), "override a config key: --set data_config.val_file=x.jsonl")(
      "output", po::value(&output), "predictions JSONL (default: OUTPUT_DIR/predictions_SPLIT.jsonl)")(
      "max-new-tokens", po::value(&max_new),
      "at most this many new tokens (default: training_args.generation_config.max_new_tokens, else 512)")(
      "batch-size", po::value(&batch), "rows per generation batch on each rank (default: per_device_eval_batch_size)");
  po::positional_options_description pos;
  pos.add("config", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help") || config.empty()) {
    std::cout << "usage: ftrun eval CONFIG.yaml [--checkpoint DIR] [--split val|test] [--set KEY=VALUE]...\n" << opts;
    return vm.count("help") ? 0 : 2;
  }
  if (split != "val" && split != "test") throw po::error("--split must be val or test (got '" + split + "')");
  if (vm.count("max-new-tokens") && max_new < 1) throw po::error("--max-new-tokens must be >= 1");
  if (vm.count("batch-size") && batch < 1) throw po::error("--batch-size must be >= 1");
  // The rank is known first, so every error below names the rank that hit it.
  auto info = comm::detect_rank_info();
  if (info.world_size > 1) g_rank_prefix = "rank " + std::to_string(info.rank) + ": ";
  auto cfg = runtime::load_config(config, sets);
  check_data_files(cfg);
  runtime::EvalRequest req;
  req.checkpoint = checkpoint;
  req.split = split;
  req.output = output;
  if (vm.count("max-new-tokens")) req.max_new_tokens = max_new;
  if (vm.count("batch-size")) req.batch_size = batch;
  runtime::prepare_eval_request(cfg, req);  // before the rendezvous: a bad request never waits for peers
  // One process per rank, as in training (torchrun-style env, mpirun or srun).
  comm::CommOptions co;
  // The device first (runtime/device.h): auto is nccl on GPUs, gloo on the CPU; it also makes
  // cuda:LOCAL_RANK the current GPU before NCCL starts.
  co.backend = runtime::comm_backend_for(cfg, runtime::resolve_device(cfg, info.local_rank), info.world_size);
  co.rendezvous_timeout = co.collective_timeout = std::chrono::milliseconds(int64_t(cfg.collective_timeout * 1000.0));
  auto comm = comm::init_comm(info, co);
  auto metrics = runtime::evaluate_checkpoint(cfg, req, *comm);
  if (comm->rank() == 0) std::cout << metrics.dump() << std::endl;
  return 0;
}

int cmd_chat(const std::vector<std::string>& argv) {
  po::options_description opts("chat options");
  std::string path, base, system;
  runtime::GenerateOptions go;
  opts.add_options()("help,h", "show help")("path", po::value(&path), "model or adapter directory")(
      "system", po::value(&system), "a system message in front of the conversation")(
      "base", po::value(&base), "base model directory (overrides the adapter's)")(
      "show-prompt", "print each turn's prompt length (tokens, history included) on stderr");
  add_sampling_options(opts, go, 256);
  po::positional_options_description pos;
  pos.add("path", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help") || path.empty()) {
    std::cout << "usage: ftrun chat PATH [options]   (type `clear` to start over, `exit` or end of input to quit)\n"
              << opts;
    return vm.count("help") ? 0 : 2;
  }
  finish_sampling_options(vm, go);
  const bool show_prompt = vm.count("show-prompt") > 0;
  auto inf = runtime::load_for_inference(path, base);
  go.stop_ids = inf.chat_template->stop_ids(*inf.tokenizer);
  const int64_t context = inf.model->config().max_position_embeddings, budget = context - go.max_new_tokens;
  if (budget < 1)
    throw std::runtime_error("--max-new-tokens " + std::to_string(go.max_new_tokens) +
                             " leaves no room for a prompt in the model's context of " + std::to_string(context) +
                             " tokens (max_position_embeddings in config.json)");
  const bool tty = isatty(STDIN_FILENO);
  std::vector<data::Message> history;
  if (!system.empty()) history.push_back({"system", system});
  const size_t fresh = history.size();
  std::string line;
  uint64_t turn = 0;
  for (;;) {
    if (tty) std::cout << "user> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    auto text = strip(line);
    if (text.empty()) continue;
    if (text == "exit" || text == "quit") break;
    if (text == "clear") {
      history.resize(fresh);
      std::cerr << "ftrun: history cleared\n";
      continue;
    }
    history.push_back({"user", text});
    // The history must leave room for the reply: the oldest exchanges go first, for good.
    auto fitted = data::fit_prompt(*inf.chat_template, history, *inf.tokenizer, budget);
    if (fitted.dropped_messages > 0) {
      history.erase(history.begin() + std::ptrdiff_t(fresh),
                    history.begin() + std::ptrdiff_t(fresh + fitted.dropped_messages));
      std::cerr << "ftrun: dropped the " << fitted.dropped_messages << " oldest message(s) to fit the model's context of "
                << context << " tokens with room for " << go.max_new_tokens << " new ones\n";
    }
    if (fitted.cut)
      std::cerr << "ftrun: the message is longer than the model's context allows (" << budget
                << " prompt tokens); only its end was kept\n";
    auto ids = std::move(fitted.ids);
    if (show_prompt)
      std::cerr << "ftrun: turn " << (history.size() - fresh + 1) / 2 << " prompt " << ids.size() << " tokens\n";
    auto opts_turn = go;
    opts_turn.seed = go.seed + turn++;  // a fresh draw each turn, reproducible by --seed
    runtime::GenerateStats stats;
    auto out = runtime::generate(*inf.model, ids, opts_turn, &stats);
    auto reply = strip(reply_text(inf, out, go.stop_ids));
    std::cout << (tty ? "assistant> " : "") << reply << std::endl;
    history.push_back({"assistant", reply});
  }
  if (tty) std::cout << std::endl;
  return 0;
}

}  // namespace ftrun::launcher
