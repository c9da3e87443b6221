/* limbseg_demo: segment a small synthetic volume with liblimbseg and print per-muscle volumes.
 * Plain C11; includes only limbseg.h and links only liblimbseg.
 * Usage: limbseg_demo MODEL.onnx [cpu|cuda|tensorrt]
 * The volume: 96 x 80 x 6 voxels (RAS+, numpy C order [X][Y][Z]), 1.5 x 1.5 x 5 mm, int16, two
 * bright ellipses ("thighs") with a darker core on a dark background. */
#include <limbseg.h>

#include <stdio.h>
#include <stdlib.h>

enum { NX = 96, NY = 80, NZ = 6 };

static void make_volume(int16_t* v) {
  for (int x = 0; x < NX; ++x)
    for (int y = 0; y < NY; ++y)
      for (int z = 0; z < NZ; ++z) {
        double dl = ((x - 28.0) * (x - 28.0)) / 400.0 + ((y - 40.0) * (y - 40.0)) / 900.0;
        double dr = ((x - 68.0) * (x - 68.0)) / 400.0 + ((y - 40.0) * (y - 40.0)) / 900.0;
        double d = dl < dr ? dl : dr;
        int value = d < 0.15 ? 300 : d < 1.0 ? 900 + 10 * z : 20;
        v[(x * NY + y) * NZ + z] = (int16_t)(value + (x * 7 + y * 3 + z) % 11);
      }
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.onnx [cpu|cuda|tensorrt]\n", argv[0]);
    return LIMBSEG_ERR_INVALID_ARGUMENT;
  }
  static int16_t voxels[NX * NY * NZ];
  static uint8_t labels[NX * NY * NZ];
  make_volume(voxels);

  limbseg_options options;
  limbseg_options_init(&options);
  if (argc > 2) options.provider = argv[2];
  limbseg_model* model = NULL;
  limbseg_status st = limbseg_open(argv[1], &options, &model);
  if (st != LIMBSEG_OK) {
    fprintf(stderr, "limbseg_demo: %s: %s\n", limbseg_status_name(st), limbseg_last_error());
    return st;
  }

  limbseg_volume volume = {voxels, LIMBSEG_DTYPE_INT16, LIMBSEG_LAYOUT_XYZ_C, {NX, NY, NZ}, {1.5, 1.5, 5.0}};
  int classes = limbseg_model_num_classes(model);
  double* ml = calloc((size_t)classes, sizeof *ml);
  if (ml == NULL) {
    limbseg_close(model);
    return LIMBSEG_ERR_OUT_OF_MEMORY;
  }
  st = limbseg_segment(model, &volume, NULL, labels, sizeof labels, ml, (size_t)classes);
  if (st == LIMBSEG_OK || st == LIMBSEG_EMPTY_INPUT) {
    printf("model %s on %s (ONNX Runtime %s)\n", limbseg_model_architecture(model), limbseg_model_providers(model),
           limbseg_onnxruntime_version());
    printf("%-4s %-6s %-30s %10s\n", "idx", "code", "label", "volume_mL");
    for (int c = 0; c < classes; ++c)
      if (ml[c] > 0.0)
        printf("%-4d %-6s %-30s %10.3f\n", c, limbseg_model_label_code(model, c), limbseg_model_label_name(model, c), ml[c]);
  }
  if (st != LIMBSEG_OK) fprintf(stderr, "limbseg_demo: %s: %s\n", limbseg_status_name(st), limbseg_last_error());
  free(ml);
  limbseg_close(model);
  return st;
}
