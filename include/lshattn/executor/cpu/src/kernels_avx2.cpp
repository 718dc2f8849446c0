// The CPU executor's kernels for avx2; see kernels.ipp. Built with this
// instruction set's flags by cmake/parts/cpu.cmake, and only ever called
// after a run-time check that the processor supports it (dispatch.cpp).
#define LSHATTN_CPU_NS k_avx2
#define LSHATTN_CPU_ARCH xsimd::fma3<xsimd::avx2>
#define LSHATTN_CPU_LEVEL 256
#define LSHATTN_CPU_TABLE table_avx2
#include "kernels.ipp"
