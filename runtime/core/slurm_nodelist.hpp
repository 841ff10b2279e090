#pragma once
// Slurm's compressed host lists (SLURM_JOB_NODELIST, SLURM_STEP_NODELIST, `scontrol show
// hostnames`): comma-separated names, each with any number of bracket groups of comma-separated
// numbers and ranges, expanded left to right (the first group varies slowest):
//   "n[1-3,7]"          -> n1 n2 n3 n7
//   "a[01-02]-ib"       -> a01-ib a02-ib      (a range pads to its lower bound's digit count)
//   "a[1-2],b3,c[5-6]"  -> a1 a2 b3 c5 c6
//   "rack[1-2]-n[1-2]"  -> rack1-n1 rack1-n2 rack2-n1 rack2-n2
// Slurm 22.05 itself accepts text after a bracket group only when another group follows
// ("a[01-02]-ib" is "Invalid hostlist" to its scontrol); this reader accepts it, as newer tools
// write it.
#include <string>
#include <string_view>
#include <vector>

namespace zf {

// zf::error quoting the list and naming the fault: empty list or name, unbalanced bracket,
// reversed or non-numeric range, a list that would expand past 1<<20 names.
std::vector<std::string> expand_slurm_nodelist(std::string_view list);

}  // namespace zf
