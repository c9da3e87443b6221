// An opened model: metadata read from the ONNX file plus an ONNX Runtime session. Immutable after
// construction, so one Model may serve many threads (OrtApi::Run is thread-safe).
#pragma once

#include <onnxruntime_c_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "limbseg.h"

namespace limbseg {

// The one exception type used inside the library; the C boundary turns it into status + message.
struct Error : std::runtime_error {
  limbseg_status status;
  Error(limbseg_status s, const std::string& message) : std::runtime_error(message), status(s) {}
};

// The fields of runtime/model/metadata.py's ModelMetadata that running a model needs.
struct Metadata {
  std::string architecture;
  std::string precision;
  std::vector<std::string> label_names, label_codes;  // index = class
  int input_h = 0, input_w = 0;
  double lower_percentile = 0.5, upper_percentile = 99.5;
  std::vector<std::string> inputs, outputs;
  bool needs_position = false;
  bool proximal_to_distal = true;  // position direction
  bool antialias = false;          // "resampling": "antialias" (absent or "exact": false)
};

// Parse the JSON stored under "limbseg_rt.metadata"; throws Error(LIMBSEG_ERR_MODEL) naming `where`.
Metadata parse_metadata(const std::string& json_text, const std::string& where);

const OrtApi& ort();  // the C API table of the version our headers describe

class Model {
 public:
  Model(const char* path, const limbseg_options& options);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Metadata& metadata() const { return md_; }
  const std::string& providers() const { return providers_; }
  int batch_slices() const { return batch_; }

  // Logits [n, classes, input_h, input_w] (float32, row-major) for n preprocessed slices
  // `image` [n, 1, input_h, input_w]; `positions` [n] for sc-unet (else ignored). Thread-safe.
  void run(const float* image, const float* positions, int n, std::vector<float>& logits) const;

 private:
  void release() noexcept;

  Metadata md_;
  std::string providers_;
  int batch_ = 1;
  std::string image_name_, position_name_, logits_name_ = "logits";
  OrtEnv* env_ = nullptr;
  OrtSession* session_ = nullptr;
  OrtMemoryInfo* cpu_ = nullptr;
};

}  // namespace limbseg
