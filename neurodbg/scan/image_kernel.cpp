// All of one image site's per-batch scan statistics in one C++ call, its state kept in the
// SiteStats' own tensors and updated in place (see image_kernel.py): the sums behind mean, std
// and fraction active, the top and bottom exemplar images with their feature maps, the four tail
// buffers, the histogram of the sampled images and the random sample's feature maps.
//
// A convolution's output [B, C, H, W] is read as it lies: each (image, channel) map is H*W
// contiguous values, a pooled or logit vector [B, N] one value. Columns (channels) are shared
// among threads; each column's state belongs to one thread, so nothing is locked. An image's
// map is folded into vector lanes; the lanes are compared with the column's thresholds at once
// and only a map that may enter an exemplar set or a tail buffer is looked at value by value.
//
// Exemplars are merged as they are found, by the eager code's total order (key descending, then
// image index ascending), so the kept keys, ids and feature maps are the eager ones; the tail
// buffers keep the same values; the histogram bins are torch.bucketize's against the published
// edges (a lookup by a value's leading bits, then the exact edge); the float sums are added in
// another order (vector lanes over a few images in float, then double), so they differ in rounding.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace {

constexpr float FP16_MAX = 65504.0f;
constexpr float INF = std::numeric_limits<float>::infinity();
constexpr int64_t FOLD_ROWS = 32;    // images summed in float lanes before the lanes go into double

inline float hi_of(float m, float x) { return (x > m || x != x) ? x : m; }   // NaN-propagating, as amax
inline float lo_of(float m, float x) { return (x < m || x != x) ? x : m; }
inline at::Half fp16(float x) { return at::Half(x != x ? x : std::min(std::max(x, -FP16_MAX), FP16_MAX)); }
// the next float up or down (as std::nextafter, which as a library call cost more than a map's sums)
inline float step(float x, bool up) {
  if (x != x || x == (up ? INF : -INF)) return x;
  if (x == 0.0f) return up ? std::numeric_limits<float>::denorm_min() : -std::numeric_limits<float>::denorm_min();
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits = ((x > 0.0f) == up) ? bits + 1 : bits - 1;   // away from zero adds to the magnitude
  std::memcpy(&x, &bits, sizeof x);
  return x;
}
inline float above(float x) { return step(x, true); }
inline float below(float x) { return step(x, false); }

#include "vector_lanes.h"  // vf, vi, load

#include "tail_side.h"  // TailSide: one side of a tail buffer, updated in place

