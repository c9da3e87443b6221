/*
 * limbseg.h - C interface of liblimbseg: lower-limb muscle segmentation of MRI volumes with the
 * limbseg-rt ONNX models (UNet, Attention UNet, SC-UNet), on ONNX Runtime, without Python.
 *
 * The library gives the same labels as the Python runtime (limbseg_rt.runtime) for the same model,
 * volume and execution provider: it implements the procedure specified in runtime/inference/preprocess.py
 * bit for bit (float32 arithmetic, no fused multiply-add):
 *   1. intensity window lo/hi = nearest-rank percentiles (from the model's metadata, e.g. 0.5 and
 *      99.5) of the finite voxels of the whole volume; lo == hi means no contrast (see
 *      LIMBSEG_EMPTY_INPUT: all background, the model is not run);
 *   2. per axial slice: clip((v - lo) / (hi - lo), 0, 1) in float32, bilinear resize (half-pixel
 *      centres) to the model input [H, W] (e.g. 272 x 240), model input float32 [N, 1, H, W];
 *      sc-unet also gets one position p per slice, float32 [N];
 *   3. logits float32 [N, C, H, W] resized bilinearly back to the slice size [X, Y], argmax over the
 *      C classes (ties: the lowest class index) -> uint8 label.
 * Memory per limbseg_segment call: a few float32 slices of X*Y and H*W plus one batch of logits
 * (2 x batch_slices * C * H * W floats, about 20 MB per slice for 38 classes at 272 x 240). An int16
 * volume is never copied; the finite voxels of a float32 volume are copied once to find the window.
 *
 * Conventions used throughout
 * ---------------------------
 * Volume axes.  A volume is a 3-D array with dims {X, Y, Z} in RAS+ canonical orientation: the x
 *   index grows towards the patient's Right, y towards Anterior, z towards Superior, so z = 0 is the
 *   most inferior (distal) axial slice. Reorient with flips and axis permutations only (as nibabel's
 *   as_closest_canonical does); never resample. Axial slice k is the 2-D array [x, y] at z = k.
 * Memory layout (limbseg_layout).
 *   LIMBSEG_LAYOUT_XYZ_C: numpy C order of an array [X][Y][Z] (z fastest):
 *                         element (x, y, z) at index (x * Y + y) * Z + z.
 *                         This is the Python runtime's canonical array, np.ascontiguousarray(vol).
 *   LIMBSEG_LAYOUT_XYZ_F: x fastest (Fortran order, as NIfTI files, ITK and VTK buffers store it):
 *                         element (x, y, z) at index x + X * (y + Y * z).
 *   The label output uses the same layout as the input volume.
 * Units.  Spacing in millimetres (mm); volumes in millilitres (mL = 1000 mm^3).
 * Ownership.  Every buffer passed in stays owned by the caller and is only read during the call
 *   (labels/volumes are written). Strings returned by the library are owned by it (see each function).
 * Errors.  Every function returning limbseg_status reports failures by code; a one-line message a
 *   user can act on is available from limbseg_last_error() on the same thread until that thread's
 *   next call into the library. No C++ exception ever crosses this interface.
 * Threads.  A limbseg_model may be used by several threads at once (limbseg_segment on one model
 *   from many threads is safe); opening and closing must not race with use of the same handle.
 */
#ifndef LIMBSEG_H
#define LIMBSEG_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(LIMBSEG_BUILDING)
#    define LIMBSEG_API __declspec(dllexport)
#  else
#    define LIMBSEG_API __declspec(dllimport)
#  endif
#else
#  define LIMBSEG_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define LIMBSEG_VERSION_MAJOR 0
#define LIMBSEG_VERSION_MINOR 1
#define LIMBSEG_VERSION_PATCH 0

/* Status codes. The numbers equal the exit codes of the `limbseg-rt` command line for the same
 * condition (runtime/errors.py), so a C tool may return them from main() unchanged. */
