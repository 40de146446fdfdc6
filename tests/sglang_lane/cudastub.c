/* A stand-in for the CUDA driver library (libcuda.so.1) on machines without a GPU.
 *
 * The PyPI sglang-kernel wheel is a CUDA build whose common_ops .so has a NEEDED entry
 * for libcuda.so.1, and SGLang imports sgl_kernel unconditionally, even on CPU. This stub
 * lets that import succeed; every entry point reports CUDA_ERROR_NO_DEVICE (100), so torch
 * and SGLang still see no GPU. Symbols: what `nm -D --undefined-only` lists for the
 * sgl_kernel 0.4.10 shared objects. Built by the Makefile with the machine's compiler:
 *   cc -shared -fPIC -O2 -Wl,-soname,libcuda.so.1 -o libcuda.so.1 cudastub.c
 * Test-only: never shipped.
 */
#include <stddef.h>

#define NO_DEVICE 100

int cuInit(unsigned flags) { (void)flags; return NO_DEVICE; }
int cuDriverGetVersion(int *v) { if (v) *v = 0; return NO_DEVICE; }
int cuDeviceGetCount(int *n) { if (n) *n = 0; return NO_DEVICE; }
int cuGetProcAddress_v2(const char *s, void **p, int v, unsigned long long f, void *st) {
  (void)s; (void)v; (void)f; (void)st; if (p) *p = NULL; return NO_DEVICE;
}
int cuGetProcAddress(const char *s, void **p, int v, unsigned long long f) {
  (void)s; (void)v; (void)f; if (p) *p = NULL; return NO_DEVICE;
}
int cuGetErrorString(int e, const char **s) {
  (void)e; if (s) *s = "CUDA driver stub: no device"; return 0;
}
int cuGetErrorName(int e, const char **s) {
  (void)e; if (s) *s = "CUDA_ERROR_NO_DEVICE"; return 0;
}
int cuPointerGetAttribute(void *d, int a, unsigned long long p) {
  (void)d; (void)a; (void)p; return NO_DEVICE;
}
int cuCtxFromGreenCtx(void **c, void *g) { (void)g; if (c) *c = NULL; return NO_DEVICE; }
int cuCtxPopCurrent_v2(void **c) { if (c) *c = NULL; return NO_DEVICE; }
int cuCtxPushCurrent_v2(void *c) { (void)c; return NO_DEVICE; }
int cuDevResourceGenerateDesc(void **d, void *r, unsigned n) {
  (void)r; (void)n; if (d) *d = NULL; return NO_DEVICE;
}
int cuDevSmResourceSplitByCount(void *r, unsigned *n, const void *i, void *rem, unsigned f,
                                unsigned m) {
  (void)r; (void)i; (void)rem; (void)f; (void)m; if (n) *n = 0; return NO_DEVICE;
}
int cuDeviceGetDevResource(int d, void *r, int t) { (void)d; (void)r; (void)t; return NO_DEVICE; }
int cuGreenCtxCreate(void **g, void *d, int dev, unsigned f) {
  (void)d; (void)dev; (void)f; if (g) *g = NULL; return NO_DEVICE;
}
int cuGreenCtxDestroy(void *g) { (void)g; return NO_DEVICE; }
int cuGreenCtxGetDevResource(void *g, void *r, int t) { (void)g; (void)r; (void)t; return NO_DEVICE; }
int cuStreamCreate(void **s, unsigned f) { (void)f; if (s) *s = NULL; return NO_DEVICE; }
