/* threads_check MODEL: one model shared by 4 threads segmenting at once gives the same labels as a
 * sequential run, and each thread keeps its own last-error message. C11 + POSIX threads. */
#include <limbseg.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { X = 50, Y = 44, Z = 4, THREADS = 4, ROUNDS = 2 };
static int16_t vox[X * Y * Z];
static uint8_t expected[X * Y * Z];
static limbseg_model* model;

typedef struct {
  int id, mismatches, failed, own_message_kept;
} job;

static void* worker(void* arg) {
  job* j = arg;
  uint8_t* lab = malloc(sizeof expected);
  limbseg_volume v = {vox, LIMBSEG_DTYPE_INT16, LIMBSEG_LAYOUT_XYZ_C, {X, Y, Z}, {1.0, 1.0, 1.0}};
  for (int r = 0; r < ROUNDS; ++r) {
    if (j->id % 2) {
      /* odd threads also fail on purpose: their message must not leak into other threads */
      limbseg_volume bad = v;
      bad.dims[1] = 0;
      limbseg_segment(model, &bad, NULL, lab, sizeof expected, NULL, 0);
    }
    limbseg_status st = limbseg_segment(model, &v, NULL, lab, sizeof expected, NULL, 0);
    if (st != LIMBSEG_OK) j->failed++;
    for (size_t i = 0; i < sizeof expected; ++i) j->mismatches += lab[i] != expected[i];
  }
  free(lab);
  j->own_message_kept = limbseg_last_error()[0] == '\0';
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  for (int x = 0; x < X; ++x)
    for (int y = 0; y < Y; ++y)
      for (int z = 0; z < Z; ++z) vox[(x * Y + y) * Z + z] = (int16_t)(((x - 25) * (x - 25) + (y - 20) * (y - 20) < 300 ? 800 : 50) + (x * 13 + y * 7 + z) % 31);
  limbseg_options o;
  limbseg_options_init(&o);
  o.intra_op_threads = 1;
  if (limbseg_open(argv[1], &o, &model) != LIMBSEG_OK) {
    fprintf(stderr, "open: %s\n", limbseg_last_error());
    return 1;
  }
  limbseg_volume v = {vox, LIMBSEG_DTYPE_INT16, LIMBSEG_LAYOUT_XYZ_C, {X, Y, Z}, {1.0, 1.0, 1.0}};
  if (limbseg_segment(model, &v, NULL, expected, sizeof expected, NULL, 0) != LIMBSEG_OK) {
    fprintf(stderr, "segment: %s\n", limbseg_last_error());
    return 1;
  }
  pthread_t t[THREADS];
  job jobs[THREADS];
  for (int i = 0; i < THREADS; ++i) {
    jobs[i] = (job){i, 0, 0, 0};
    pthread_create(&t[i], NULL, worker, &jobs[i]);
  }
  int bad = 0;
  for (int i = 0; i < THREADS; ++i) {
    pthread_join(t[i], NULL);
    printf("thread %d: %d failed calls, %d label mismatches, message %s\n", i, jobs[i].failed, jobs[i].mismatches,
           jobs[i].own_message_kept ? "clean after success" : "WRONG");
    bad += jobs[i].failed + jobs[i].mismatches + !jobs[i].own_message_kept;
  }
  limbseg_close(model);
  printf("%s\n", bad ? "FAIL" : "all threads agree with the sequential run");
  return bad ? 1 : 0;
}
