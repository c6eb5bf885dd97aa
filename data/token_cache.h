// Tokenized-data cache: a data file rendered through a template is stored once on disk, so a
// rerun (and every other rank of the same run) skips reading, validating and tokenizing it.
//
// Key = SHA-256 of (cache format version, the data file's bytes, the tokenizer's
// fingerprint, the template name, combine, max_input_length, max_output_length). Anything
// that changes the samples changes the key, so a stale file is never read; old files are
// left behind (delete the directory to reclaim space).
// File = <cache_dir>/<data file stem>.<template>.<key hex>.tok, written to a temporary name in
// the same directory and renamed into place, so readers see a complete file or none. It holds
// a magic, the format version, the key, the sample count, the payload length, the payload
// (int32 ids and labels) and a SHA-256 of everything before it. A file that fails any check
// (truncated, corrupted, written by another version) is reported through `warn`, never
// trusted, and rebuilt.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer.h"

namespace ftrun::data {

// Bump when any reader or template changes the samples it produces for the same inputs.
constexpr uint32_t kTokenCacheVersion = 1;

// $FTRUN_CACHE_DIR when set and not empty, else <output_dir>/.ftrun_cache.
std::string default_cache_dir(const std::string& output_dir);

// Hex SHA-256 cache key (see above). Reads the whole data file; errors name it.
std::string token_cache_key(const std::string& data_file, const Tokenizer& tok,
                            const std::string& template_name, const EncodeOptions& opts);

struct TokenCacheInfo {
  std::string path;      // the cache file used ("" when caching is off)
  bool hit = false;      // the samples came from the cache; the tokenizer was not used
  bool rebuilt = false;  // a cache file existed but failed its checks and was replaced
};

using WarnFn = std::function<void(const std::string&)>;

// The samples of `data_file`: read_dataset + encode_example(opts) for every record, or the
// cached result of exactly that. cache_dir "" turns caching off. A cache file that cannot be
// written (read-only directory, full disk) is a warning, not an error. `warn` defaults to
// printing "warning: ..." on stderr.
std::vector<Sample> load_or_build(const std::string& data_file, const ChatTemplate& tmpl,
                                  const Tokenizer& tok, const EncodeOptions& opts,
                                  const std::string& cache_dir, TokenCacheInfo* info = nullptr,
                                  const WarnFn& warn = nullptr);

// The file format on its own (tests, tools). read_token_cache returns false and says why
// when the file is missing, malformed, or holds another key.
void write_token_cache(const std::string& path, const std::string& key,
                       const std::vector<Sample>& samples);
bool read_token_cache(const std::string& path, const std::string& key,
                      std::vector<Sample>* samples, std::string* why);

}  // namespace ftrun::data
