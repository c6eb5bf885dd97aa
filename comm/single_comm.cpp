// The world-of-one Comm (see comm.h): lets the trainer and the ZeRO engine run one code path.
#include <stdexcept>

#include "comm/comm.h"

namespace ftrun::comm {
namespace {

class SingleComm : public Comm {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(at::Tensor&) override { count("all_reduce", 0); }
  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    if (input.numel() != output.numel())
      throw std::invalid_argument("reduce_scatter_sum: input and output sizes differ in a world of one");
    if (!input.is_same(output)) output.copy_(input.view_as(output));
    count("reduce_scatter", 0);
  }
  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    if (input.numel() != output.numel())
      throw std::invalid_argument("all_gather: input and output sizes differ in a world of one");
    if (!input.is_same(output)) output.copy_(input.view_as(output));
    count("all_gather", 0);
  }
  void broadcast(at::Tensor&, int root) override {
    if (root != 0) throw std::invalid_argument("broadcast: root must be 0 in a world of one");
    count("broadcast", 0);
  }
  void barrier() override {}
};

}  // namespace

std::shared_ptr<Comm> make_single_comm() { return std::make_shared<SingleComm>(); }

}  // namespace ftrun::comm
