#pragma once
// A device key's value (train.device, engine.device) as the kernels' device. Kept apart from the
// config schema (runtime/core/config), which builds without the kernels (the fuzz targets).
#include <string>

#include "kernels/dispatch.hpp"

namespace zf {

// cpu, or cuda when this process can use one (CUDA simulated included); zf::error naming the key
// otherwise ("train.device = cuda: device cuda requested, but this process sees no CUDA device").
kernels::device device_named(const std::string& value, const std::string& key);

}  // namespace zf
