#include "runtime/rl/advantage.hpp"
