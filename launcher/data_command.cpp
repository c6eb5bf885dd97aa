// `ftrun data CONFIG.yaml [--split train|val|test] [--show N] [--tokens] [--color WHEN]
// [--set KEY=VALUE]...`: the command line of the data preview (runtime/data_preview.h does the
// work). It sets up the run as training does (config, tokenizer, template, token cache) but
// loads no weights, so it is quick on any machine.
#include <boost/program_options.hpp>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "comm/comm.h"
#include "launcher/commands.h"
#include "runtime/config.h"
#include "runtime/data_preview.h"
#include "runtime/run_setup.h"

namespace po = boost::program_options;

namespace ftrun::launcher {

int cmd_data(const std::vector<std::string>& argv) {
  po::options_description opts("data options");
  std::vector<std::string> sets;
  std::string config, split = "train", color = "auto", model_dir, data_dir;
  runtime::PreviewFormat fmt;
  opts.add_options()("help,h", "show help")("config", po::value(&config), "the training YAML")(
      "split", po::value(&split)->default_value(split), "train, val or test (data_config.*_file)")(
      "show", po::value(&fmt.show)->default_value(fmt.show), "samples to print before the statistics")(
      "tokens", "also list every shown sample token by token (position, id, label, text)")(
      "color", po::value(&color)->default_value(color),
      "mark loss-carrying tokens in colour: auto (when stdout is a terminal and NO_COLOR is unset), always, "
      "never ([[ ]] brackets)")(
      "set", po::value(&sets)->composing(), "override a config key: --set max_input_length=256")(
      "model-dir", po::value(&model_dir), "base model directory (HF layout)")(
      "data-dir", po::value(&data_dir), "directory the data files are relative to");
  po::positional_options_description pos;
  pos.add("config", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help") || config.empty()) {
    std::cout << "usage: ftrun data CONFIG.yaml [--split train|val|test] [--show N] [--tokens] [--set KEY=VALUE]...\n"
              << opts;
    return vm.count("help") ? 0 : 2;
  }
  if (split != "train" && split != "val" && split != "test")
    throw po::error("--split must be train, val or test (got '" + split + "')");
  if (fmt.show < 0) throw po::error("--show must be >= 0");
  if (color != "auto" && color != "always" && color != "never")
    throw po::error("--color must be auto, always or never (got '" + color + "')");
  fmt.tokens = vm.count("tokens") > 0;
  const char* no_color = std::getenv("NO_COLOR");
  fmt.color = color == "always" || (color == "auto" && isatty(STDOUT_FILENO) && !(no_color && *no_color));
  if (!model_dir.empty()) sets.push_back("model_dir=" + model_dir);
  if (!data_dir.empty()) sets.push_back("data_dir=" + data_dir);

  auto cfg = runtime::load_config(config, sets);
  check_data_files(cfg);
  auto setup = runtime::setup_run(cfg, 1);
  for (const auto& w : setup.warnings) std::cerr << "warning: " << w << "\n";  // as training prints them
  auto single = comm::make_single_comm();
  const auto preview = runtime::preview_data(setup, split, *single);
  std::cout << runtime::format_preview(preview, *setup.tokenizer, fmt) << std::flush;
  return 0;
}

}  // namespace ftrun::launcher
