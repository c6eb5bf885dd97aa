// Command-line helpers the benchmarks share (lists such as --ranks 1,2,4).
#pragma once
#include <sstream>
#include <string>
#include <vector>

namespace ftrun::bench {

// "a,b,c" -> {"a", "b", "c"}
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

}  // namespace ftrun::bench
