// Quant family, CPU reference: the formats' codecs, packing, round-to-nearest quantization and
// the quantized GEMMs as "dequantize, then float GEMM" (qgemm) and exact int32 sums (w8a8). This
// file is the spec the fast kernels are checked against; see quant.hpp for the formats.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/quant.hpp"

namespace zf::kernels {

namespace {

const qformat_info k_info[] = {
    {"int8", 8, false, 0, 0, 0, 127.0f},    {"int4", 4, false, 0, 0, 0, 7.0f},
    {"fp8_e4m3", 8, true, 4, 3, 7, 448.0f}, {"fp8_e5m2", 8, true, 5, 2, 15, 57344.0f},
    {"fp6_e3m2", 6, true, 3, 2, 3, 28.0f},  {"fp4_e2m1", 4, true, 2, 1, 1, 6.0f},
};

unsigned sign_bit(const qformat_info& i) {
  return 1u << (i.bits - 1);
}

// The largest finite code's magnitude bits: every magnitude bit set, except e4m3 (S.1111.110,
// below its NaN) and e5m2 (S.11110.11, below its infinities).
unsigned max_code(qformat f) {
  if (f == qformat::fp8_e4m3) return 0x7e;
  if (f == qformat::fp8_e5m2) return 0x7b;
  return sign_bit(qinfo(f)) - 1;
}

// Integer grid of a format: [lo, hi].
void int_grid(qformat f, bool asym, int& lo, int& hi) {
  if (f == qformat::int8) {
    lo = -127;
    hi = 127;
  } else if (asym) {
    lo = 0;
    hi = 15;
  } else {
    lo = -8;
    hi = 7;
  }
}

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

}  // namespace

const qformat_info& qinfo(qformat f) {
  return k_info[static_cast<int>(f)];
}

bool parse_qformat(std::string_view name, qformat& out) {
  for (int i = 0; i < 6; ++i)
    if (name == k_info[i].name) {
      out = static_cast<qformat>(i);
      return true;
    }
  return false;
}

float fp_decode(qformat f, unsigned code) {
  const qformat_info& i = qinfo(f);
  const bool neg = code & sign_bit(i);
  const unsigned mag = code & (sign_bit(i) - 1);
  const unsigned e = mag >> i.mbits, m = mag & ((1u << i.mbits) - 1);
  const unsigned emax = (1u << i.ebits) - 1;
  double v;
  if (f == qformat::fp8_e5m2 && e == emax) {
    v = m == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (f == qformat::fp8_e4m3 && e == emax && m == (1u << i.mbits) - 1) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(double(m), 1 - i.bias - i.mbits);  // subnormal
  } else {
    v = std::ldexp(double((1u << i.mbits) + m), int(e) - i.bias - i.mbits);
  }
  return static_cast<float>(neg ? -v : v);
}

unsigned fp_encode(qformat f, float x, bool saturate) {
  const qformat_info& i = qinfo(f);
  const unsigned sbit = std::signbit(x) ? sign_bit(i) : 0u;
  const bool e4m3 = f == qformat::fp8_e4m3, e5m2 = f == qformat::fp8_e5m2;
  if (std::isnan(x)) return e4m3 ? sbit | 0x7fu : e5m2 ? sbit | 0x7eu : 0u;
  const unsigned overflow = saturate || !(e4m3 || e5m2) ? sbit | max_code(f)
                            : e4m3                      ? sbit | 0x7fu  // NaN
                                                        : sbit | 0x7cu;                      // e5m2 inf
  const double a = std::abs(double(x));
  if (std::isinf(a)) return overflow;
  if (a == 0) return sbit;
  int ex = 0;
  std::frexp(a, &ex);  // a in [2^(ex-1), 2^ex)
  const int emin = 1 - i.bias;
  const int qexp = std::max(ex - 1, emin) - i.mbits;      // the grid's spacing there: 2^qexp
  const double r = std::nearbyint(std::ldexp(a, -qexp));  // ties to even (default rounding)
  const double v = std::ldexp(r, qexp);
  if (v > double(i.max)) return overflow;
  if (v < std::ldexp(1.0, emin)) return sbit | static_cast<unsigned>(r);  // subnormal or zero
  const int e = std::ilogb(v);
  const auto mant = static_cast<unsigned>(std::ldexp(v, i.mbits - e)) - (1u << i.mbits);
  return sbit | static_cast<unsigned>(e + i.bias) << i.mbits | mant;
}

float fp_rebias(qformat f) {
  return std::ldexp(1.0f, 127 - qinfo(f).bias);
}

unsigned quantize_value(qformat f, float x, float scale, int zero, bool asym) {
  const qformat_info& i = qinfo(f);
  if (i.is_float) return fp_encode(f, x / scale, true);
  int lo = 0, hi = 0;
  int_grid(f, asym, lo, hi);
  const float q = std::nearbyint(x / scale) + float(asym ? zero : 0);
  const int c = static_cast<int>(std::clamp(q, float(lo), float(hi)));
  return static_cast<unsigned>(c) & ((1u << i.bits) - 1);
}

float dequantize_value(qformat f, unsigned code, float scale, int zero, bool asym) {
  switch (f) {
    case qformat::int8:
      return float(static_cast<std::int8_t>(code)) * scale;
    case qformat::int4:
      return asym ? float(int(code & 0xf) - zero) * scale
                  : float(static_cast<int>(code << 28) >> 28) * scale;  // sign-extend the nibble
    default:
      return fp_decode(f, code) * scale;
  }
}

void group_scale(qformat f, const float* w, int count, bool asym, bool pow2, float& scale,
                 int& zero) {
  zero = 0;
  if (asym) {  // GPTQ's: the range always holds 0, so 0 is exact
    float lo = 0, hi = 0;
    for (int j = 0; j < count; ++j) {
      lo = std::min(lo, w[j]);
      hi = std::max(hi, w[j]);
    }
    scale = (hi - lo) / 15.0f;
    if (scale > 0) zero = static_cast<int>(std::clamp(std::nearbyint(-lo / scale), 0.0f, 15.0f));
  } else {
    float amax = 0;
    for (int j = 0; j < count; ++j) amax = std::max(amax, std::abs(w[j]));
    scale = amax / qinfo(f).max;
  }
  if (!(scale > 0) || !std::isfinite(scale)) {
    scale = 1.0f;
    zero = 0;
    return;
  }
  if (pow2) scale = std::ldexp(1.0f, static_cast<int>(std::ceil(std::log2(scale))));
}

std::size_t packed_row_bytes(qformat f, int k) {
  return static_cast<std::size_t>(k) / 32 *
         (qinfo(f).bits == 8   ? 32
          : qinfo(f).bits == 4 ? 16
                               : 24);
}

void pack_row(qformat f, const std::uint8_t* codes, int k, std::uint8_t* packed) {
  const int bits = qinfo(f).bits;
  if (bits == 8) {
    std::memcpy(packed, codes, std::size_t(k));
    return;
  }
  for (int b = 0; b < k / 32; ++b) {
    const std::uint8_t* c = codes + 32 * b;
    std::uint8_t* out = packed + (bits == 4 ? 16 : 24) * b;
    for (int j = 0; j < 16; ++j) out[j] = std::uint8_t((c[j] & 0xf) | (c[j + 16] & 0xf) << 4);
    if (bits == 6) {
      std::uint64_t hi = 0;
      for (int j = 0; j < 32; ++j) hi |= std::uint64_t((c[j] >> 4) & 3) << (2 * j);
      for (int j = 0; j < 8; ++j) out[16 + j] = std::uint8_t(hi >> (8 * j));  // little-endian
    }
  }
}

void unpack_row(qformat f, const std::uint8_t* packed, int k, std::uint8_t* codes) {
  const int bits = qinfo(f).bits;
  if (bits == 8) {
    std::memcpy(codes, packed, std::size_t(k));
    return;
  }
  for (int b = 0; b < k / 32; ++b) {
    std::uint8_t* c = codes + 32 * b;
    const std::uint8_t* in = packed + (bits == 4 ? 16 : 24) * b;
    for (int j = 0; j < 16; ++j) {
      c[j] = in[j] & 0xf;
      c[j + 16] = in[j] >> 4;
    }
    if (bits == 6) {
      std::uint64_t hi = 0;
      for (int j = 0; j < 8; ++j) hi |= std::uint64_t(in[16 + j]) << (8 * j);
      for (int j = 0; j < 32; ++j) c[j] = std::uint8_t(c[j] | ((hi >> (2 * j)) & 3) << 4);
    }
  }
}

void check_quant_shape(qformat f, int k, int n, int group, bool asym) {
  require(k > 0 && n > 0, "quantize: empty matrix");
  require(k % 32 == 0, "quantize: the input dimension " + std::to_string(k) +
                           " is not a multiple of 32 (the packed block)");
  require(group > 0 && group % 32 == 0 && k % group == 0,
          "quantize: group size " + std::to_string(group) +
              " must be a multiple of 32 that divides the input dimension " + std::to_string(k));
  require(!asym || f == qformat::int4, "quantize: asymmetric (zero points) is int4 only");
}

void quantize_rtn(qformat f, const float* w, std::size_t stride_k, std::size_t stride_n, int k,
                  int n, int group, bool asym, bool pow2, std::uint8_t* data, float* scales,
                  std::uint8_t* zeros) {
  check_quant_shape(f, k, n, group, asym);
  require(!asym || zeros, "quantize: asymmetric int4 needs a zeros buffer");
  std::vector<float> row(static_cast<std::size_t>(k));
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(k));
  const int G = k / group;
  const std::size_t rb = packed_row_bytes(f, k);
  for (int o = 0; o < n; ++o) {
    for (int j = 0; j < k; ++j) row[std::size_t(j)] = w[std::size_t(j) * stride_k + o * stride_n];
    for (int g = 0; g < G; ++g) {
      const float* v = row.data() + std::size_t(g) * group;
      float s = 1;
      int z = 0;
      group_scale(f, v, group, asym, pow2, s, z);
      scales[std::size_t(o) * G + g] = s;
      if (asym) zeros[std::size_t(o) * G + g] = static_cast<std::uint8_t>(z);
      for (int j = 0; j < group; ++j)
        codes[std::size_t(g) * group + j] =
            static_cast<std::uint8_t>(quantize_value(f, v[j], s, z, asym));
    }
    pack_row(f, codes.data(), k, data + std::size_t(o) * rb);
  }
}

