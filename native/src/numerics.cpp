#include "numerics.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__FAST_MATH__)
#error "liblimbseg must not be compiled with -ffast-math: labels would differ from the Python runtime"
#endif

namespace limbseg {
namespace {

// preprocess._nearest_rank: floor(q / 100 * (n - 1) + 0.5), evaluated in float64 like Python.
size_t nearest_rank(double q, size_t n) {
  double t = q / 100.0 * static_cast<double>(n - 1) + 0.5;
  double k = std::floor(t);
  if (k < 0.0) return 0;
  if (k > static_cast<double>(n - 1)) return n - 1;
  return static_cast<size_t>(k);
}

}  // namespace

Window intensity_window_int16(const int16_t* values, size_t n, double q_lo, double q_hi) {
  // A histogram gives the exact k-th smallest value without copying the volume.
  std::vector<uint64_t> hist(65536, 0);
  for (size_t i = 0; i < n; ++i) ++hist[static_cast<uint16_t>(values[i] + 32768)];
  Window w;
  if (n == 0) return w;
  size_t k_lo = nearest_rank(q_lo, n), k_hi = nearest_rank(q_hi, n);
  auto kth = [&](size_t k) {
    uint64_t seen = 0;
    for (int b = 0; b < 65536; ++b) {
      seen += hist[b];
      if (seen > k) return static_cast<float>(b - 32768);
    }
    return 0.0f;  // unreachable: k < n
  };
  w.lo = kth(k_lo);
  w.hi = kth(k_hi);
  return w;
}

Window intensity_window_float32(const float* values, size_t n, double q_lo, double q_hi) {
  std::vector<float> finite;
  finite.reserve(n);
  for (size_t i = 0; i < n; ++i)
    if (std::isfinite(values[i])) finite.push_back(values[i]);
  Window w;
  if (finite.empty()) return w;
  size_t m = finite.size();
  size_t k_lo = nearest_rank(q_lo, m), k_hi = nearest_rank(q_hi, m);
  std::nth_element(finite.begin(), finite.begin() + static_cast<ptrdiff_t>(k_lo), finite.end());
  w.lo = finite[k_lo];
  if (k_hi > k_lo) std::nth_element(finite.begin() + static_cast<ptrdiff_t>(k_lo) + 1,
                                    finite.begin() + static_cast<ptrdiff_t>(k_hi), finite.end());
  w.hi = finite[k_hi];
  return w;
}

AxisTable::AxisTable(int n_in, int n_out) : i0(n_out), i1(n_out), w(n_out), omw(n_out) {
  const double scale = static_cast<double>(n_in) / static_cast<double>(n_out);
  for (int d = 0; d < n_out; ++d) {
    double src = (static_cast<double>(d) + 0.5) * scale - 0.5;
    src = std::min(std::max(src, 0.0), static_cast<double>(n_in - 1));
    double f = std::floor(src);
    int a = static_cast<int>(f);
    i0[d] = a;
    i1[d] = std::min(a + 1, n_in - 1);
    w[d] = static_cast<float>(src - f);
    omw[d] = 1.0f - w[d];
  }
}

void resize_bilinear(const float* in, int h_in, int w_in, float* out, int h_out, int w_out,
                     const AxisTable& rows, const AxisTable& cols, float* tmp) {
  const float* src = in;
  if (h_in != h_out) {
    float* dst = (w_in == w_out) ? out : tmp;
    for (int r = 0; r < h_out; ++r) {
      const float* a = in + static_cast<size_t>(rows.i0[r]) * w_in;
      const float* b = in + static_cast<size_t>(rows.i1[r]) * w_in;
      const float wa = rows.omw[r], wb = rows.w[r];
      float* o = dst + static_cast<size_t>(r) * w_in;
      for (int c = 0; c < w_in; ++c) o[c] = a[c] * wa + b[c] * wb;  // two products, one sum
    }
    src = dst;
  }
  if (w_in != w_out) {
    for (int r = 0; r < h_out; ++r) {
      const float* row = src + static_cast<size_t>(r) * w_in;
      float* o = out + static_cast<size_t>(r) * w_out;
      for (int c = 0; c < w_out; ++c) o[c] = row[cols.i0[c]] * cols.omw[c] + row[cols.i1[c]] * cols.w[c];
    }
  } else if (h_in == h_out) {
    std::memcpy(out, in, sizeof(float) * static_cast<size_t>(h_in) * w_in);
  }
}

}  // namespace limbseg
