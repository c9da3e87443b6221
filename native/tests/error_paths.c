/* error_paths MODELS_DIR CPU_ONLY: every misuse and every bad model gives its status code and a
 * useful message; model facts read back correctly. Plain C11 against the public header only. */
#include <limbseg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static char models[1024];

static const char* model_path(const char* name) {
  static char buf[2048];
  snprintf(buf, sizeof buf, "%s/%s", models, name);
  return buf;
}

/* The call returned `want` and the thread's message contains `needle`. */
static void expect(const char* what, limbseg_status got, limbseg_status want, const char* needle) {
  const char* msg = limbseg_last_error();
  int ok = got == want && msg != NULL && strstr(msg, needle) != NULL;
  printf("%s %-48s -> %s: \"%s\"\n", ok ? "ok  " : "FAIL", what, limbseg_status_name(got), msg ? msg : "(null)");
  if (!ok) {
    printf("     expected %s with a message containing \"%s\"\n", limbseg_status_name(want), needle);
    failures++;
  }
}

static void check(const char* what, int cond) {
  printf("%s %s\n", cond ? "ok  " : "FAIL", what);
  if (!cond) failures++;
}

static limbseg_status open_with(const char* path, const char* provider, limbseg_model** m) {
  limbseg_options o;
  limbseg_options_init(&o);
  o.provider = provider;
  return limbseg_open(path, &o, m);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: error_paths MODELS_DIR CPU_ONLY(0|1)\n");
    return 2;
  }
  snprintf(models, sizeof models, "%s", argv[1]);
  const int cpu_only = atoi(argv[2]);
  limbseg_model* m = (limbseg_model*)&failures; /* must be reset to NULL on failure */
  limbseg_options o;

  /* --- opening ------------------------------------------------------------------------------ */
  expect("open(NULL path)", limbseg_open(NULL, NULL, &m), LIMBSEG_ERR_INVALID_ARGUMENT, "model_path is NULL");
  check("failed open sets *out_model = NULL", m == NULL);
  expect("open(NULL out_model)", limbseg_open(model_path("unet.onnx"), NULL, NULL), LIMBSEG_ERR_INVALID_ARGUMENT, "out_model");
  expect("open(missing file)", open_with(model_path("missing.onnx"), "cpu", &m), LIMBSEG_ERR_MODEL, "missing.onnx");
  expect("open(corrupt file)", open_with(model_path("corrupt.onnx"), "cpu", &m), LIMBSEG_ERR_MODEL, "not a readable ONNX model");
  expect("open(model without metadata)", open_with(model_path("no-metadata.onnx"), "cpu", &m), LIMBSEG_ERR_MODEL,
         "has no limbseg-rt metadata");
  expect("open(truncated metadata JSON)", open_with(model_path("bad-metadata.onnx"), "cpu", &m), LIMBSEG_ERR_MODEL,
         "malformed limbseg-rt metadata");
  expect("open(unknown architecture)", open_with(model_path("unknown-arch.onnx"), "cpu", &m), LIMBSEG_ERR_MODEL,
         "unknown architecture 'vnet'");
  expect("open(provider \"metal\")", open_with(model_path("unet.onnx"), "metal", &m), LIMBSEG_ERR_PROVIDER,
         "unknown execution provider 'metal'; choose one of: cpu, cuda, tensorrt");
  expect("open(provider \"CPU\", case matters)", open_with(model_path("unet.onnx"), "CPU", &m), LIMBSEG_ERR_PROVIDER,
         "unknown execution provider");
  if (cpu_only) {
    expect("open(provider \"cuda\") in a CPU build", open_with(model_path("unet.onnx"), "cuda", &m), LIMBSEG_ERR_PROVIDER,
           "not built into this liblimbseg");
    expect("open(provider \"tensorrt\") in a CPU build", open_with(model_path("unet.onnx"), "tensorrt", &m),
           LIMBSEG_ERR_PROVIDER, "not built into this liblimbseg");
  }
  memset(&o, 0, sizeof o);
  expect("open(options not initialised)", limbseg_open(model_path("unet.onnx"), &o, &m), LIMBSEG_ERR_INVALID_ARGUMENT,
         "limbseg_options_init");
  limbseg_options_init(&o);
  o.batch_slices = -1;
  expect("open(batch_slices = -1)", limbseg_open(model_path("unet.onnx"), &o, &m), LIMBSEG_ERR_INVALID_ARGUMENT, "batch_slices");

  /* --- model facts ---------------------------------------------------------------------------- */
  limbseg_status st = limbseg_open(model_path("unet.onnx"), NULL, &m);
  expect("open(unet.onnx, defaults)", st, LIMBSEG_OK, "");
  if (st != LIMBSEG_OK) return 1;
  check("success leaves an empty message", limbseg_last_error()[0] == '\0');
  check("architecture is unet", !strcmp(limbseg_model_architecture(m), "unet"));
  check("38 classes", limbseg_model_num_classes(m) == 38);
  check("label 0 is background", !strcmp(limbseg_model_label_name(m, 0), "background"));
  check("label 13 code is GMAX", !strcmp(limbseg_model_label_code(m, 13), "GMAX"));
  check("label 38 out of range -> NULL", limbseg_model_label_name(m, 38) == NULL && limbseg_model_label_code(m, -1) == NULL);
  check("unet needs no positions", limbseg_model_needs_positions(m) == 0);
  int h = 0, w = 0;
  check("input size 272 x 240", limbseg_model_input_size(m, &h, &w) == LIMBSEG_OK && h == 272 && w == 240);
  check("runs on CPUExecutionProvider", !strcmp(limbseg_model_providers(m), "CPUExecutionProvider"));
  check("NULL model facts", limbseg_model_architecture(NULL) == NULL && limbseg_model_num_classes(NULL) == -1 &&
                                limbseg_model_providers(NULL) == NULL && limbseg_model_needs_positions(NULL) == 0);
  check("status names", !strcmp(limbseg_status_name(LIMBSEG_ERR_PROVIDER), "LIMBSEG_ERR_PROVIDER") &&
                            !strcmp(limbseg_status_name(77), "LIMBSEG_UNKNOWN_STATUS"));
  check("ONNX Runtime version reported", strlen(limbseg_onnxruntime_version()) >= 5);

  /* --- segmenting with bad arguments ----------------------------------------------------------- */
  enum { X = 20, Y = 16, Z = 3 };
  static int16_t vox[X * Y * Z];
  static uint8_t lab[X * Y * Z];
  for (int i = 0; i < X * Y * Z; ++i) vox[i] = (int16_t)((i * 37) % 500);
  double ml[38];
  limbseg_volume v = {vox, LIMBSEG_DTYPE_INT16, LIMBSEG_LAYOUT_XYZ_C, {X, Y, Z}, {1.0, 1.0, 2.0}};
  expect("segment(NULL model)", limbseg_segment(NULL, &v, NULL, lab, sizeof lab, NULL, 0), LIMBSEG_ERR_INVALID_ARGUMENT, "model is NULL");
  expect("segment(NULL volume)", limbseg_segment(m, NULL, NULL, lab, sizeof lab, NULL, 0), LIMBSEG_ERR_INVALID_ARGUMENT, "volume is NULL");
  expect("segment(NULL labels)", limbseg_segment(m, &v, NULL, NULL, sizeof lab, NULL, 0), LIMBSEG_ERR_INVALID_ARGUMENT, "labels is NULL");
  limbseg_volume bad = v;
  bad.data = NULL;
  expect("segment(volume->data NULL)", limbseg_segment(m, &bad, NULL, lab, sizeof lab, NULL, 0), LIMBSEG_ERR_INVALID_ARGUMENT, "data is NULL");
  bad = v;
  bad.dims[0] = 0;
  expect("segment(dims {0, 16, 3})", limbseg_segment(m, &bad, NULL, lab, sizeof lab, NULL, 0), LIMBSEG_ERR_INPUT, "got {0, 16, 3}");
  bad.dims[0] = -20;
  expect("segment(dims {-20, 16, 3})", limbseg_segment(m, &bad, NULL, lab, sizeof lab, NULL, 0), LIMBSEG_ERR_INPUT, "1..65536");
  bad.dims[0] = 70000;
  expect("segment(dims {70000, 16, 3})", limbseg_segment(m, &bad, NULL, lab, sizeof lab, NULL, 0), LIMBSEG_ERR_INPUT, "1..65536");
  expect("segment(labels buffer too small)", limbseg_segment(m, &v, NULL, lab, sizeof lab - 1, NULL, 0), LIMBSEG_ERR_INPUT,
         "the volume needs X*Y*Z = 960");
  expect("segment(volumes_len 10 < 38)", limbseg_segment(m, &v, NULL, lab, sizeof lab, ml, 10), LIMBSEG_ERR_INPUT, "38 classes");
  bad = v;
  bad.dtype = 99;
  expect("segment(dtype 99)", limbseg_segment(m, &bad, NULL, lab, sizeof lab, NULL, 0), LIMBSEG_ERR_INVALID_ARGUMENT, "dtype");
  bad = v;
  bad.layout = 5;
  expect("segment(layout 5)", limbseg_segment(m, &bad, NULL, lab, sizeof lab, NULL, 0), LIMBSEG_ERR_INVALID_ARGUMENT, "layout");
  bad = v;
  bad.spacing_mm[2] = 0.0;
  expect("segment(spacing 0 mm, volumes wanted)", limbseg_segment(m, &bad, NULL, lab, sizeof lab, ml, 38), LIMBSEG_ERR_INPUT, "spacing");
  expect("segment(spacing 0 mm, no volumes)", limbseg_segment(m, &bad, NULL, lab, sizeof lab, NULL, 0), LIMBSEG_OK, "");
  expect("segment(valid)", limbseg_segment(m, &v, NULL, lab, sizeof lab, ml, 38), LIMBSEG_OK, "");
  double total = 0.0;
  for (int k = 0; k < 38; ++k) total += ml[k];
  check("volumes add up to X*Y*Z*1*1*2 mm^3 = 1.92 mL", total > 1.92 - 1e-12 && total < 1.92 + 1e-12);

  /* --- helpers ---------------------------------------------------------------------------------- */
  const int64_t dims[3] = {X, Y, Z};
  const double sp[3] = {1.0, 1.0, 2.0};
  lab[7] = 40;
  expect("label_volumes(label 40 >= 38 classes)", limbseg_label_volumes(lab, dims, sp, 38, ml), LIMBSEG_ERR_INPUT, "label 40");
  expect("label_volumes(NULL labels)", limbseg_label_volumes(NULL, dims, sp, 38, ml), LIMBSEG_ERR_INVALID_ARGUMENT, "labels is NULL");
  float p[4];
  expect("default_positions(n = 0)", limbseg_default_positions(m, 0, p), LIMBSEG_ERR_INPUT, "n_slices");
  limbseg_close(m);

  st = limbseg_open(model_path("sc-unet.onnx"), NULL, &m);
  expect("open(sc-unet.onnx)", st, LIMBSEG_OK, "");
  if (st == LIMBSEG_OK) {
    check("sc-unet needs positions", limbseg_model_needs_positions(m) == 1);
    check("default positions of 4 slices: z = 0 (distal) -> 1.0 ... z = 3 -> 0.25",
          limbseg_default_positions(m, 4, p) == LIMBSEG_OK && p[0] == 1.0f && p[1] == 0.75f && p[2] == 0.5f && p[3] == 0.25f);
    limbseg_close(m);
  }
  limbseg_close(NULL);
  printf("%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
