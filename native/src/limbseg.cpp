// The C boundary: argument checks, status codes, the thread-local error message, and the rule that
// no exception leaves the library.
#include "limbseg.h"

#include <cstring>
#include <new>
#include <string>

#include "model.hpp"
#include "segment.hpp"

struct limbseg_model {
  limbseg::Model model;
  limbseg_model(const char* path, const limbseg_options& o) : model(path, o) {}
};

namespace {

thread_local std::string g_last_error;

limbseg_status fail(limbseg_status status, const char* message) {
  try {
    g_last_error = message;
  } catch (...) {
    // out of memory while storing the message: the code still tells what happened
  }
  return status;
}

// Runs `body` (returning limbseg_status), mapping every exception to a status and message.
template <typename F>
limbseg_status guarded(F&& body) {
  try {
    g_last_error.clear();
    return body();
  } catch (const limbseg::Error& e) {
    return fail(e.status, e.what());
  } catch (const std::bad_alloc&) {
    return fail(LIMBSEG_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(LIMBSEG_ERR_INTERNAL, e.what());
  } catch (...) {
    return fail(LIMBSEG_ERR_INTERNAL, "unknown internal error");
  }
}

limbseg::Error null_arg(const char* name) {
  return limbseg::Error(LIMBSEG_ERR_INVALID_ARGUMENT, std::string(name) + " is NULL");
}

}  // namespace

extern "C" {

const char* limbseg_version(void) { return LIMBSEG_VERSION_STRING; }

const char* limbseg_onnxruntime_version(void) { return OrtGetApiBase()->GetVersionString(); }

const char* limbseg_status_name(int status) {
  switch (status) {
    case LIMBSEG_OK: return "LIMBSEG_OK";
    case LIMBSEG_ERR_INTERNAL: return "LIMBSEG_ERR_INTERNAL";
    case LIMBSEG_ERR_INVALID_ARGUMENT: return "LIMBSEG_ERR_INVALID_ARGUMENT";
    case LIMBSEG_ERR_INPUT: return "LIMBSEG_ERR_INPUT";
    case LIMBSEG_ERR_MODEL: return "LIMBSEG_ERR_MODEL";
    case LIMBSEG_ERR_PROVIDER: return "LIMBSEG_ERR_PROVIDER";
    case LIMBSEG_EMPTY_INPUT: return "LIMBSEG_EMPTY_INPUT";
    case LIMBSEG_ERR_RUNTIME: return "LIMBSEG_ERR_RUNTIME";
    case LIMBSEG_ERR_OUT_OF_MEMORY: return "LIMBSEG_ERR_OUT_OF_MEMORY";
  }
  return "LIMBSEG_UNKNOWN_STATUS";
}

const char* limbseg_last_error(void) { return g_last_error.c_str(); }

void limbseg_options_init(limbseg_options* options) {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
  options->provider = "cpu";
  options->device_id = 0;
  options->intra_op_threads = 0;
  options->batch_slices = 1;
}

limbseg_status limbseg_open(const char* model_path, const limbseg_options* options, limbseg_model** out_model) {
  return guarded([&] {
    if (out_model == nullptr) throw null_arg("out_model");
    *out_model = nullptr;
    if (model_path == nullptr) throw null_arg("model_path");
    limbseg_options o;
    limbseg_options_init(&o);
    if (options != nullptr) {
      if (options->struct_size != sizeof(limbseg_options))
        throw limbseg::Error(LIMBSEG_ERR_INVALID_ARGUMENT,
                             "options->struct_size is not sizeof(limbseg_options); call limbseg_options_init first");
      o = *options;
    }
    *out_model = new limbseg_model(model_path, o);
    return LIMBSEG_OK;
  });
}

void limbseg_close(limbseg_model* model) { delete model; }

const char* limbseg_model_architecture(const limbseg_model* m) {
  return m ? m->model.metadata().architecture.c_str() : nullptr;
}

int limbseg_model_num_classes(const limbseg_model* m) {
  return m ? static_cast<int>(m->model.metadata().label_names.size()) : -1;
}

const char* limbseg_model_label_name(const limbseg_model* m, int label) {
  if (!m || label < 0 || label >= limbseg_model_num_classes(m)) return nullptr;
  return m->model.metadata().label_names[static_cast<size_t>(label)].c_str();
}

const char* limbseg_model_label_code(const limbseg_model* m, int label) {
  if (!m || label < 0 || label >= limbseg_model_num_classes(m)) return nullptr;
  return m->model.metadata().label_codes[static_cast<size_t>(label)].c_str();
}

int limbseg_model_needs_positions(const limbseg_model* m) { return m && m->model.metadata().needs_position ? 1 : 0; }

limbseg_status limbseg_model_input_size(const limbseg_model* m, int* height, int* width) {
  return guarded([&] {
    if (!m) throw null_arg("model");
    if (!height) throw null_arg("height");
    if (!width) throw null_arg("width");
    *height = m->model.metadata().input_h;
    *width = m->model.metadata().input_w;
    return LIMBSEG_OK;
  });
}

const char* limbseg_model_providers(const limbseg_model* m) { return m ? m->model.providers().c_str() : nullptr; }

limbseg_status limbseg_default_positions(const limbseg_model* m, int64_t n_slices, float* out) {
  return guarded([&] {
    if (!m) throw null_arg("model");
    if (!out) throw null_arg("out");
    if (n_slices < 1 || n_slices > 65536) throw limbseg::Error(LIMBSEG_ERR_INPUT, "n_slices must be 1..65536");
    std::vector<float> p = limbseg::default_positions(m->model.metadata(), n_slices);
    std::memcpy(out, p.data(), sizeof(float) * p.size());
    return LIMBSEG_OK;
  });
}

limbseg_status limbseg_segment(limbseg_model* m, const limbseg_volume* volume, const float* positions,
                               uint8_t* labels, size_t labels_size, double* volumes_ml, size_t volumes_len) {
  return guarded([&] {
    if (!m) throw null_arg("model");
    if (!volume) throw null_arg("volume");
    if (!labels) throw null_arg("labels");
    const size_t n = limbseg::validate_volume(*volume, volumes_ml != nullptr);
    if (labels_size < n)
      throw limbseg::Error(LIMBSEG_ERR_INPUT, "labels buffer holds " + std::to_string(labels_size) +
                                                  " bytes; the volume needs X*Y*Z = " + std::to_string(n));
    const int classes = limbseg_model_num_classes(m);
    if (volumes_ml && volumes_len < static_cast<size_t>(classes))
      throw limbseg::Error(LIMBSEG_ERR_INPUT, "volumes_ml holds " + std::to_string(volumes_len) +
                                                  " values; the model has " + std::to_string(classes) + " classes");
    std::string note;
    limbseg_status st = limbseg::segment(m->model, *volume, positions, labels, note);
    if (volumes_ml) limbseg::label_volumes(labels, n, volume->spacing_mm, classes, volumes_ml);
    if (st != LIMBSEG_OK) g_last_error = note;
    return st;
  });
}

limbseg_status limbseg_label_volumes(const uint8_t* labels, const int64_t dims[3], const double spacing_mm[3],
                                     int num_classes, double* volumes_ml) {
  return guarded([&] {
    if (!labels) throw null_arg("labels");
    if (!dims) throw null_arg("dims");
    if (!spacing_mm) throw null_arg("spacing_mm");
    if (!volumes_ml) throw null_arg("volumes_ml");
    if (num_classes < 1 || num_classes > 256) throw limbseg::Error(LIMBSEG_ERR_INVALID_ARGUMENT, "num_classes must be 1..256");
    limbseg_volume v{};
    v.data = labels;
    v.dtype = LIMBSEG_DTYPE_INT16;  // only dims and spacing are checked here
    v.layout = LIMBSEG_LAYOUT_XYZ_C;
    std::memcpy(v.dims, dims, sizeof v.dims);
    std::memcpy(v.spacing_mm, spacing_mm, sizeof v.spacing_mm);
    const size_t n = limbseg::validate_volume(v, true);
    limbseg::label_volumes(labels, n, spacing_mm, num_classes, volumes_ml);
    return LIMBSEG_OK;
  });
}

}  // extern "C"
