// Family entry: BlueLM (vivo; config.json says "BlueLM"). Template only: ftrun has its chat
// template but no model class, so its checkpoints are not loaded yet.
#include "models/families/family_parts.h"

namespace ftrun::models {

const Family& bluelm_family() {
  static const Family f = [] {
    Family f;
    f.name = "bluelm";
    f.model_type = "bluelm";  // default_template() compares case-insensitively
    f.chat_template = "bluelm";
    return f;
  }();
  return f;
}

}  // namespace ftrun::models
