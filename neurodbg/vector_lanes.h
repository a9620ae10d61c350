// GCC/Clang vector types: whatever vector instructions the build targets, without intrinsics (the
// auto-vectoriser leaves lane-array reductions like the kernels' mostly scalar). Put in place in a
// kernel's source by cpp_kernel.with_headers (#include "vector_lanes.h"), which includes <immintrin.h>
// at its top.
constexpr int LANES = 16;
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// bit k set where lane k of a comparison is true (one mask instruction where the build has one)
inline uint32_t lane_mask(const vi& v) {
#if defined(__AVX512F__)
  __m512i x;
  std::memcpy(&x, &v, sizeof x);
  return _mm512_test_epi32_mask(x, x);
#elif defined(__AVX2__)
  __m256 half[2];
  std::memcpy(half, &v, sizeof half);
  return static_cast<uint32_t>(_mm256_movemask_ps(half[0])) | (static_cast<uint32_t>(_mm256_movemask_ps(half[1])) << 8);
#else
  uint32_t mask = 0;
  for (int k = 0; k < LANES; ++k) mask |= static_cast<uint32_t>(v[k] != 0) << k;
  return mask;
#endif
}
