#include "runtime/rl/objective.hpp"
