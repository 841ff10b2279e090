#pragma once
// A long series reduced to what a chart of `buckets` pixel columns can show: the points split
// into `buckets` runs of (nearly) equal length, and of each run its lowest and its highest point,
// in their order, so a spike (a loss blow-up, a stall) stays visible at any length; never a
// random subset (TensorBoard's reservoir sampling drops spikes). The series' first and last
// points are always kept (the chart's ends and the value shown as "last").
#include <cstddef>
#include <span>
#include <vector>

namespace zf::monitor {

struct point {
  double x = 0, y = 0;
};

// pts in x order -> at most 2 * buckets + 2 of them, in x order; the whole series when it has
// no more than that. buckets < 1 is taken as 1.
std::vector<point> downsample_minmax(std::span<const point> pts, int buckets);

}  // namespace zf::monitor
