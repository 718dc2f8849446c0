// The CPU executor's kernels for avx512; see kernels.ipp. Built with this
// instruction set's flags by cmake/parts/cpu.cmake, and only ever called
// after a run-time check that the processor supports it (dispatch.cpp).
#define LSHATTN_CPU_NS k_avx512
#define LSHATTN_CPU_ARCH xsimd::avx512bw
#define LSHATTN_CPU_LEVEL 512
#define LSHATTN_CPU_TABLE table_avx512
#include "kernels.ipp"
