#pragma once
// The parts of an HTTP request a read-only site (the console) takes apart by hand, without
// sockets: a path segment's %XX escapes, one query parameter, one cookie, and a secret compared
// in constant time (API keys and console tokens alike).
#include <optional>
#include <string>
#include <string_view>

namespace zf::openai {

// %XX decoded; nullopt for a bad or cut escape. '+' stays '+' (a path, not a form).
std::optional<std::string> percent_decode(std::string_view s);
// The value of `key` in a query string ("a=1&token=x"), undecoded; "" for a bare key; nullopt
// when absent.
std::optional<std::string_view> query_value(std::string_view query, std::string_view key);
// The value of cookie `name` in a Cookie header ("a=1; zf_console_token=x"); nullopt if absent.
std::optional<std::string_view> cookie_value(std::string_view header, std::string_view name);
// a == b, in a time that depends on their lengths only, not on where they differ.
bool secret_equal(std::string_view a, std::string_view b);

}  // namespace zf::openai
