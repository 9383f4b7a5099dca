/* Built only for `make fuzz-native` (-DMMCACHE_FUZZ with gcc's
 * -fsanitize-coverage=trace-cmp): gcc also traces floating-point
 * comparisons, whose hooks the fuzzer's runtime (libFuzzer in atheris) does
 * not define, so the extension would not load. These weak no-ops stand in;
 * a runtime that has them wins. */
#ifndef MMCACHE_FUZZ_STUBS_H
#define MMCACHE_FUZZ_STUBS_H
#ifdef MMCACHE_FUZZ
__attribute__((weak)) void __sanitizer_cov_trace_cmpf(float a, float b) {
    (void)a;
    (void)b;
}
__attribute__((weak)) void __sanitizer_cov_trace_cmpd(double a, double b) {
    (void)a;
    (void)b;
}
#endif
#endif
