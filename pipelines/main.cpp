#include "pipelines/cli.hpp"

int main(int argc, char** argv) {
  return zf::run_cli(argc, argv);
}