void dequantize(const qmatrix& q, float* w) {
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(q.k));
  const int G = q.groups();
  const std::size_t rb = packed_row_bytes(q.fmt, q.k);
  for (int o = 0; o < q.n; ++o) {
    unpack_row(q.fmt, q.data + std::size_t(o) * rb, q.k, codes.data());
    for (int j = 0; j < q.k; ++j) {
      const std::size_t g = std::size_t(o) * G + std::size_t(j / q.group);
      w[std::size_t(j) * q.n + o] = dequantize_value(q.fmt, codes[std::size_t(j)], q.scales[g],
                                                     q.zeros ? q.zeros[g] : 0, q.zeros != nullptr);
    }
  }
}

void quantize_activations(const float* x, int ldx, int m, int k, bool per_tensor,
                          std::int8_t* codes, float* scales) {
  const std::size_t lx = ldx ? std::size_t(ldx) : std::size_t(k);
  auto absmax = [&](int i0, int i1) {
    float a = 0;
    for (int i = i0; i < i1; ++i)
      for (int j = 0; j < k; ++j) a = std::max(a, std::abs(x[i * lx + j]));
    return a > 0 ? a / 127.0f : 1.0f;
  };
  const float all = per_tensor ? absmax(0, m) : 0;
  for (int i = 0; i < m; ++i) {
    const float s = per_tensor ? all : absmax(i, i + 1);
    scales[i] = s;
    for (int j = 0; j < k; ++j)
      codes[std::size_t(i) * k + j] =
          static_cast<std::int8_t>(std::clamp(std::nearbyint(x[i * lx + j] / s), -127.0f, 127.0f));
  }
}

