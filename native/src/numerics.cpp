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

AxisTable::AxisTable(int n_in, int n_out, bool antialias) : i0(n_out), i1(n_out), w(n_out), omw(n_out) {
  const double scale = static_cast<double>(n_in) / static_cast<double>(n_out);
  if (antialias && n_out < n_in) {
    // preprocess.antialias_axis: weights in float64, normalised, then cast to float32.
    std::vector<int64_t> first(n_out), last(n_out);
    std::vector<double> centre(n_out);
    int64_t k = 0;
    for (int d = 0; d < n_out; ++d) {
      centre[d] = (static_cast<double>(d) + 0.5) * scale;
      first[d] = std::max<int64_t>(static_cast<int64_t>(std::floor(centre[d] - scale)), 0);
      last[d] = std::min<int64_t>(static_cast<int64_t>(std::ceil(centre[d] + scale)), n_in - 1);
      k = std::max<int64_t>(k, last[d] - first[d] + 1);
    }
    taps = static_cast<int>(k);
    idx.resize(static_cast<size_t>(n_out) * taps);
    tw.resize(static_cast<size_t>(n_out) * taps);
    std::vector<double> wd(static_cast<size_t>(taps));
    for (int d = 0; d < n_out; ++d) {
      double sum = 0.0;
      for (int t = 0; t < taps; ++t) {
        const int64_t i = first[d] + t;
        const bool valid = i <= last[d];
        const int64_t j = valid ? i : last[d];
        idx[static_cast<size_t>(d) * taps + t] = static_cast<int32_t>(j);
        const double x = 1.0 - std::fabs(static_cast<double>(j) + 0.5 - centre[d]) / scale;
        wd[t] = valid ? std::max(0.0, x) : 0.0;
        sum += wd[t];
      }
      for (int t = 0; t < taps; ++t) tw[static_cast<size_t>(d) * taps + t] = static_cast<float>(wd[t] / sum);
    }
  }
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
  if (h_in != h_out && rows.taps > 0) {
    // Antialiased H: out[r] = sum_t tw[r, t] * in[idx[r, t]], accumulated in tap order (numpy's order).
    float* dst = (w_in == w_out) ? out : tmp;
    for (int r = 0; r < h_out; ++r) {
      const size_t base = static_cast<size_t>(r) * rows.taps;
      float* o = dst + static_cast<size_t>(r) * w_in;
      const float* a = in + static_cast<size_t>(rows.idx[base]) * w_in;
      const float wa = rows.tw[base];
      for (int c = 0; c < w_in; ++c) o[c] = a[c] * wa;
      for (int t = 1; t < rows.taps; ++t) {
        const float* b = in + static_cast<size_t>(rows.idx[base + t]) * w_in;
        const float wb = rows.tw[base + t];
        for (int c = 0; c < w_in; ++c) o[c] = o[c] + b[c] * wb;
      }
    }
    src = dst;
  } else if (h_in != h_out) {
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
  if (w_in != w_out && cols.taps > 0) {
    for (int r = 0; r < h_out; ++r) {
      const float* row = src + static_cast<size_t>(r) * w_in;
      float* o = out + static_cast<size_t>(r) * w_out;
      for (int c = 0; c < w_out; ++c) {
        const size_t base = static_cast<size_t>(c) * cols.taps;
        float acc = row[cols.idx[base]] * cols.tw[base];
        for (int t = 1; t < cols.taps; ++t) acc = acc + row[cols.idx[base + t]] * cols.tw[base + t];
        o[c] = acc;
      }
    }
  } else if (w_in != w_out) {
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