// n activations into fp16 (clamped to its range, NaN kept), 8 at a time where the build has F16C
inline void to_fp16(const float* __restrict x, at::Half* __restrict dst, int64_t n) {
  int64_t t = 0;
#if defined(__F16C__)
  const __m256 low = _mm256_set1_ps(-FP16_MAX), high = _mm256_set1_ps(FP16_MAX);
  for (; t + 8 <= n; t += 8) {
    // (max and min return their second operand when either is NaN: the value itself)
    const __m256 v = _mm256_min_ps(high, _mm256_max_ps(low, _mm256_loadu_ps(x + t)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + t), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; t < n; ++t) dst[t] = fp16(x[t]);
}

// A [k, W, L] fp16 store (any strides; the positions' stride is 1 where L > 1).
struct Store {
  at::Half* data;
  int64_t s_slot, s_col;
  at::Half* at(int64_t slot, int64_t col) const { return data + slot * s_slot + col * s_col; }
};

// One ExemplarSet (exemplars.py): neuron-major ranked keys and ids [W, k], the store row of each
// rank [W, k], and the store.
struct Exemplars {
  float* keys;
  int64_t* ids;
  int64_t* slots;
  Store store;
  int64_t k;

  // whether (key, id) ranks before rank r (key descending, then id ascending)
  bool beats(int64_t col, int64_t r, float key, int64_t id) const {
    const float kept = keys[col * k + r];
    return key > kept || (key == kept && id < ids[col * k + r]);
  }

  // Whether the map (key, id, its values x) entered. With `pending` (the column's [k]: per store row,
  // the map to be copied into it), its values are copied by `copy_pending` once the batch is done,
  // so an entrant that a later image of the batch pushes out again is never copied (early in a scan
  // most are: a batch of 256 brings ~70 entrants for 20 ranks).
  bool offer(int64_t col, float key, int64_t id, const float* x, int64_t length, const float** pending = nullptr) {
    if (!beats(col, k - 1, key, id)) return false;
    float* kk = keys + col * k;
    int64_t* ii = ids + col * k;
    int64_t* ss = slots + col * k;
    int64_t r = k - 1;
    while (r > 0 && beats(col, r - 1, key, id)) --r;
    const int64_t freed = ss[k - 1];   // the dropped rank's store row takes the entrant
    for (int64_t q = k - 1; q > r; --q) {
      kk[q] = kk[q - 1];
      ii[q] = ii[q - 1];
      ss[q] = ss[q - 1];
    }
    kk[r] = key;
    ii[r] = id;
    ss[r] = freed;
    if (pending)
      pending[freed] = x;
    else
      to_fp16(x, store.at(freed, col), length);
    return true;
  }

  void copy_pending(int64_t col, const float** pending, int64_t length) {
    for (int64_t slot = 0; slot < k; ++slot)
      if (pending[slot]) to_fp16(pending[slot], store.at(slot, col), length);
  }
};

// Histogram bins exactly as torch.bucketize(x, inner_edges, right=True): a table by a float's
// top 16 bits (sign, exponent, 7 bits of mantissa) gives the bin of the lowest value sharing
// them, and the edges above it are then stepped over (a bin is far wider than such a range, so
// at most one step). Built once per process and set of edges.
struct Bins {
  std::vector<float> edges;      // inner edges, float32 (rounded up from the float64 ones)
  std::vector<uint8_t> table;    // 65536 entries
  int64_t bins;

  explicit Bins(std::vector<float> inner) : edges(std::move(inner)), table(1 << 16), bins(edges.size() + 1) {
    TORCH_CHECK(bins <= 256, "at most 256 histogram bins");
    for (uint32_t prefix = 0; prefix < (1u << 16); ++prefix) {
      const bool negative = prefix & 0x8000u;
      const uint32_t bits = negative ? (prefix << 16) | 0xFFFFu : prefix << 16;
      float lowest;
      std::memcpy(&lowest, &bits, sizeof lowest);
      if (lowest != lowest) lowest = negative ? -INF : INF;   // (a NaN itself is binned apart)
      table[prefix] = static_cast<uint8_t>(std::upper_bound(edges.begin(), edges.end(), lowest) - edges.begin());
    }
  }

  int64_t of(float x) const {
    if (x != x) return bins - 1;   // NaN: the last bin, as the search puts it
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    int64_t bin = table[bits >> 16];
    while (bin < bins - 1 && x >= edges[bin]) ++bin;
    return bin;
  }

  static std::shared_ptr<const Bins> shared(const at::Tensor& inner) {
    static std::mutex lock;
    static std::map<std::vector<float>, std::shared_ptr<const Bins>> made;
    auto edges = inner.to(at::kFloat).contiguous();
    std::vector<float> key(edges.data_ptr<float>(), edges.data_ptr<float>() + edges.numel());
    std::lock_guard<std::mutex> guard(lock);
    auto& bins = made[key];
    if (!bins) bins = std::make_shared<const Bins>(key);
    return bins;
  }
};

// Per column: lanes of float sums over a few images, then double.
struct Sums {
  vf s1{}, s2{};
  vi positive{};
  float t1 = 0.0f, t2 = 0.0f;   // the positions past the last whole vector
  int64_t tp = 0;
  double d1 = 0.0, d2 = 0.0;
  int64_t dp = 0;

  void fold() {
    float q1 = t1, q2 = t2;
    for (int k = 0; k < LANES; ++k) q1 += s1[k], q2 += s2[k], dp += positive[k];
    d1 += q1;
    d2 += q2;
    dp += tp;
    s1 = vf{}, s2 = vf{}, positive = vi{};
    t1 = t2 = 0.0f;
    tp = 0;
  }
};

template <typename T>
T* pointer(const at::Tensor& t, at::ScalarType dtype, const char* what) {
  TORCH_CHECK(t.scalar_type() == dtype && t.device().is_cpu(), what, ": wrong dtype or device");
  return static_cast<T*>(t.data_ptr());
}

void check_rows(const at::Tensor& t, int64_t width, int64_t columns, const char* what) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == width && t.size(1) == columns && t.stride(1) == 1 &&
                  t.stride(0) == columns,
              what, " must be row-contiguous [width, ", columns, "]");
}

void check_vector(const at::Tensor& t, int64_t n, const char* what) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n && t.is_contiguous(), what, " must be contiguous [", n, "]");
}

