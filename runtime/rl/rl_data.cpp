#include "runtime/rl/rl_data.hpp"
