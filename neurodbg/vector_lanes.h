// GCC/Clang vector types: whatever vector instructions the build targets, without intrinsics (the
// auto-vectoriser leaves lane-array reductions like the kernels' mostly scalar). Put in place in a
// kernel's source by cpp_kernel.with_headers (#include "vector_lanes.h").
constexpr int LANES = 16;
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
