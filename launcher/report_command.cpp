// `ftrun report OUTPUT_DIR`: (re)writes a run's report.html and training_loss.png from what the
// run left in its output directory (runtime/report.h); training writes them at its end too.
#include <iostream>
#include <string>
#include <vector>

#include "launcher/commands.h"
#include "runtime/report.h"

namespace ftrun::launcher {

int cmd_report(const std::vector<std::string>& argv) {
  if (argv.size() != 1 || argv[0].empty() || argv[0][0] == '-') {
    std::cerr << "usage: ftrun report OUTPUT_DIR   (writes OUTPUT_DIR/report.html and training_loss.png)\n";
    return 2;
  }
  const runtime::ReportFiles f = runtime::write_report(argv[0]);
  std::cout << "ftrun: wrote " << f.html << "\n";
  if (!f.png.empty()) std::cout << "ftrun: wrote " << f.png << "\n";
  else std::cout << "ftrun: no training loss logged, so no training_loss.png\n";
  return 0;
}

}  // namespace ftrun::launcher
