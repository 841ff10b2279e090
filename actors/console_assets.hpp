#pragma once
// The console's page (console/ at the repository root, and uPlot from npm in console/vendor/),
// built into the binary (cmake/embed_files.cmake), so the page works offline and needs no files
// beside the executable.
#include <span>
#include <string_view>

namespace zf::actors {

struct console_asset {
  std::string_view name;  // "index.html", "console.js", "uPlot.iife.min.js", ...
  std::string_view content_type;
  std::string_view bytes;
};

std::span<const console_asset> console_assets();

}  // namespace zf::actors
