// The numerics of runtime/inference/preprocess.py, re-implemented bit for bit (see that module's docstring):
// nearest-rank percentile window, float32 normalisation, separable bilinear resize with half-pixel
// centres, argmax with ties to the lowest index. This file must be compiled with
// -ffp-contract=off (no fused multiply-add) and without -ffast-math; CMake enforces both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace limbseg {

struct Window {
  float lo = 0.0f;
  float hi = 0.0f;
  // preprocess.is_constant: no contrast to segment.
  bool constant() const { return !(static_cast<double>(hi) > static_cast<double>(lo)); }
};

// intensity_window over the finite voxels of a whole volume; {0, 0} when none is finite.
// `n` voxels, order irrelevant. Percentiles q in [0, 100].
Window intensity_window_int16(const int16_t* values, size_t n, double q_lo, double q_hi);
Window intensity_window_float32(const float* values, size_t n, double q_lo, double q_hi);

// preprocess.normalise for one value (window not constant): clip((x - lo) / (hi - lo), 0, 1) in
// float32, NaN -> 0, +Inf -> 1, -Inf -> 0.
inline float normalise(float x, float lo, float range) {
  float y = (x - lo) / range;
  if (y != y) return 0.0f;  // NaN
  if (y > 1.0f) return 1.0f;
  if (y < 0.0f) return 0.0f;
  return y;
}

// Interpolation table of one axis, n_in -> n_out samples (preprocess.linear_axis). With
// `antialias` and n_out < n_in it holds the triangle-filter taps of preprocess.antialias_axis
// instead: `taps` per output sample, `idx`/`tw` [n_out * taps] (zero weights repeat a valid index).
struct AxisTable {
  std::vector<int32_t> i0, i1;
  std::vector<float> w;    // weight of i1
  std::vector<float> omw;  // float32(1 - w), the weight of i0
  int taps = 0;            // 0: linear interpolation (i0, i1, w, omw)
  std::vector<int32_t> idx;
  std::vector<float> tw;
  AxisTable(int n_in, int n_out, bool antialias = false);
};

// preprocess.resize_linear (resize_bilinear when neither table has taps) of one 2-D float32 image [h_in, w_in] (row-major) into
// out [h_out, w_out]: first along H, then along W; an axis of unchanged size is not touched.
// `tmp` is scratch of at least h_out * w_in floats. rows/cols: tables for (h_in->h_out), (w_in->w_out).
void resize_bilinear(const float* in, int h_in, int w_in, float* out, int h_out, int w_out,
                     const AxisTable& rows, const AxisTable& cols, float* tmp);

}  // namespace limbseg