Store store_of(const at::Tensor& t, int64_t k, int64_t width, int64_t length, const char* what) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == k && t.size(1) == width && t.size(2) == length &&
                  (length == 1 || t.stride(2) == 1),
              what, " must be [k, width, length] with contiguous positions");
  return {pointer<at::Half>(t, at::kHalf, what), t.stride(0), t.stride(1)};
}

}  // namespace

// One image site's scan state (site_stats.SiteStats), updated in place by `update`.
// state: top and bottom exemplar sets (keys, ids, slots, store each), the tail sides upper, lower,
// upper_sample, lower_sample (keys, fill, bound each), totals (sum, sum of squares, count > 0),
// the histogram [W, bins] int64, the random sample (hashes, ids, slots, store).
class ImageSite {
 public:
  ImageSite(std::vector<at::Tensor> state, int64_t width, int64_t length, at::Tensor inner_edges)
      : state_(std::move(state)), width_(width), length_(length), bins_(Bins::shared(inner_edges)) {
    TORCH_CHECK(state_.size() == 4 + 4 + 12 + 3 + 1 + 4, "image site state: 28 tensors");
    for (int e = 0; e < 2; ++e) {
      const at::Tensor* s = &state_[4 * e];
      const int64_t k = s[0].size(1);
      check_rows(s[0], width, k, "exemplar keys");
      check_rows(s[1], width, k, "exemplar ids");
      check_rows(s[2], width, k, "exemplar slots");
      TORCH_CHECK(k > 0, "exemplar sets keep at least one image");
      exemplars_[e] = {pointer<float>(s[0], at::kFloat, "exemplar keys"), pointer<int64_t>(s[1], at::kLong, "ids"),
                       pointer<int64_t>(s[2], at::kLong, "slots"), store_of(s[3], k, width, length, "exemplar store"),
                       k};
    }
    for (int side = 0; side < 4; ++side) {
      const at::Tensor* s = &state_[8 + 3 * side];
      check_rows(s[0], width, s[0].size(1), "tail keys");
      check_vector(s[1], width, "tail fill");
      check_vector(s[2], width, "tail bound");
      TORCH_CHECK(s[0].size(1) > 0 && s[0].size(1) % 2 == 0, "tail keys hold 2 x capacity");
      tails_[side] = {pointer<float>(s[0], at::kFloat, "tail keys"), pointer<int64_t>(s[1], at::kLong, "tail fill"),
                      pointer<float>(s[2], at::kFloat, "tail bound"), s[0].size(1), side % 2 == 0};
    }
    for (int i = 0; i < 3; ++i) check_vector(state_[20 + i], width, "totals");
    total_ = pointer<double>(state_[20], at::kDouble, "sum");
    total_sq_ = pointer<double>(state_[21], at::kDouble, "sum of squares");
    active_ = pointer<int64_t>(state_[22], at::kLong, "count");
    check_rows(state_[23], width, bins_->bins, "histogram");
    hist_ = pointer<int64_t>(state_[23], at::kLong, "histogram");
    random_k_ = state_[24].numel();
    for (int i = 0; i < 3; ++i) check_vector(state_[24 + i], random_k_, "random sample");
    random_store_ = store_of(state_[27], random_k_, width, length, "random store");
  }

  // acts: [B, width, H, W] (H * W = length) or [B, width] (length 1), contiguous float32; ids and
  // hashes [B] int64; flags [B] uint8: bit 0 the sampled tails read the image, bit 1 the histogram.
  void update(const at::Tensor& acts, const at::Tensor& ids_in, const at::Tensor& hashes_in,
              const at::Tensor& flags_in) {
    TORCH_CHECK(acts.is_contiguous() && acts.size(0) == ids_in.numel() && acts.size(1) == width_ &&
                    acts.numel() == acts.size(0) * width_ * length_ && (acts.dim() == 4 || acts.dim() == 2),
                "acts must be a contiguous [B, width, H, W] or [B, width] float32 tensor of this site");
    const int64_t B = acts.size(0);
    check_vector(ids_in, B, "ids");
    check_vector(hashes_in, B, "hashes");
    check_vector(flags_in, B, "flags");
    const float* a = pointer<float>(acts, at::kFloat, "acts");
    const int64_t* ids = pointer<int64_t>(ids_in, at::kLong, "ids");
    const uint8_t* flags = pointer<uint8_t>(flags_in, at::kByte, "flags");
    const auto entrants = random_merge(pointer<int64_t>(hashes_in, at::kLong, "hashes"), ids, B);
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t grain = std::max<int64_t>(1, (width_ + threads - 1) / threads);
    at::parallel_for(0, width_, grain, [&](int64_t begin, int64_t end) {
      if (length_ == 1)
        vectors(a, ids, flags, B, begin, end);
      else
        maps(a, ids, flags, B, begin, end);
      for (const auto& [row, slot] : entrants)
        for (int64_t c = begin; c < end; ++c) {
          to_fp16(a + (row * width_ + c) * length_, random_store_.at(slot, c), length_);
        }
    });
  }

