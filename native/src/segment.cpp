#include "segment.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "numerics.hpp"

namespace limbseg {
namespace {

constexpr int64_t kMaxDim = 65536;

// Linear index of voxel (x, y, z) and of the start of slice z, for either layout.
struct Indexer {
  int64_t X, Y, Z;
  bool c_order;
  size_t operator()(int64_t x, int64_t y, int64_t z) const {
    return static_cast<size_t>(c_order ? (x * Y + y) * Z + z : x + X * (y + Y * z));
  }
};

// Slice z as float32 [X, Y] (row-major, H = x, W = y), as Python's volume[:, :, z].astype(float32).
template <typename T>
void gather_slice(const T* data, const Indexer& ix, int64_t z, float* out) {
  for (int64_t x = 0; x < ix.X; ++x)
    for (int64_t y = 0; y < ix.Y; ++y) out[x * ix.Y + y] = static_cast<float>(data[ix(x, y, z)]);
}

void gather_slice(const limbseg_volume& v, const Indexer& ix, int64_t z, float* out) {
  if (v.dtype == LIMBSEG_DTYPE_INT16) gather_slice(static_cast<const int16_t*>(v.data), ix, z, out);
  else gather_slice(static_cast<const float*>(v.data), ix, z, out);
}

}  // namespace

size_t validate_volume(const limbseg_volume& v, bool need_spacing) {
  if (v.data == nullptr) throw Error(LIMBSEG_ERR_INVALID_ARGUMENT, "volume->data is NULL");
  if (v.dtype != LIMBSEG_DTYPE_INT16 && v.dtype != LIMBSEG_DTYPE_FLOAT32)
    throw Error(LIMBSEG_ERR_INVALID_ARGUMENT, "volume->dtype must be LIMBSEG_DTYPE_INT16 or LIMBSEG_DTYPE_FLOAT32");
  if (v.layout != LIMBSEG_LAYOUT_XYZ_C && v.layout != LIMBSEG_LAYOUT_XYZ_F)
    throw Error(LIMBSEG_ERR_INVALID_ARGUMENT, "volume->layout must be LIMBSEG_LAYOUT_XYZ_C or LIMBSEG_LAYOUT_XYZ_F");
  for (int a = 0; a < 3; ++a)
    if (v.dims[a] < 1 || v.dims[a] > kMaxDim)
      throw Error(LIMBSEG_ERR_INPUT, "volume dims must each be 1..65536 voxels; got {" + std::to_string(v.dims[0]) +
                                         ", " + std::to_string(v.dims[1]) + ", " + std::to_string(v.dims[2]) + "}");
  if (need_spacing)
    for (int a = 0; a < 3; ++a)
      if (!(std::isfinite(v.spacing_mm[a]) && v.spacing_mm[a] > 0.0))
        throw Error(LIMBSEG_ERR_INPUT, "voxel spacing must be finite and > 0 mm on every axis");
  return static_cast<size_t>(v.dims[0] * v.dims[1] * v.dims[2]);
}

std::vector<float> default_positions(const Metadata& md, int64_t n) {
  // runtime/position.slice_positions(n, proximal_first=False) for proximal_to_distal models: in a
  // RAS+ volume z = 0 is the most distal slice. Same float64 arithmetic, then rounded to float32.
  std::vector<float> p(static_cast<size_t>(n));
  for (int64_t z = 0; z < n; ++z) {
    int64_t rank = md.proximal_to_distal ? n - z : z + 1;
    p[static_cast<size_t>(z)] = static_cast<float>(0.0 + 1.0 * static_cast<double>(rank) / static_cast<double>(n));
  }
  return p;
}

limbseg_status segment(const Model& model, const limbseg_volume& v, const float* positions, uint8_t* labels,
                       std::string& note) {
  const Metadata& md = model.metadata();
  const Indexer ix{v.dims[0], v.dims[1], v.dims[2], v.layout == LIMBSEG_LAYOUT_XYZ_C};
  const int X = static_cast<int>(ix.X), Y = static_cast<int>(ix.Y);
  const int64_t Z = ix.Z;
  const size_t total = static_cast<size_t>(X) * Y * static_cast<size_t>(Z);
  const size_t plane = static_cast<size_t>(X) * Y;
  const int h = md.input_h, w = md.input_w;
  const size_t in_plane = static_cast<size_t>(h) * w;
  const int classes = static_cast<int>(md.label_names.size());

  Window window;
  {
    window = v.dtype == LIMBSEG_DTYPE_INT16
                 ? intensity_window_int16(static_cast<const int16_t*>(v.data), total, md.lower_percentile, md.upper_percentile)
                 : intensity_window_float32(static_cast<const float*>(v.data), total, md.lower_percentile, md.upper_percentile);
    if (window.constant()) {
      // Nothing to segment: the Python runtime writes all background and flags it (EXIT_EMPTY).
      std::memset(labels, 0, total);
      note = "the volume has no contrast (its lower and upper intensity percentiles are equal, or no voxel is "
             "finite): wrote all-background labels";
      return LIMBSEG_EMPTY_INPUT;
    }
  }

  std::vector<float> default_p;
  if (md.needs_position && positions == nullptr) {
    default_p = default_positions(md, Z);
    positions = default_p.data();
  }

  // The model's input is resized with its recorded resampling; logits always linearly (the Python pipeline's rule).
  const AxisTable in_rows(X, h, md.antialias), in_cols(Y, w, md.antialias), out_rows(h, X), out_cols(w, Y);
  const int batch = model.batch_slices();
  // resize scratch: h_out * w_in floats for either direction
  std::vector<float> slice(plane), tmp(std::max(static_cast<size_t>(h) * Y, static_cast<size_t>(X) * w));
  std::vector<float> input(static_cast<size_t>(batch) * in_plane), pos(static_cast<size_t>(batch));
  std::vector<float> logits, channel(plane), best(plane);
  std::vector<uint8_t> arg(plane);

  for (int64_t z0 = 0; z0 < Z; z0 += batch) {
    const int n = static_cast<int>(std::min<int64_t>(batch, Z - z0));
    for (int j = 0; j < n; ++j) {
      gather_slice(v, ix, z0 + j, slice.data());
      const float range = window.hi - window.lo;  // float32, computed once (preprocess.normalise)
      for (float& s : slice) s = normalise(s, window.lo, range);
      resize_bilinear(slice.data(), X, Y, input.data() + j * in_plane, h, w, in_rows, in_cols, tmp.data());
      if (md.needs_position) pos[j] = positions[z0 + j];
    }
    model.run(input.data(), pos.data(), n, logits);
    for (int j = 0; j < n; ++j) {
      const float* lj = logits.data() + static_cast<size_t>(j) * classes * in_plane;
      for (int c = 0; c < classes; ++c) {
        resize_bilinear(lj + c * in_plane, h, w, channel.data(), X, Y, out_rows, out_cols, tmp.data());
        if (c == 0) {
          std::copy(channel.begin(), channel.end(), best.begin());
          std::fill(arg.begin(), arg.end(), 0);
          continue;
        }
        for (size_t i = 0; i < plane; ++i) {
          // numpy.argmax: the first maximum wins; a NaN counts as the maximum.
          const float val = channel[i], b = best[i];
          if (val > b || (val != val && b == b)) {
            best[i] = val;
            arg[i] = static_cast<uint8_t>(c);
          }
        }
      }
      const int64_t z = z0 + j;
      for (int x = 0; x < X; ++x)
        for (int y = 0; y < Y; ++y) labels[ix(x, y, z)] = arg[static_cast<size_t>(x) * Y + y];
    }
  }
  return LIMBSEG_OK;
}

void label_volumes(const uint8_t* labels, size_t n, const double spacing_mm[3], int classes, double* volumes_ml) {
  std::vector<uint64_t> counts(256, 0);
  for (size_t i = 0; i < n; ++i) ++counts[labels[i]];
  for (int c = classes; c < 256; ++c)
    if (counts[c] != 0)
      throw Error(LIMBSEG_ERR_INPUT, "label " + std::to_string(c) + " found, but the model has only " +
                                         std::to_string(classes) + " classes");
  const double voxel_ml = spacing_mm[0] * spacing_mm[1] * spacing_mm[2] / 1000.0;
  for (int c = 0; c < classes; ++c) volumes_ml[c] = static_cast<double>(counts[c]) * voxel_ml;
}

}  // namespace limbseg
