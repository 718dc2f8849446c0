// The CPU executor's kernels for sse2; see kernels.ipp. Built with this
// instruction set's flags by cmake/parts/cpu.cmake, and only ever called
// after a run-time check that the processor supports it (dispatch.cpp).
#define LSHATTN_CPU_NS k_sse2
#define LSHATTN_CPU_ARCH xsimd::sse2
#define LSHATTN_CPU_LEVEL 2
#define LSHATTN_CPU_TABLE table_sse2
#include "kernels.ipp"