 private:
  // The random sample (random_exemplars.py): the k images of smallest hash. Returns the batch's
  // entrants as (row, store row), the store rows of the ranks that dropped out.
  std::vector<std::pair<int64_t, int64_t>> random_merge(const int64_t* hashes, const int64_t* ids, int64_t B) {
    std::vector<std::pair<int64_t, int64_t>> entrants;
    if (random_k_ == 0) return entrants;
    int64_t* kept_hash = state_[24].data_ptr<int64_t>();
    int64_t* kept_id = state_[25].data_ptr<int64_t>();
    int64_t* kept_slot = state_[26].data_ptr<int64_t>();
    const int64_t limit = kept_hash[random_k_ - 1];   // kept in hash order: the largest
    struct Entry { int64_t hash, id, slot, row; };
    std::vector<Entry> pool;
    for (int64_t r = 0; r < random_k_; ++r) pool.push_back({kept_hash[r], kept_id[r], kept_slot[r], -1});
    for (int64_t b = 0; b < B; ++b)
      if (hashes[b] < limit) pool.push_back({hashes[b], ids[b], -1, b});
    if (static_cast<int64_t>(pool.size()) == random_k_) return entrants;
    std::stable_sort(pool.begin(), pool.end(), [](const Entry& x, const Entry& y) { return x.hash < y.hash; });
    std::vector<int64_t> freed;
    for (size_t i = random_k_; i < pool.size(); ++i)
      if (pool[i].row < 0) freed.push_back(pool[i].slot);
    size_t next = 0;
    for (int64_t r = 0; r < random_k_; ++r) {
      Entry& e = pool[r];
      if (e.row >= 0) {
        e.slot = freed[next++];
        entrants.emplace_back(e.row, e.slot);
      }
      kept_hash[r] = e.hash;
      kept_id[r] = e.id;
      kept_slot[r] = e.slot;
    }
    return entrants;
  }

  // What a map's extremes must reach to be looked at: its max >= `top` for the top set (the
  // lowest kept key, or just past it where a tie cannot win: the image's index is not below the
  // lowest rank's), >= `upper` for the upper tail (just past its bound); its min <= `bottom` and
  // `lower` likewise. They change only when something enters, so they are kept per column (worked
  // out per map, with nextafter, they cost more than the map's sums).
  struct Edges {
    float top[2], bottom[2];            // [a tie can win]
    float upper[2], lower[2];           // [the sampled tails read the image too]
    float upper_sample, lower_sample;   // the sampled tails alone
    float hi[2][2], lo[2][2];           // [sampled][tie]: the nearest of them
    int64_t top_id, bottom_id;          // the lowest ranks' image indices
  };

  Edges edges(int64_t c) const {
    const Exemplars &top = exemplars_[0], &bottom = exemplars_[1];
    const int64_t lowest_top = c * top.k + top.k - 1, lowest_bottom = c * bottom.k + bottom.k - 1;
    const float t = top.keys[lowest_top], m = -bottom.keys[lowest_bottom];
    Edges e;
    e.top[1] = t, e.top[0] = above(t), e.bottom[1] = m, e.bottom[0] = below(m);
    e.upper_sample = above(tails_[2].bound[c]), e.lower_sample = below(tails_[3].bound[c]);
    e.upper[0] = above(tails_[0].bound[c]), e.upper[1] = std::min(e.upper[0], e.upper_sample);
    e.lower[0] = below(tails_[1].bound[c]), e.lower[1] = std::max(e.lower[0], e.lower_sample);
    for (int sampled = 0; sampled < 2; ++sampled)
      for (int tie = 0; tie < 2; ++tie) {
        e.hi[sampled][tie] = std::min(e.top[tie], e.upper[sampled]);
        e.lo[sampled][tie] = std::max(e.bottom[tie], e.lower[sampled]);
      }
    e.top_id = top.ids[lowest_top], e.bottom_id = bottom.ids[lowest_bottom];
    return e;
  }

