// make_nccl in a build without CUDA (-DZF_CUDA=OFF): the NCCL backend (comm_nccl.cpp) is not
// compiled, and asking for it says how to get it. runtime/CMakeLists.txt compiles exactly one of
// the two files.
#include "runtime/core/error.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/dist/nccl_plan.hpp"

namespace zf::comm {

std::unique_ptr<communicator> make_nccl(int rank, int world, std::shared_ptr<kv_store>,
                                        const std::string&, const nccl_options&) {
  fail(
      "comm nccl: rank {} of {}: zeroflow was built without CUDA, so the nccl backend is not "
      "available (configure with -DZF_CUDA=ON and NCCL installed; or use comm gloo)",
      rank, world);
}

std::vector<char> nccl_plan::new_unique_id() {
  fail(
      "comm nccl: zeroflow was built without CUDA, so there is no NCCL (configure with "
      "-DZF_CUDA=ON)");
}

}  // namespace zf::comm
