#include "model.hpp"

#include <onnxruntime_session_options_config_keys.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <utility>

#include "json.hpp"

namespace limbseg {
namespace {

constexpr const char* kMetadataKey = "limbseg_rt.metadata";
constexpr int kSchemaVersion = 1;

std::string base_name(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string first_line(const char* text, size_t limit = 300) {
  std::string s = text ? text : "";
  size_t nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  if (s.size() > limit) s = s.substr(0, limit) + "...";
  return s;
}

// Turn an OrtStatus into an Error (and free it). `what` says what we were doing.
void check(OrtStatus* st, limbseg_status code, const std::string& what) {
  if (st == nullptr) return;
  std::string msg = what + ": " + first_line(ort().GetErrorMessage(st));
  ort().ReleaseStatus(st);
  throw Error(code, msg);
}

void discard_log(void*, OrtLoggingLevel, const char*, const char*, const char*, const char*) {
  // Library code never prints; failures reach the caller through status codes and messages.
}

template <typename T, void (*Release)(T*)>
struct Deleter {
  void operator()(T* p) const {
    if (p) Release(p);
  }
};
void release_session_options(OrtSessionOptions* p) { ort().ReleaseSessionOptions(p); }
void release_cuda_options(OrtCUDAProviderOptionsV2* p) { ort().ReleaseCUDAProviderOptions(p); }
void release_trt_options(OrtTensorRTProviderOptionsV2* p) { ort().ReleaseTensorRTProviderOptions(p); }
void release_value(OrtValue* p) { ort().ReleaseValue(p); }
void release_type_info(OrtTypeInfo* p) { ort().ReleaseTypeInfo(p); }
void release_model_metadata(OrtModelMetadata* p) { ort().ReleaseModelMetadata(p); }
using SessionOptionsPtr = std::unique_ptr<OrtSessionOptions, Deleter<OrtSessionOptions, release_session_options>>;
using CudaOptionsPtr = std::unique_ptr<OrtCUDAProviderOptionsV2, Deleter<OrtCUDAProviderOptionsV2, release_cuda_options>>;
using TrtOptionsPtr = std::unique_ptr<OrtTensorRTProviderOptionsV2, Deleter<OrtTensorRTProviderOptionsV2, release_trt_options>>;
using ValuePtr = std::unique_ptr<OrtValue, Deleter<OrtValue, release_value>>;
using TypeInfoPtr = std::unique_ptr<OrtTypeInfo, Deleter<OrtTypeInfo, release_type_info>>;
using ModelMetadataPtr = std::unique_ptr<OrtModelMetadata, Deleter<OrtModelMetadata, release_model_metadata>>;

void append_provider(OrtSessionOptions* so, const std::string& provider, int device_id) {
  const std::string dev = std::to_string(device_id);
  const char* keys[] = {"device_id"};
  const char* values[] = {dev.c_str()};
  (void)so, (void)keys, (void)values;  // unused when built without GPU providers
  if (provider == "tensorrt") {
#if LIMBSEG_WITH_TENSORRT
    OrtTensorRTProviderOptionsV2* raw = nullptr;
    check(ort().CreateTensorRTProviderOptions(&raw), LIMBSEG_ERR_PROVIDER, "TensorRT execution provider unavailable");
    TrtOptionsPtr trt(raw);
    check(ort().UpdateTensorRTProviderOptions(trt.get(), keys, values, 1), LIMBSEG_ERR_PROVIDER, "TensorRT options");
    check(ort().SessionOptionsAppendExecutionProvider_TensorRT_V2(so, trt.get()), LIMBSEG_ERR_PROVIDER,
          "TensorRT execution provider unavailable");
#else
    throw Error(LIMBSEG_ERR_PROVIDER,
                "provider 'tensorrt' is not built into this liblimbseg; rebuild with the 'tensorrt' preset "
                "(LIMBSEG_WITH_TENSORRT=ON) against an ONNX Runtime GPU package, or use provider 'cpu'");
#endif
  }
  if (provider == "cuda" || provider == "tensorrt") {  // TensorRT hands unsupported nodes to CUDA
#if LIMBSEG_WITH_CUDA
    OrtCUDAProviderOptionsV2* raw = nullptr;
    check(ort().CreateCUDAProviderOptions(&raw), LIMBSEG_ERR_PROVIDER, "CUDA execution provider unavailable");
    CudaOptionsPtr cuda(raw);
    check(ort().UpdateCUDAProviderOptions(cuda.get(), keys, values, 1), LIMBSEG_ERR_PROVIDER, "CUDA options");
    check(ort().SessionOptionsAppendExecutionProvider_CUDA_V2(so, cuda.get()), LIMBSEG_ERR_PROVIDER,
          "CUDA execution provider unavailable");
#else
    throw Error(LIMBSEG_ERR_PROVIDER,
                "provider 'cuda' is not built into this liblimbseg; rebuild with the 'cuda' preset "
                "(LIMBSEG_WITH_CUDA=ON) against an ONNX Runtime GPU package, or use provider 'cpu'");
#endif
  }
}

const char* ort_provider_name(const std::string& provider) {
  if (provider == "cuda") return "CUDAExecutionProvider";
  if (provider == "tensorrt") return "TensorrtExecutionProvider";
  return "CPUExecutionProvider";
}

// "A,B" of the providers that received graph nodes, most nodes first (ties: by name).
std::string assigned_providers(OrtSession* session) {
  const OrtEpAssignedSubgraph* const* subgraphs = nullptr;
  size_t n = 0;
  check(ort().Session_GetEpGraphAssignmentInfo(session, &subgraphs, &n), LIMBSEG_ERR_PROVIDER,
        "cannot read which execution providers ONNX Runtime assigned");
  std::map<std::string, size_t> nodes;
  for (size_t i = 0; i < n; ++i) {
    const char* name = nullptr;
    check(ort().EpAssignedSubgraph_GetEpName(subgraphs[i], &name), LIMBSEG_ERR_PROVIDER, "provider name");
    const OrtEpAssignedNode* const* ep_nodes = nullptr;
    size_t count = 0;
    check(ort().EpAssignedSubgraph_GetNodes(subgraphs[i], &ep_nodes, &count), LIMBSEG_ERR_PROVIDER, "provider nodes");
    nodes[name ? name : "?"] += count;
  }
  std::vector<std::pair<std::string, size_t>> order(nodes.begin(), nodes.end());
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string out;
  for (const auto& [name, count] : order) out += (out.empty() ? "" : ",") + name;
  return out;
}

bool has_token(const std::string& list, const std::string& name) {
  return ("," + list + ",").find("," + name + ",") != std::string::npos;
}

// Element type and shape of input/output `index`.
std::pair<ONNXTensorElementDataType, std::vector<int64_t>> io_type(OrtSession* s, size_t index, bool input) {
  OrtTypeInfo* raw = nullptr;
  check(input ? ort().SessionGetInputTypeInfo(s, index, &raw) : ort().SessionGetOutputTypeInfo(s, index, &raw),
        LIMBSEG_ERR_MODEL, "cannot read the model's inputs");
  TypeInfoPtr info(raw);
  const OrtTensorTypeAndShapeInfo* t = nullptr;
  check(ort().CastTypeInfoToTensorInfo(info.get(), &t), LIMBSEG_ERR_MODEL, "model input is not a tensor");
  if (t == nullptr) throw Error(LIMBSEG_ERR_MODEL, "model input/output is not a tensor");
  ONNXTensorElementDataType et;
  size_t rank = 0;
  check(ort().GetTensorElementType(t, &et), LIMBSEG_ERR_MODEL, "tensor type");
  check(ort().GetDimensionsCount(t, &rank), LIMBSEG_ERR_MODEL, "tensor rank");
  std::vector<int64_t> dims(rank);
  check(ort().GetDimensions(t, dims.data(), rank), LIMBSEG_ERR_MODEL, "tensor shape");
  return {et, dims};
}

std::vector<std::string> io_names(OrtSession* s, bool input) {
  OrtAllocator* alloc = nullptr;
  check(ort().GetAllocatorWithDefaultOptions(&alloc), LIMBSEG_ERR_INTERNAL, "allocator");
  size_t n = 0;
  check(input ? ort().SessionGetInputCount(s, &n) : ort().SessionGetOutputCount(s, &n), LIMBSEG_ERR_MODEL, "io count");
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) {
    char* name = nullptr;
    check(input ? ort().SessionGetInputName(s, i, alloc, &name) : ort().SessionGetOutputName(s, i, alloc, &name),
          LIMBSEG_ERR_MODEL, "io name");
    names.emplace_back(name);
    alloc->Free(alloc, name);
  }
  return names;
}

}  // namespace

const OrtApi& ort() {
  static const OrtApi* api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
  if (api == nullptr) throw Error(LIMBSEG_ERR_INTERNAL, "the ONNX Runtime library is older than liblimbseg was built for");
  return *api;
}

Metadata parse_metadata(const std::string& text, const std::string& where) {
  Metadata md;
  try {
    json::Value d = json::parse(text);
    long long schema = d.at("schema_version").as_int("schema_version");
    if (schema != kSchemaVersion)
      throw json::ParseError("metadata schema version " + std::to_string(schema) + "; liblimbseg reads version " +
                             std::to_string(kSchemaVersion));
    md.architecture = d.at("architecture").as_string("architecture");
    if (md.architecture != "unet" && md.architecture != "attention-unet" && md.architecture != "sc-unet")
      throw json::ParseError("unknown architecture '" + md.architecture + "'");
    md.precision = d.at("precision").as_string("precision");
    if (md.precision != "fp32" && md.precision != "fp16" && md.precision != "int8")
      throw json::ParseError("unknown precision '" + md.precision + "'");
    const auto& labels = d.at("labels").as_array("labels");
    for (size_t i = 0; i < labels.size(); ++i) {
      if (labels[i].at("index").as_int("labels[].index") != static_cast<long long>(i))
        throw json::ParseError("label table entry " + std::to_string(i) + " has the wrong index");
      md.label_names.push_back(labels[i].at("name").as_string("labels[].name"));
      md.label_codes.push_back(labels[i].at("code").as_string("labels[].code"));
    }
    if (md.label_names.size() < 2 || md.label_names.size() > 256)
      throw json::ParseError("the label table must have 2..256 classes (labels are uint8)");
    if (const json::Value* c = d.find("classes"); c && c->as_int("classes") != static_cast<long long>(labels.size()))
      throw json::ParseError("'classes' disagrees with the label table");
    const auto& hw = d.at("input_hw").as_array("input_hw");
    if (hw.size() != 2) throw json::ParseError("'input_hw' must be [H, W]");
    long long h = hw[0].as_int("input_hw"), w = hw[1].as_int("input_hw");
    if (h < 1 || w < 1 || h > 8192 || w > 8192) throw json::ParseError("'input_hw' out of range");
    md.input_h = static_cast<int>(h);
    md.input_w = static_cast<int>(w);
    const json::Value& norm = d.at("normalisation");
    const json::Value* method = norm.find("method");
    if (method && method->as_string("normalisation.method") != "percentile")
      throw json::ParseError("unsupported normalisation method '" + method->string + "'");
    if (const json::Value* q = norm.find("lower_percentile")) md.lower_percentile = q->as_number("lower_percentile");
    if (const json::Value* q = norm.find("upper_percentile")) md.upper_percentile = q->as_number("upper_percentile");
    if (!(0.0 <= md.lower_percentile && md.lower_percentile < md.upper_percentile && md.upper_percentile <= 100.0))
      throw json::ParseError("normalisation percentiles out of order");
    if (const json::Value* scope = norm.find("scope")) {
      const std::string& s = scope->as_string("normalisation.scope");
      // Only "volume" is run by the Python runtime (pipeline.py), so only "volume" is run here.
      if (s != "volume") throw json::ParseError("normalisation scope '" + s + "' is not supported (only 'volume')");
    }
    if (const json::Value* r = d.find("resampling"); r && !r->is_null()) {
      const std::string& mode = r->as_string("resampling");
      if (mode != "exact" && mode != "antialias") throw json::ParseError("unknown resampling '" + mode + "'");
      md.antialias = (mode == "antialias");
    }
    for (const auto& v : d.at("inputs").as_array("inputs")) md.inputs.push_back(v.as_string("inputs[]"));
    for (const auto& v : d.at("outputs").as_array("outputs")) md.outputs.push_back(v.as_string("outputs[]"));
    if (md.inputs.empty()) throw json::ParseError("'inputs' is empty");
    md.needs_position = std::find(md.inputs.begin(), md.inputs.end(), "position") != md.inputs.end();
    const json::Value* pos = d.find("position");
    bool has_spec = pos && !pos->is_null();
    if (md.needs_position != has_spec) throw json::ParseError("a 'position' input needs a position spec, and vice versa");
    if (has_spec) {
      const std::string& dir = pos->at("direction").as_string("position.direction");
      if (dir != "proximal_to_distal" && dir != "distal_to_proximal")
        throw json::ParseError("unknown position direction '" + dir + "'");
      md.proximal_to_distal = (dir == "proximal_to_distal");
    }
  } catch (const json::ParseError& e) {
    throw Error(LIMBSEG_ERR_MODEL, where + " has malformed limbseg-rt metadata: " + e.what());
  }
  return md;
}

Model::Model(const char* path, const limbseg_options& options) {
  const std::string file = path;
  const std::string where = base_name(file);
  if (FILE* f = std::fopen(path, "rb")) {
    std::fclose(f);
  } else {
    throw Error(LIMBSEG_ERR_MODEL, "model file not found or not readable: " + file);
  }
  const std::string provider = options.provider ? options.provider : "cpu";
  if (provider != "cpu" && provider != "cuda" && provider != "tensorrt")
    throw Error(LIMBSEG_ERR_PROVIDER, "unknown execution provider '" + provider + "'; choose one of: cpu, cuda, tensorrt");
  if (options.batch_slices < 0 || options.batch_slices > 1024)
    throw Error(LIMBSEG_ERR_INVALID_ARGUMENT, "batch_slices must be 1..1024 (0 = default 1)");
  if (options.intra_op_threads < 0) throw Error(LIMBSEG_ERR_INVALID_ARGUMENT, "intra_op_threads must be >= 0");
  if (options.device_id < 0) throw Error(LIMBSEG_ERR_INVALID_ARGUMENT, "device_id must be >= 0");
  batch_ = options.batch_slices == 0 ? 1 : options.batch_slices;

  try {
    check(ort().CreateEnvWithCustomLogger(discard_log, nullptr, ORT_LOGGING_LEVEL_WARNING, "limbseg", &env_),
          LIMBSEG_ERR_INTERNAL, "cannot create the ONNX Runtime environment");
    check(ort().CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &cpu_), LIMBSEG_ERR_INTERNAL, "memory info");

    OrtSessionOptions* raw = nullptr;
    check(ort().CreateSessionOptions(&raw), LIMBSEG_ERR_INTERNAL, "session options");
    SessionOptionsPtr so(raw);
    check(ort().SetSessionGraphOptimizationLevel(so.get(), ORT_ENABLE_ALL), LIMBSEG_ERR_INTERNAL, "optimisation level");
    if (options.intra_op_threads > 0)
      check(ort().SetIntraOpNumThreads(so.get(), options.intra_op_threads), LIMBSEG_ERR_INTERNAL, "threads");
    check(ort().AddSessionConfigEntry(so.get(), kOrtSessionOptionsRecordEpGraphAssignmentInfo, "1"),
          LIMBSEG_ERR_INTERNAL, "session config");
    append_provider(so.get(), provider, options.device_id);

    OrtStatus* st = ort().CreateSession(env_, path, so.get(), &session_);
    if (st != nullptr) {
      OrtErrorCode code = ort().GetErrorCode(st);
      std::string msg = first_line(ort().GetErrorMessage(st));
      ort().ReleaseStatus(st);
      if (provider != "cpu" && code != ORT_INVALID_PROTOBUF && code != ORT_NO_SUCHFILE && code != ORT_INVALID_GRAPH)
        throw Error(LIMBSEG_ERR_PROVIDER, "cannot create a '" + provider + "' session for " + where + ": " + msg);
      throw Error(LIMBSEG_ERR_MODEL, where + " is not a readable ONNX model (" + msg + ")");
    }

    // Metadata first: a file without it is not a limbseg-rt model, whatever else it holds.
    OrtModelMetadata* mraw = nullptr;
    check(ort().SessionGetModelMetadata(session_, &mraw), LIMBSEG_ERR_MODEL, where + ": cannot read metadata");
    ModelMetadataPtr meta(mraw);
    OrtAllocator* alloc = nullptr;
    check(ort().GetAllocatorWithDefaultOptions(&alloc), LIMBSEG_ERR_INTERNAL, "allocator");
    char* text = nullptr;
    check(ort().ModelMetadataLookupCustomMetadataMap(meta.get(), alloc, kMetadataKey, &text), LIMBSEG_ERR_MODEL,
          where + ": cannot read metadata");
    if (text == nullptr)
      throw Error(LIMBSEG_ERR_MODEL, where + " has no limbseg-rt metadata (key '" + std::string(kMetadataKey) +
                                         "'); export it with 'limbseg-rt export'");
    std::string json_text(text);
    alloc->Free(alloc, text);
    md_ = parse_metadata(json_text, where);

    // The graph must offer what the metadata promises.
    std::vector<std::string> in = io_names(session_, true), out = io_names(session_, false);
    image_name_ = std::find(md_.inputs.begin(), md_.inputs.end(), "image") != md_.inputs.end() ? "image" : md_.inputs[0];
    if (md_.needs_position) position_name_ = "position";
    for (size_t i = 0; i < in.size(); ++i) {
      bool known = in[i] == image_name_ || (md_.needs_position && in[i] == position_name_);
      if (!known) throw Error(LIMBSEG_ERR_MODEL, where + ": graph input '" + in[i] + "' is not described by its metadata");
      auto [et, dims] = io_type(session_, i, true);
      if (et != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        throw Error(LIMBSEG_ERR_MODEL, where + ": input '" + in[i] + "' is not float32 (liblimbseg feeds float32)");
      if (in[i] == image_name_) {
        if (dims.size() != 4 || (dims[1] > 0 && dims[1] != 1) || (dims[2] > 0 && dims[2] != md_.input_h) ||
            (dims[3] > 0 && dims[3] != md_.input_w))
          throw Error(LIMBSEG_ERR_MODEL, where + ": input '" + in[i] + "' is not [N, 1, " + std::to_string(md_.input_h) +
                                             ", " + std::to_string(md_.input_w) + "] as its metadata says");
        if (dims[0] > 0 && dims[0] != batch_)
          throw Error(LIMBSEG_ERR_INVALID_ARGUMENT, where + " has a fixed batch of " + std::to_string(dims[0]) +
                                                        " slices; set batch_slices to " + std::to_string(dims[0]));
      }
    }
    if (in.size() != (md_.needs_position ? 2u : 1u))
      throw Error(LIMBSEG_ERR_MODEL, where + ": graph inputs do not match its metadata inputs");
    auto lo = std::find(out.begin(), out.end(), logits_name_);
    if (lo == out.end()) throw Error(LIMBSEG_ERR_MODEL, where + " has no 'logits' output");
    auto [oet, odims] = io_type(session_, static_cast<size_t>(lo - out.begin()), false);
    if (oet != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || odims.size() != 4 ||
        (odims[1] > 0 && odims[1] != static_cast<int64_t>(md_.label_names.size())))
      throw Error(LIMBSEG_ERR_MODEL, where + ": output 'logits' is not float32 [N, " +
                                         std::to_string(md_.label_names.size()) + ", H, W]");

    // ONNX Runtime may leave a requested provider without any node; we never run like that quietly.
    providers_ = assigned_providers(session_);
    const char* wanted = ort_provider_name(provider);
    if (!has_token(providers_, wanted))
      throw Error(LIMBSEG_ERR_PROVIDER, std::string("ONNX Runtime assigned no node of ") + where + " to " + wanted +
                                            " (it uses: " + providers_ + ")");
  } catch (...) {
    release();  // the destructor does not run for a throwing constructor
    throw;
  }
}

Model::~Model() { release(); }

void Model::release() noexcept {
  if (session_) ort().ReleaseSession(session_);
  if (cpu_) ort().ReleaseMemoryInfo(cpu_);
  if (env_) ort().ReleaseEnv(env_);
  session_ = nullptr;
  cpu_ = nullptr;
  env_ = nullptr;
}

void Model::run(const float* image, const float* positions, int n, std::vector<float>& logits) const {
  const int64_t h = md_.input_h, w = md_.input_w;
  const int64_t ishape[4] = {n, 1, h, w};
  const size_t ibytes = sizeof(float) * static_cast<size_t>(n * h * w);
  OrtValue* raw = nullptr;
  check(ort().CreateTensorWithDataAsOrtValue(cpu_, const_cast<float*>(image), ibytes, ishape, 4,
                                             ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &raw),
        LIMBSEG_ERR_INTERNAL, "input tensor");
  ValuePtr image_value(raw);
  ValuePtr position_value;
  std::vector<const char*> names = {image_name_.c_str()};
  std::vector<const OrtValue*> values = {image_value.get()};
  if (md_.needs_position) {
    const int64_t pshape[1] = {n};
    check(ort().CreateTensorWithDataAsOrtValue(cpu_, const_cast<float*>(positions), sizeof(float) * n, pshape, 1,
                                               ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &raw),
          LIMBSEG_ERR_INTERNAL, "position tensor");
    position_value.reset(raw);
    names.push_back(position_name_.c_str());
    values.push_back(position_value.get());
  }
  const char* out_names[1] = {logits_name_.c_str()};
  OrtValue* out = nullptr;
  check(ort().Run(session_, nullptr, names.data(), values.data(), names.size(), out_names, 1, &out),
        LIMBSEG_ERR_RUNTIME, "ONNX Runtime failed to run the model");
  ValuePtr out_value(out);
  OrtTensorTypeAndShapeInfo* info = nullptr;
  check(ort().GetTensorTypeAndShape(out, &info), LIMBSEG_ERR_RUNTIME, "logits shape");
  size_t rank = 0;
  int64_t dims[4] = {0, 0, 0, 0};
  OrtStatus* st = ort().GetDimensionsCount(info, &rank);
  if (st == nullptr && rank == 4) st = ort().GetDimensions(info, dims, 4);
  ort().ReleaseTensorTypeAndShapeInfo(info);
  check(st, LIMBSEG_ERR_RUNTIME, "logits shape");
  const int64_t classes = static_cast<int64_t>(md_.label_names.size());
  if (rank != 4 || dims[0] != n || dims[1] != classes || dims[2] != h || dims[3] != w)
    throw Error(LIMBSEG_ERR_MODEL, "the model's logits are not [N, " + std::to_string(classes) + ", " +
                                       std::to_string(h) + ", " + std::to_string(w) + "]");
  float* data = nullptr;
  check(ort().GetTensorMutableData(out, reinterpret_cast<void**>(&data)), LIMBSEG_ERR_RUNTIME, "logits data");
  logits.assign(data, data + static_cast<size_t>(n * classes * h * w));
}

}  // namespace limbseg
