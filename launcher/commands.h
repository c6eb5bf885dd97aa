// launcher/: owns the ftrun executable: command-line parsing (main.cpp, infer_commands.cpp),
// the environment defaults, and the spawn-mode agent with its ZeroMQ control plane. Nothing
// below it includes launcher/.
//
// Subcommands beside training that live outside main.cpp (each takes the arguments after
// its name and returns the process exit code; boost::program_options errors propagate).
#pragma once
#include <string>
#include <vector>

namespace ftrun::runtime {
struct Config;
}

namespace ftrun::launcher {

// "rank R: " once a multi-process subcommand knows its rank, so main()'s error line says
// which rank raised it; empty in a single process.
extern std::string g_rank_prefix;

// ftrun generate PATH --prompt TEXT [sampling options]: one reply.
int cmd_generate(const std::vector<std::string>& argv);
// ftrun eval CONFIG.yaml [--checkpoint DIR] [--split val|test] [--set KEY=VALUE]...:
// loss + generation metrics of a trained model on a split, predictions JSONL.
int cmd_eval(const std::vector<std::string>& argv);
// ftrun chat PATH [--base DIR] [--system TEXT] [sampling options]: multi-turn chat on
// stdin/stdout.
int cmd_chat(const std::vector<std::string>& argv);
// ftrun report OUTPUT_DIR: report.html and training_loss.png of a run (runtime/report.h).
int cmd_report(const std::vector<std::string>& argv);
// ftrun data CONFIG.yaml [--split train|val|test] [--show N] [--set KEY=VALUE]...: samples as
// training renders them, loss tokens marked, and the data statistics (runtime/data_preview.h).
int cmd_data(const std::vector<std::string>& argv);

// Refuses a data_config train/val/test file that is a directory, naming the key (issue 16: it
// used to fail as "read error" while its tokens were hashed). Defined in main.cpp.
void check_data_files(const runtime::Config& cfg);

}  // namespace ftrun::launcher
