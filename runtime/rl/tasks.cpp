#include "runtime/rl/tasks.hpp"
