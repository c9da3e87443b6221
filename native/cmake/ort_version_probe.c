/* Configure-time probe: does the ONNX Runtime library serve the C API version of our headers? */
#include <stdio.h>
#include <onnxruntime_c_api.h>

int main(void) {
  const OrtApiBase* base = OrtGetApiBase();
  const char* version = base->GetVersionString();
  if (base->GetApi(ORT_API_VERSION) == NULL) {
    printf("library %s does not serve the headers' C API %d; use older headers or a newer onnxruntime\n",
           version, ORT_API_VERSION);
    return 1;
  }
  printf("library=%s header_api=%d\n", version, ORT_API_VERSION);
  return 0;
}
