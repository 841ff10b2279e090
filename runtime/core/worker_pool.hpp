#pragma once
// The runtime's helper threads for loops the kernels do not parallelise themselves (attention of
// many decode rows, each over its own sequence's paged KV) and, lent to the kernels, their
// GEMVs: the kernels' claim-based pool (kernels/task_pool.hpp), which the layers above use as is.
#include "kernels/task_pool.hpp"

namespace zf {
using worker_pool = kernels::task_pool;
}  // namespace zf