typedef enum limbseg_status {
  LIMBSEG_OK = 0,
  LIMBSEG_ERR_INTERNAL = 1,         /* a bug in liblimbseg; please report the message */
  LIMBSEG_ERR_INVALID_ARGUMENT = 2, /* API misuse: NULL pointer, unknown enum, struct_size mismatch */
  LIMBSEG_ERR_INPUT = 3,            /* the volume cannot be used: bad dims/spacing, buffer too small */
  LIMBSEG_ERR_MODEL = 4,            /* model file missing, not ONNX, or without valid limbseg metadata */
  LIMBSEG_ERR_PROVIDER = 5,         /* unknown provider name, provider not built in / unavailable /
                                       dropped by ONNX Runtime (never a silent CPU fallback) */
  LIMBSEG_EMPTY_INPUT = 6,          /* NOT a failure of the call: the volume has no contrast (all finite
                                       voxels in the intensity window are equal, or none is finite);
                                       labels were written, all background, volumes filled */
  LIMBSEG_ERR_RUNTIME = 9,          /* ONNX Runtime failed while running the model */
  LIMBSEG_ERR_OUT_OF_MEMORY = 10    /* an allocation failed */
} limbseg_status;

typedef enum limbseg_dtype {
  LIMBSEG_DTYPE_INT16 = 1,   /* int16_t voxels, native byte order */
  LIMBSEG_DTYPE_FLOAT32 = 2  /* float voxels; NaN/Inf are ignored by the intensity window */
} limbseg_dtype;

typedef enum limbseg_layout {
  LIMBSEG_LAYOUT_XYZ_C = 0,  /* z fastest: index (x * Y + y) * Z + z (numpy C order, Python runtime) */
  LIMBSEG_LAYOUT_XYZ_F = 1   /* x fastest: index x + X * (y + Y * z) (NIfTI / ITK / VTK order) */
} limbseg_layout;

/* A volume handed to limbseg_segment. Nothing is copied beyond the call. */
typedef struct limbseg_volume {
  const void* data;       /* X*Y*Z voxels of `dtype` in `layout`; caller-owned, read only */
  int32_t dtype;          /* a limbseg_dtype (stored as int32_t: fixed size, any value is safe) */
  int32_t layout;         /* a limbseg_layout */
  int64_t dims[3];        /* {X, Y, Z} voxels, each 1..65536, RAS+ canonical axes (see top) */
  double spacing_mm[3];   /* voxel size along x, y, z in mm (> 0); used only for volumes in mL */
} limbseg_volume;

/* Options for limbseg_open. Always start from limbseg_options_init(); fields may be added at the
 * end in later versions (struct_size tells the library which version the caller was built with). */
typedef struct limbseg_options {
  size_t struct_size;      /* = sizeof(limbseg_options), set by limbseg_options_init */
  const char* provider;    /* "cpu" (default when NULL), "cuda" or "tensorrt" (lower case) */
  int device_id;           /* GPU ordinal for "cuda" / "tensorrt"; default 0 */
  int intra_op_threads;    /* threads per inference call; 0 = ONNX Runtime's default */
  int batch_slices;        /* slices per inference call (>= 1); default 1 */
} limbseg_options;

/* Opaque: an opened model with its ONNX Runtime session. */
typedef struct limbseg_model limbseg_model;

/* Version of this library, e.g. "0.1.0", and of the ONNX Runtime it runs on, e.g. "1.32.0".
 * Static strings. */
LIMBSEG_API const char* limbseg_version(void);
LIMBSEG_API const char* limbseg_onnxruntime_version(void);

/* Short name of a status code, e.g. "LIMBSEG_ERR_MODEL" (any int accepted). Static string; never NULL. */
LIMBSEG_API const char* limbseg_status_name(int status);

/* Message of the last failing call on this thread ("" if none). Owned by the library; valid until
 * this thread's next call into the library. Successful calls clear it, except LIMBSEG_EMPTY_INPUT,
 * which leaves an explanatory message. */
LIMBSEG_API const char* limbseg_last_error(void);

/* Fill *options with the defaults (cpu, device 0, ORT's default threads, 1 slice per call). */
LIMBSEG_API void limbseg_options_init(limbseg_options* options);

/* Open an ONNX model exported by limbseg-rt (it must carry the "limbseg_rt.metadata" entry) and
 * create its session on the requested provider. `options` may be NULL (defaults).
 * On success *out_model receives a handle to free with limbseg_close; on failure it is set to NULL.
 * Errors: LIMBSEG_ERR_INVALID_ARGUMENT (NULL path/out_model, bad options), LIMBSEG_ERR_MODEL,
 * LIMBSEG_ERR_PROVIDER (unknown name; "cuda"/"tensorrt" not built in, not available, or ONNX
 * Runtime assigned no node to it). */
