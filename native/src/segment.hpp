// The segmentation procedure of the Python runtime, slice by slice (see runtime/inference/preprocess.py):
// window over the volume -> per axial slice normalise + resize to the model input -> logits ->
// resize each class map back to the slice size -> argmax (ties: lowest class) -> uint8 labels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "limbseg.h"
#include "model.hpp"

namespace limbseg {

// Checks dims/dtype/layout/spacing of `v`; throws Error(LIMBSEG_ERR_INPUT / _INVALID_ARGUMENT).
// Returns X*Y*Z. `need_spacing`: spacing must be finite and > 0.
size_t validate_volume(const limbseg_volume& v, bool need_spacing);

// Default positions for n slices of a RAS+ volume (see limbseg_default_positions in limbseg.h).
std::vector<float> default_positions(const Metadata& md, int64_t n);

// Writes X*Y*Z labels in the volume's layout; returns LIMBSEG_OK, or LIMBSEG_EMPTY_INPUT with the
// reason in `note`. Throws Error on failure.
limbseg_status segment(const Model& model, const limbseg_volume& v, const float* positions, uint8_t* labels,
                       std::string& note);

// volumes_ml[c] for c < classes; throws Error(LIMBSEG_ERR_INPUT) on a label >= classes.
void label_volumes(const uint8_t* labels, size_t n, const double spacing_mm[3], int classes, double* volumes_ml);

}  // namespace limbseg
