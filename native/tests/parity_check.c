/* parity_check CASE.txt: segment one case written by make_fixtures.py with liblimbseg and compare
 * with the Python reference: labels must be identical, volumes (mL) equal to 1e-9 relative.
 * Plain C11 against the public header only. Exit 0 when everything matches. */
#include <limbseg.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char model[1024], dtype[16], layout[8], positions[256], volume[256], labels[256], volumes[256];
  long long dims[3];
  double spacing[3];
  int batch, expect;
} test_case;

static void* read_file(const char* dir, const char* name, size_t expect_bytes) {
  char path[2048];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", path);
    exit(2);
  }
  void* buf = malloc(expect_bytes + 1);
  size_t got = buf ? fread(buf, 1, expect_bytes + 1, f) : 0;
  fclose(f);
  if (got != expect_bytes) {
    fprintf(stderr, "%s: %zu bytes, expected %zu\n", path, got, expect_bytes);
    exit(2);
  }
  return buf;
}

static int parse_case(const char* path, test_case* c) {
  FILE* f = fopen(path, "r");
  if (!f) return 0;
  char line[2048];
  memset(c, 0, sizeof *c);
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char* eq = strchr(line, '=');
    if (!eq) continue;
    *eq = 0;
    const char *k = line, *v = eq + 1;
    if (!strcmp(k, "model")) snprintf(c->model, sizeof c->model, "%s", v);
    else if (!strcmp(k, "dtype")) snprintf(c->dtype, sizeof c->dtype, "%s", v);
    else if (!strcmp(k, "layout")) snprintf(c->layout, sizeof c->layout, "%s", v);
    else if (!strcmp(k, "positions")) snprintf(c->positions, sizeof c->positions, "%s", v);
    else if (!strcmp(k, "volume")) snprintf(c->volume, sizeof c->volume, "%s", v);
    else if (!strcmp(k, "labels")) snprintf(c->labels, sizeof c->labels, "%s", v);
    else if (!strcmp(k, "volumes")) snprintf(c->volumes, sizeof c->volumes, "%s", v);
    else if (!strcmp(k, "dims")) sscanf(v, "%lld %lld %lld", &c->dims[0], &c->dims[1], &c->dims[2]);
    else if (!strcmp(k, "spacing")) sscanf(v, "%lf %lf %lf", &c->spacing[0], &c->spacing[1], &c->spacing[2]);
    else if (!strcmp(k, "batch")) c->batch = atoi(v);
    else if (!strcmp(k, "expect")) c->expect = atoi(v);
  }
  fclose(f);
  return 1;
}

int main(int argc, char** argv) {
  test_case c;
  if (argc != 2 || !parse_case(argv[1], &c)) {
    fprintf(stderr, "usage: parity_check CASE.txt\n");
    return 2;
  }
  char dir[2048];
  snprintf(dir, sizeof dir, "%s", argv[1]);
  char* slash = strrchr(dir, '/');
  if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");

  const size_t n = (size_t)(c.dims[0] * c.dims[1] * c.dims[2]);
  const int is_int16 = !strcmp(c.dtype, "int16");
  void* voxels = read_file(dir, c.volume, n * (is_int16 ? 2 : 4));
  uint8_t* ref = read_file(dir, c.labels, n);
  float* positions = strcmp(c.positions, "-") ? read_file(dir, c.positions, (size_t)c.dims[2] * sizeof(float)) : NULL;

  limbseg_options o;
  limbseg_options_init(&o);
  o.batch_slices = c.batch;
  limbseg_model* m = NULL;
  limbseg_status st = limbseg_open(c.model, &o, &m);
  if (st != LIMBSEG_OK) {
    fprintf(stderr, "open: %s: %s\n", limbseg_status_name(st), limbseg_last_error());
    return 1;
  }
  const int classes = limbseg_model_num_classes(m);
  double* ref_ml = read_file(dir, c.volumes, (size_t)classes * sizeof(double));
  limbseg_volume v = {voxels,
                      is_int16 ? LIMBSEG_DTYPE_INT16 : LIMBSEG_DTYPE_FLOAT32,
                      strcmp(c.layout, "c") ? LIMBSEG_LAYOUT_XYZ_F : LIMBSEG_LAYOUT_XYZ_C,
                      {c.dims[0], c.dims[1], c.dims[2]},
                      {c.spacing[0], c.spacing[1], c.spacing[2]}};
  uint8_t* labels = malloc(n);
  double* ml = calloc((size_t)classes, sizeof *ml);
  memset(labels, 0xAB, n);  /* every voxel must be overwritten */
  st = limbseg_segment(m, &v, positions, labels, n, ml, (size_t)classes);
  int failures = 0;
  if ((int)st != c.expect) {
    fprintf(stderr, "segment returned %s (%s), expected status %d\n", limbseg_status_name(st), limbseg_last_error(), c.expect);
    failures++;
  }
  size_t mismatches = 0, first = n;
  for (size_t i = 0; i < n; ++i)
    if (labels[i] != ref[i] && mismatches++ == 0) first = i;
  if (mismatches) {
    fprintf(stderr, "%zu of %zu labels differ from the Python reference (first at index %zu: C %d, Python %d)\n",
            mismatches, n, first, labels[first], ref[first]);
    failures++;
  }
  for (int k = 0; k < classes; ++k)
    if (fabs(ml[k] - ref_ml[k]) > 1e-9 * fmax(1.0, fabs(ref_ml[k]))) {
      fprintf(stderr, "volume of class %d: %.12g mL, Python %.12g mL\n", k, ml[k], ref_ml[k]);
      failures++;
    }
  int distinct = 0;
  for (int k = 0; k < classes; ++k) distinct += ml[k] > 0.0;
  printf("%s: %s on %s, %zu voxels, %d classes present, %zu mismatches, status %s\n", argv[1],
         limbseg_model_architecture(m), limbseg_model_providers(m), n, distinct, mismatches, limbseg_status_name(st));
  limbseg_close(m);
  free(voxels); free(ref); free(positions); free(ref_ml); free(labels); free(ml);
  return failures ? 1 : 0;
}
