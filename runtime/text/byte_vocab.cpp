#include "runtime/text/byte_vocab.hpp"
