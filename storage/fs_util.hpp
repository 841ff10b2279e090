#pragma once
// Durable file-system steps shared by every writer: whole-file writes that are atomic (temp
// file, fsync, rename, fsync of the folder) and checksums.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace zf::storage {

void write_file_atomic(const std::filesystem::path& p, const void* data, std::size_t n);
void write_file_atomic(const std::filesystem::path& p, const std::string& text);
void fsync_path(const std::filesystem::path& p);             // a file or a folder
std::string read_text_file(const std::filesystem::path& p);  // zf::error naming the file
uint32_t crc32_of(const void* data, std::size_t n, uint32_t seed = 0);
uint32_t crc32_file(const std::filesystem::path& p, std::size_t* size = nullptr);

}  // namespace zf::storage