  // The values of a map beyond tail `side`'s threshold into it; whether that raised the threshold.
  bool into_tail(int side, int64_t c, const float* x) {
    const float before = tails_[side].bound[c];
    tails_[side].insert_beyond(c, x, length_);
    return tails_[side].bound[c] != before;
  }

  // A value (a vector's column) that may enter something; whether an edge moved.
  bool enter_value(int64_t c, const float* x, int64_t id, bool sampled) {
    bool moved = exemplars_[0].offer(c, *x, id, x, 1) | exemplars_[1].offer(c, -*x, id, x, 1);
    if (*x > tails_[0].bound[c]) moved |= into_tail(0, c, x);
    if (*x < tails_[1].bound[c]) moved |= into_tail(1, c, x);
    if (sampled && *x > tails_[2].bound[c]) moved |= into_tail(2, c, x);
    if (sampled && *x < tails_[3].bound[c]) moved |= into_tail(3, c, x);
    return moved;
  }

  // Feature maps: columns [begin, end) of every image, image by image (an image's maps lie side by side).
  void maps(const float* a, const int64_t* ids, const uint8_t* flags, int64_t B, int64_t begin, int64_t end) {
    const int64_t L = length_, whole = L / LANES * LANES;
    std::vector<Sums> sums(end - begin);
    std::vector<Edges> cached;
    for (int64_t c = begin; c < end; ++c) cached.push_back(edges(c));
    const int64_t k_top = exemplars_[0].k, k_bottom = exemplars_[1].k;
    std::vector<const float*> pending_top((end - begin) * k_top), pending_bottom((end - begin) * k_bottom);
    for (int64_t b = 0; b < B; ++b) {
      const bool sampled = flags[b] & 1, histogram = flags[b] & 2, fold = (b + 1) % FOLD_ROWS == 0;
      const int64_t id = ids[b];
      for (int64_t c = begin; c < end; ++c) {
        const float* __restrict x = a + (b * width_ + c) * L;
        Sums& s = sums[c - begin];
        vf h = vf{} - INF, l = vf{} + INF;
        float th = -INF, tl = INF;   // the positions past the last whole vector
        for (int64_t t = 0; t < whole; t += LANES) {
          const vf v = load(x + t);
          h = (v > h) | (v != v) ? v : h;
          l = (v < l) | (v != v) ? v : l;
          s.s1 += v;
          s.s2 += v * v;
          s.positive -= v > 0.0f;   // a true comparison is -1
        }
        for (int64_t t = whole; t < L; ++t) {
          const float v = x[t];
          th = hi_of(th, v);
          tl = lo_of(tl, v);
          s.t1 += v;
          s.t2 += v * v;
          s.tp += v > 0.0f;
        }
        const Edges& e = cached[c - begin];
        const bool tie_top = id < e.top_id, tie_bottom = id < e.bottom_id;
        // whether the max reaches `edge`, the min `edge` from above
        auto reaches = [&](float edge) { return th >= edge || (whole && lane_mask(h >= edge)); };
        auto falls_to = [&](float edge) { return tl <= edge || (whole && lane_mask(l <= edge)); };
        if (reaches(e.hi[sampled][tie_top]) || falls_to(e.lo[sampled][tie_bottom])) {
          // a map holding a NaN has NaN extremes (as amax and amin), which beat no threshold
          const bool broken = th != th || tl != tl || (whole && lane_mask(h != h));
          bool moved = false;
          if (!broken && reaches(e.top[tie_top])) {
            float hi = th;
            for (int k = 0; k < (whole ? LANES : 0); ++k) hi = hi_of(hi, h[k]);
            moved |= exemplars_[0].offer(c, hi, id, x, L, &pending_top[(c - begin) * k_top]);
          }
          if (!broken && falls_to(e.bottom[tie_bottom])) {
            float lo = tl;
            for (int k = 0; k < (whole ? LANES : 0); ++k) lo = lo_of(lo, l[k]);
            moved |= exemplars_[1].offer(c, -lo, id, x, L, &pending_bottom[(c - begin) * k_bottom]);
          }
          if (!broken) {
            if (reaches(e.upper[0])) moved |= into_tail(0, c, x);
            if (falls_to(e.lower[0])) moved |= into_tail(1, c, x);
            if (sampled && reaches(e.upper_sample)) moved |= into_tail(2, c, x);
            if (sampled && falls_to(e.lower_sample)) moved |= into_tail(3, c, x);
          }
          if (moved) cached[c - begin] = edges(c);
        }
        if (histogram) {
          int64_t* counts = hist_ + c * bins_->bins;
          for (int64_t t = 0; t < L; ++t) ++counts[bins_->of(x[t])];
        }
        if (fold) s.fold();
      }
    }
    for (int64_t c = begin; c < end; ++c) {
      exemplars_[0].copy_pending(c, &pending_top[(c - begin) * k_top], L);
      exemplars_[1].copy_pending(c, &pending_bottom[(c - begin) * k_bottom], L);
      Sums& s = sums[c - begin];
      s.fold();
      total_[c] += s.d1;
      total_sq_[c] += s.d2;
      active_[c] += s.dp;
    }
  }

