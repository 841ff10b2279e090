#pragma once
// The zeroflow command line: train, generate, tokenize, config.
namespace zf {
int run_cli(int argc, char** argv);
}