LIMBSEG_API limbseg_status limbseg_open(const char* model_path, const limbseg_options* options,
                                        limbseg_model** out_model);

/* Free a model handle (NULL is ignored). No other thread may be using it. */
LIMBSEG_API void limbseg_close(limbseg_model* model);

/* Model facts (from the model's metadata). Strings are owned by the model and live until
 * limbseg_close. On a NULL model they return NULL / 0 / -1 as stated. */
LIMBSEG_API const char* limbseg_model_architecture(const limbseg_model* model); /* "unet", "attention-unet", "sc-unet" */
LIMBSEG_API int limbseg_model_num_classes(const limbseg_model* model);          /* background + muscles; -1 on NULL */
LIMBSEG_API const char* limbseg_model_label_name(const limbseg_model* model, int label); /* NULL if out of range */
LIMBSEG_API const char* limbseg_model_label_code(const limbseg_model* model, int label); /* e.g. "GMAX" */
LIMBSEG_API int limbseg_model_needs_positions(const limbseg_model* model);      /* 1 for sc-unet, else 0 */
/* Model input slice size [H, W] in pixels (e.g. 272 x 240); LIMBSEG_ERR_INVALID_ARGUMENT on NULLs. */
LIMBSEG_API limbseg_status limbseg_model_input_size(const limbseg_model* model, int* height, int* width);
/* Execution providers ONNX Runtime really assigned graph nodes to, most nodes first, comma
 * separated ONNX Runtime names, e.g. "CUDAExecutionProvider,CPUExecutionProvider". */
LIMBSEG_API const char* limbseg_model_providers(const limbseg_model* model);

/* The default slice positions p (fraction along the limb, see runtime/model/position.py) that
 * limbseg_segment uses when `positions` is NULL, for a RAS+ volume of n_slices axial slices:
 * slice z = 0 is the most inferior (distal) one, so with the models' proximal_to_distal direction
 * p[z] = (float)((double)(n_slices - z) / n_slices), i.e. p = 1 at z = 0 and p = 1/n at the top
 * (for a distal_to_proximal model p[z] = (float)((double)(z + 1) / n_slices)).
 * out: caller-owned float[n_slices]. */
LIMBSEG_API limbseg_status limbseg_default_positions(const limbseg_model* model, int64_t n_slices, float* out);

/* Segment a volume.
 *   positions  float[Z] (fraction along the limb per axial slice, index = z) for models that need
 *              them (sc-unet); NULL = limbseg_default_positions. Ignored by other models.
 *   labels     caller-owned uint8_t buffer of labels_size >= X*Y*Z bytes; receives the class index
 *              (0 = background) of every voxel, in the volume's layout.
 *   volumes_ml optional (NULL = not wanted) caller-owned double[volumes_len] with volumes_len >=
 *              limbseg_model_num_classes: receives each class's volume in mL (voxel count * x*y*z
 *              spacing / 1000). Needs a valid spacing_mm.
 * Returns LIMBSEG_OK, LIMBSEG_EMPTY_INPUT (see above; outputs are valid) or an error; on an error
 * the contents of labels and volumes_ml are unspecified. Thread-safe on a shared model. */
LIMBSEG_API limbseg_status limbseg_segment(limbseg_model* model, const limbseg_volume* volume,
                                           const float* positions, uint8_t* labels, size_t labels_size,
                                           double* volumes_ml, size_t volumes_len);

/* Per-class volumes (mL) of a label volume (any layout): volumes_ml[c] = count(labels == c) *
 * spacing_mm[0] * spacing_mm[1] * spacing_mm[2] / 1000 for c < num_classes. Voxels with a label
 * >= num_classes are an LIMBSEG_ERR_INPUT. */
LIMBSEG_API limbseg_status limbseg_label_volumes(const uint8_t* labels, const int64_t dims[3],
                                                 const double spacing_mm[3], int num_classes,
                                                 double* volumes_ml);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LIMBSEG_H */