namespace {
// y = acc (+ bias) (+ y): the epilogue every quantized GEMM shares.
inline void store(const qgemm_io& io, std::size_t at, int o, float acc) {
  const float v = acc + (io.bias ? io.bias[o] : 0.0f);
  io.y[at] = io.accumulate ? io.y[at] + v : v;
}
}  // namespace

namespace cpu {

void qgemm_reference(const qmatrix& q, const qgemm_io& io) {
  std::vector<float> w(std::size_t(q.k) * q.n), y(std::size_t(io.m) * q.n);
  dequantize(q, w.data());
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, io.m, q.n, q.k, 1.0f, io.x,
              io.ldx ? io.ldx : q.k, w.data(), q.n, 0.0f, y.data(), q.n);
  const std::size_t ly = io.ldy ? io.ldy : q.n;
  for (int i = 0; i < io.m; ++i)
    for (int o = 0; o < q.n; ++o) store(io, i * ly + o, o, y[std::size_t(i) * q.n + o]);
}

void qgemm_w8a8(const qmatrix& q, const std::int8_t* xq, const float* xs, const qgemm_io& io) {
  if (q.fmt != qformat::int8) throw std::invalid_argument("qgemm_w8a8: the weights are not int8");
  const int G = q.groups();
  const std::size_t ly = io.ldy ? io.ldy : q.n;
  for (int i = 0; i < io.m; ++i) {
    const std::int8_t* xi = xq + std::size_t(i) * q.k;
    for (int o = 0; o < q.n; ++o) {
      const auto* wo = reinterpret_cast<const std::int8_t*>(q.data) + std::size_t(o) * q.k;
      float acc = 0;
      for (int g = 0; g < G; ++g) {
        std::int32_t dot = 0;
        for (int j = g * q.group; j < (g + 1) * q.group; ++j) dot += int(xi[j]) * int(wo[j]);
        acc += q.scales[std::size_t(o) * G + g] * float(dot);
      }
      store(io, i * ly + o, o, xs[i] * acc);
    }
  }
}

}  // namespace cpu

}  // namespace zf::kernels