  // Vectors (a pooled feature, logits: one value per image and column): the columns of an image in
  // vector lanes, against their edges side by side (a tie's edge: a tie that cannot win is then
  // turned away by the exact comparisons).
  void vectors(const float* a, const int64_t* ids, const uint8_t* flags, int64_t B, int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    std::vector<float> hi_edge[2] = {std::vector<float>(n), std::vector<float>(n)};
    std::vector<float> lo_edge[2] = {std::vector<float>(n), std::vector<float>(n)};
    auto refresh = [&](int64_t c) {
      const Edges e = edges(c);
      for (int r = 0; r < 2; ++r) hi_edge[r][c - begin] = e.hi[r][1], lo_edge[r][c - begin] = e.lo[r][1];
    };
    for (int64_t c = begin; c < end; ++c) refresh(c);
    std::vector<float> f1(n, 0.0f), f2(n, 0.0f);
    std::vector<int32_t> fp(n, 0);
    std::vector<double> d1(n, 0.0), d2(n, 0.0);
    for (int64_t b = 0; b < B; ++b) {
      const bool sampled = flags[b] & 1, histogram = flags[b] & 2;
      const int64_t id = ids[b];
      const float* __restrict row = a + b * width_ + begin;
      const float *he = hi_edge[sampled].data(), *le = lo_edge[sampled].data();
      int64_t c = 0;
      for (; c + LANES <= n; c += LANES) {
        const vf v = load(row + c);
        vf s1 = load(f1.data() + c), s2 = load(f2.data() + c);
        s1 += v;
        s2 += v * v;
        std::memcpy(f1.data() + c, &s1, sizeof s1);
        std::memcpy(f2.data() + c, &s2, sizeof s2);
        for (int k = 0; k < LANES; ++k) fp[c + k] += row[c + k] > 0.0f;
        for (uint32_t hot = lane_mask((v >= load(he + c)) | (v <= load(le + c))); hot; hot &= hot - 1) {
          const int64_t k = c + __builtin_ctz(hot);
          if (enter_value(begin + k, row + k, id, sampled)) refresh(begin + k);
        }
      }
      for (; c < n; ++c) {
        const float v = row[c];
        f1[c] += v;
        f2[c] += v * v;
        fp[c] += v > 0.0f;
        if ((v >= he[c] || v <= le[c]) && enter_value(begin + c, row + c, id, sampled)) refresh(begin + c);
      }
      if (histogram)
        for (c = 0; c < n; ++c) ++hist_[(begin + c) * bins_->bins + bins_->of(row[c])];
      if ((b + 1) % FOLD_ROWS == 0 || b + 1 == B)
        for (c = 0; c < n; ++c) d1[c] += f1[c], d2[c] += f2[c], f1[c] = f2[c] = 0.0f;
    }
    for (int64_t c = 0; c < n; ++c) {
      total_[begin + c] += d1[c];
      total_sq_[begin + c] += d2[c];
      active_[begin + c] += fp[c];
    }
  }

  std::vector<at::Tensor> state_;   // (kept: the pointers below are into these)
  int64_t width_, length_;
  std::shared_ptr<const Bins> bins_;
  Exemplars exemplars_[2];
  TailSide tails_[4];
  double* total_;
  double* total_sq_;
  int64_t* active_;
  int64_t* hist_;
  int64_t random_k_;
  Store random_store_;
};

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  pybind11::class_<ImageSite>(module, "ImageSite")
      .def(pybind11::init<std::vector<at::Tensor>, int64_t, int64_t, at::Tensor>())
      .def("update", &ImageSite::update);
}
