// One pass over a layer's activations for all its per-batch scan statistics on a CPU
// (see layer_kernel.py): the sums behind mean, std and fraction active, each sequence's
// extremes and the exemplar candidates they make, and the tail buffers' updates. The same
// candidates in the same order as the eager code in site_stats.py and exemplars.py, and the
// same kept tail values as tails.py; only the float sums are added in another order (here:
// per block of tokens in float, the blocks in double; a channel-major map per chunk of its
// positions in float vector lanes, the chunks in double).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

namespace {

constexpr float FP16_MAX = 65504.0f;
// columns per tile: a tile's per-block state (seven float rows) stays in L1
constexpr int64_t TILE = 256;
// positions per map from which a channel-major layer is read as it lies (2 Intel cores: a 14x14
// map of 256 channels 1.3 ms for a batch of 32 against 1.8 copied into rows; a 7x7 map of 512
// 1.5 against 1.0)
constexpr int64_t CHANNEL_ROWS = 128;

// NaN-propagating extremes, as torch.maximum / torch.minimum (x != x: x is NaN)
inline float hi_of(float m, float x) { return (x > m || x != x) ? x : m; }
inline float lo_of(float m, float x) { return (x < m || x != x) ? x : m; }

inline at::Half fp16(float x) { return at::Half(x != x ? x : std::min(std::max(x, -FP16_MAX), FP16_MAX)); }

struct Candidates {
  std::vector<int64_t> cols, rows;
  std::vector<float> keys;
  std::vector<at::Half> acts;  // [n, length]
};

// One tile's results, in column order.
struct Tile {
  int64_t first_col = 0;
  Candidates exemplars[2];      // top, bottom
};

#include "vector_lanes.h"  // vf, vi, load: the channel-major rows' vector lanes

#include "tail_side.h"  // TailSide: one side of a tail buffer, updated in place

// Start of each column's entries once `cols` (within [first, first + n)) are grouped by
// column, keeping their order within a column: a counting sort's offsets.
std::vector<int64_t> column_offsets(const std::vector<int64_t>& cols, int64_t first, int64_t n) {
  std::vector<int64_t> start(n + 1, 0);
  for (int64_t col : cols) start[col - first + 1]++;
  for (int64_t c = 0; c < n; ++c) start[c + 1] += start[c];
  return start;
}

Candidates by_column(const Candidates& raw, int64_t first, int64_t n, int64_t length) {
  auto start = column_offsets(raw.cols, first, n);
  const size_t found = raw.cols.size();
  Candidates out;
  out.cols.resize(found);
  out.rows.resize(found);
  out.keys.resize(found);
  out.acts.resize(found * length);
  for (size_t i = 0; i < found; ++i) {
    int64_t at = start[raw.cols[i] - first]++;
    out.cols[at] = raw.cols[i];
    out.rows[at] = raw.rows[i];
    out.keys[at] = raw.keys[i];
    std::copy_n(raw.acts.begin() + i * length, length, out.acts.begin() + at * length);
  }
  return out;
}

template <typename T>
at::Tensor to_tensor(const std::vector<T>& values, at::ScalarType dtype, at::IntArrayRef shape) {
  auto out = at::empty(shape, at::TensorOptions().dtype(dtype));
  if (!values.empty()) std::memcpy(out.data_ptr(), values.data(), values.size() * sizeof(T));
  return out;
}

template <typename T, typename Part>
std::vector<T> joined(const std::vector<Tile>& tiles, Part part) {
  std::vector<T> out;
  for (const auto& tile : tiles) {
    const auto& values = part(tile);
    out.insert(out.end(), values.begin(), values.end());
  }
  return out;
}

const float* floats(const at::Tensor& t, int64_t width, std::vector<at::Tensor>& keep) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == width, "per-neuron thresholds must be [width]");
  keep.push_back(t.to(at::kFloat).contiguous());
  return keep.back().data_ptr<float>();
}

// One neuron's counted values in one sequence (channel-major layout: contiguous): extremes,
// sums and the count of x > 0, in vector lanes; each chunk of 256 values is summed in float
// and the chunks in double (as the row layout sums its blocks).
inline void row_stats(const float* __restrict x, int64_t count, float& hi, float& lo, double& sum, double& squares,
                      int64_t& positive) {
  constexpr int64_t CHUNK = 256;
  hi = -std::numeric_limits<float>::infinity(), lo = std::numeric_limits<float>::infinity();
  int64_t t = 0;
  if (count >= LANES) {
    vf h = load(x), l = h;
    vi p = {};
    for (int64_t c0 = 0; c0 + LANES <= count; c0 += CHUNK) {
      const int64_t stop = std::min(count, c0 + CHUNK);
      vf a1 = {}, a2 = {};
      for (t = c0; t + LANES <= stop; t += LANES) {
        const vf v = load(x + t);
        h = (v > h) | (v != v) ? v : h;          // NaN-propagating, as hi_of / lo_of
        l = (v < l) | (v != v) ? v : l;
        a1 += v;
        a2 += v * v;
        p -= v > 0.0f;                           // a true comparison is -1
      }
      float q1 = 0.0f, q2 = 0.0f;
      for (int k = 0; k < LANES; ++k) q1 += a1[k], q2 += a2[k];
      sum += q1;
      squares += q2;
    }
    for (int k = 0; k < LANES; ++k) {
      hi = hi_of(hi, h[k]);
      lo = lo_of(lo, l[k]);
      positive += p[k];
    }
  }
  float q1 = 0.0f, q2 = 0.0f;
  int64_t more = 0;
  for (; t < count; ++t) {
    const float v = x[t];
    hi = hi_of(hi, v);
    lo = lo_of(lo, v);
    q1 += v;
    q2 += v * v;
    more += v > 0.0f;
  }
  sum += q1;
  squares += q2;
  positive += more;
}

}  // namespace

// acts [B, L, W] float32, in blocks of `size` counted tokens (all but position 0 when
// skip_first). lowest_keys: the top and bottom exemplar sets' lowest kept keys [W] (a
// sequence's key is its max, or minus its min). tails: each tail side's keys, fill and bound
// (see TailSide), updated in place; signs: each side's direction (+1 upper, -1 lower); reads
// [S * B]: 1 where side s reads sequence b. totals: [W] float64 sum of x, float64 sum of
// x^2, int64 count of x > 0 over the counted tokens, added to in place.
// Returns, per exemplar set (top, bottom): cols, rows, keys, acts [n, L] fp16 (clamped to
// fp16's range), by column then row.
std::vector<at::Tensor> layer_stats(const at::Tensor& acts_in, int64_t size, bool skip_first,
                                    std::vector<at::Tensor> lowest_keys, std::vector<at::Tensor> tails,
                                    std::vector<int64_t> reads, std::vector<int64_t> signs,
                                    std::vector<at::Tensor> totals) {
  TORCH_CHECK(acts_in.dim() == 3 && acts_in.scalar_type() == at::kFloat && acts_in.device().is_cpu(),
              "acts must be a [B, L, W] float32 CPU tensor");
  // a convolution's [B, C, H, W] output seen as [B, H*W, C] is channel-major in memory: a map of
  // CHANNEL_ROWS positions or more is read as it lies (each neuron's positions contiguous), a
  // smaller one copied into rows first (its rows are too short to amortise their folds)
  const bool by_rows = acts_in.is_contiguous() || !acts_in.transpose(1, 2).is_contiguous() ||
                       acts_in.size(1) < CHANNEL_ROWS;
  auto acts = by_rows ? acts_in.contiguous() : acts_in;
  const int64_t B = acts.size(0), L = acts.size(1), W = acts.size(2);
  const int64_t skip = skip_first ? 1 : 0, counted = L - skip;
  TORCH_CHECK(tails.size() % 3 == 0, "tails: keys, fill, bound per side");
  const int64_t S = static_cast<int64_t>(tails.size() / 3);
  TORCH_CHECK(size > 0 && counted % size == 0, "block size must divide the counted length");
  TORCH_CHECK(lowest_keys.size() == 2, "two exemplar sets");
  TORCH_CHECK(static_cast<int64_t>(signs.size()) == S && static_cast<int64_t>(reads.size()) == S * B,
              "one sign and one row of reads per tail side");
  TORCH_CHECK(totals.size() == 3 && totals[0].scalar_type() == at::kDouble && totals[1].scalar_type() == at::kDouble &&
                  totals[2].scalar_type() == at::kLong,
              "totals: float64 sum, float64 sum of squares, int64 count");
  for (const auto& t : totals) TORCH_CHECK(t.is_contiguous() && t.numel() == W, "totals must be contiguous [width]");
  const int64_t n_blocks = counted / size;
  const float* a = acts.data_ptr<float>();
  std::vector<at::Tensor> keep;
  const float* thr[2] = {floats(lowest_keys[0], W, keep), floats(lowest_keys[1], W, keep)};
  std::vector<TailSide> sides;
  for (int64_t s = 0; s < S; ++s) {
    const at::Tensor &keys = tails[3 * s], &fill = tails[3 * s + 1], &bound = tails[3 * s + 2];
    TORCH_CHECK(keys.dim() == 2 && keys.size(0) == W && keys.size(1) % 2 == 0 && keys.size(1) > 0 &&
                    keys.is_contiguous() && keys.scalar_type() == at::kFloat,
                "tail keys must be contiguous float32 [width, 2 x capacity]");
    TORCH_CHECK(fill.is_contiguous() && fill.numel() == W && fill.scalar_type() == at::kLong &&
                    bound.is_contiguous() && bound.numel() == W && bound.scalar_type() == at::kFloat,
                "tail fill and bound must be contiguous [width] int64 and float32");
    sides.push_back({keys.data_ptr<float>(), fill.data_ptr<int64_t>(), bound.data_ptr<float>(), keys.size(1),
                     signs[s] > 0});
  }
  double* total = totals[0].data_ptr<double>();
  double* total_sq = totals[1].data_ptr<double>();
  int64_t* active = totals[2].data_ptr<int64_t>();

  // tiles of at most TILE columns; a narrower layer (an image's early convolutions: 64 channels)
  // is cut into one tile per thread, multiples of 8 columns, so every core has work
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t tile = std::min(TILE, std::max<int64_t>(8, ((W + threads - 1) / threads + 7) / 8 * 8));
  std::vector<Tile> tiles;
  std::mutex tiles_lock;
  if (!by_rows) {
    // channel-major [B, W, L] memory: each (sequence, neuron) row of L values is read in turn; the
    // same candidates in the same order and the same tail inserts per neuron as the row layout's
    at::parallel_for(0, W, tile, [&](int64_t begin, int64_t end) {
      for (int64_t c0 = begin; c0 < end; c0 += tile) {
        const int64_t n = std::min(end, c0 + tile) - c0;
        std::vector<double> s1(n, 0.0), s2(n, 0.0);
        std::vector<int64_t> sp(n, 0);
        Tile raw;
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t c = 0; c < n; ++c) {
            const int64_t col = c0 + c;
            const float* __restrict row = a + (b * W + col) * L;
            const float* __restrict counted_row = row + skip;
            float seq_hi, seq_lo;
            row_stats(counted_row, counted, seq_hi, seq_lo, s1[c], s2[c], sp[c]);
            // tails: a row whose extreme beats a side's threshold is read again value by value, in
            // order, each against the threshold as compactions raise it (the row layout's inserts)
            for (int64_t s = 0; s < S; ++s) {
              if (!reads[s * B + b]) continue;
              TailSide& side = sides[s];
              if (!(side.upper ? seq_hi > side.bound[col] : seq_lo < side.bound[col])) continue;
              side.insert_beyond(col, counted_row, counted);
            }
            for (int e = 0; e < 2; ++e) {
              const float key = e == 0 ? seq_hi : -seq_lo;
              if (!(key >= thr[e][col])) continue;
              Candidates& out = raw.exemplars[e];
              out.cols.push_back(col);
              out.rows.push_back(b);
              out.keys.push_back(key);
              const size_t at = out.acts.size();
              out.acts.resize(at + L);
              for (int64_t t = 0; t < L; ++t) out.acts[at + t] = fp16(row[t]);
            }
          }
        }
        for (int64_t c = 0; c < n; ++c) {
          total[c0 + c] += s1[c];
          total_sq[c0 + c] += s2[c];
          active[c0 + c] += sp[c];
        }
        Tile done;
        done.first_col = c0;
        for (int e = 0; e < 2; ++e) done.exemplars[e] = by_column(raw.exemplars[e], c0, n, L);
        std::lock_guard<std::mutex> guard(tiles_lock);
        tiles.push_back(std::move(done));
      }
    });
  } else {
    at::parallel_for(0, W, tile, [&](int64_t begin, int64_t end) {
      std::vector<double> sums(2 * TILE);
      std::vector<float> state(9 * TILE);
      double* __restrict s1 = sums.data();
      double* __restrict s2 = s1 + TILE;
      float* __restrict bh = state.data();         // this block's max, min, partial sums
      float* __restrict bl = bh + TILE;
      float* __restrict q1 = bl + TILE;
      float* __restrict q2 = q1 + TILE;
      float* __restrict qp = q2 + TILE;
      float* __restrict sp = qp + TILE;            // count of x > 0 (exact in float for a batch)
      float* __restrict seq_hi = sp + TILE;        // this sequence's max and min
      float* __restrict seq_lo = seq_hi + TILE;
      uint8_t hot[TILE + 8] = {0};   // (past n it stays 0, so whole words can be read)
      for (int64_t c0 = begin; c0 < end; c0 += tile) {
        const int64_t n = std::min(end, c0 + tile) - c0;
        std::fill(sums.begin(), sums.end(), 0.0);
        std::fill(sp, sp + TILE, 0.0f);
        Tile raw;
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t j = 0; j < n_blocks; ++j) {
            const float* __restrict first = a + (b * L + skip + j * size) * W + c0;
            // the block's extremes and float partial sums, then the partials into the double sums
            for (int64_t c = 0; c < n; ++c) {
              const float x = first[c];
              bh[c] = x;
              bl[c] = x;
              q1[c] = x;
              q2[c] = x * x;
              qp[c] = x > 0.0f ? 1.0f : 0.0f;
            }
            for (int64_t t = 1; t < size; ++t) {
              const float* __restrict row = first + t * W;
              for (int64_t c = 0; c < n; ++c) {
                const float x = row[c];
                bh[c] = hi_of(bh[c], x);
                bl[c] = lo_of(bl[c], x);
                q1[c] += x;
                q2[c] += x * x;
                qp[c] += x > 0.0f ? 1.0f : 0.0f;
              }
            }
            for (int64_t c = 0; c < n; ++c) {
              s1[c] += q1[c];
              s2[c] += q2[c];
              sp[c] += qp[c];
            }
            if (j == 0) {
              std::copy_n(bh, n, seq_hi);
              std::copy_n(bl, n, seq_lo);
            } else {
              for (int64_t c = 0; c < n; ++c) {
                seq_hi[c] = hi_of(seq_hi[c], bh[c]);
                seq_lo[c] = lo_of(seq_lo[c], bl[c]);
              }
            }
            // tails: only blocks whose extreme beats the threshold are read token by token; the
            // comparison is one vector pass into `hot`, then 8 columns per word are skipped at once
            for (int64_t s = 0; s < S; ++s) {
              if (!reads[s * B + b]) continue;
              TailSide& side = sides[s];
              const float* bound = side.bound + c0;   // (raised by compactions as tokens come in)
              if (side.upper) {
                for (int64_t c = 0; c < n; ++c) hot[c] = bh[c] > bound[c];
              } else {
                for (int64_t c = 0; c < n; ++c) hot[c] = bl[c] < bound[c];
              }
              for (int64_t word = 0; word < n; word += 8) {
                uint64_t any;
                std::memcpy(&any, hot + word, sizeof any);
                if (!any) continue;
                for (int64_t c = word; c < std::min(n, word + 8); ++c) {
                  if (!hot[c]) continue;
                  for (int64_t t = 0; t < size; ++t) {
                    const float x = first[t * W + c];
                    if (side.upper ? x > bound[c] : x < bound[c]) side.insert(c0 + c, x);
                  }
                }
              }
            }
          }
          // this sequence's exemplar candidates (key >= the lowest kept key: ties may enter),
          // copied while its activations are still in cache: position by position, each row read
          // once for all of the sequence's candidates (a candidate's values are W apart; read one
          // candidate at a time, a long sequence of narrow rows, as an image's, costs a cache
          // line per value)
          for (int e = 0; e < 2; ++e) {
            Candidates& out = raw.exemplars[e];
            const size_t first = out.cols.size();
            for (int64_t c = 0; c < n; ++c) {
              const float key = e == 0 ? seq_hi[c] : -seq_lo[c];
              if (!(key >= thr[e][c0 + c])) continue;
              out.cols.push_back(c0 + c);
              out.rows.push_back(b);
              out.keys.push_back(key);
            }
            const size_t found = out.cols.size() - first;
            if (found == 0) continue;
            out.acts.resize(out.acts.size() + found * L);
            at::Half* __restrict dst = out.acts.data() + first * L;
            const int64_t* cols = out.cols.data() + first;
            for (int64_t t = 0; t < L; ++t) {
              const float* __restrict row = a + (b * L + t) * W;
              for (size_t k = 0; k < found; ++k) dst[k * L + t] = fp16(row[cols[k]]);
            }
          }
        }
        for (int64_t c = 0; c < n; ++c) {
          total[c0 + c] += s1[c];
          total_sq[c0 + c] += s2[c];
          active[c0 + c] += static_cast<int64_t>(sp[c]);
        }
        Tile tile;
        tile.first_col = c0;
        for (int e = 0; e < 2; ++e) tile.exemplars[e] = by_column(raw.exemplars[e], c0, n, L);
        std::lock_guard<std::mutex> guard(tiles_lock);
        tiles.push_back(std::move(tile));
      }
    });
  }

  std::sort(tiles.begin(), tiles.end(), [](const Tile& x, const Tile& y) { return x.first_col < y.first_col; });
  std::vector<at::Tensor> out;
  for (int e = 0; e < 2; ++e) {
    auto cols = joined<int64_t>(tiles, [e](const Tile& t) -> const auto& { return t.exemplars[e].cols; });
    const int64_t found = static_cast<int64_t>(cols.size());
    out.push_back(to_tensor(cols, at::kLong, {found}));
    out.push_back(to_tensor(joined<int64_t>(tiles, [e](const Tile& t) -> const auto& { return t.exemplars[e].rows; }),
                            at::kLong, {found}));
    out.push_back(to_tensor(joined<float>(tiles, [e](const Tile& t) -> const auto& { return t.exemplars[e].keys; }),
                            at::kFloat, {found}));
    out.push_back(to_tensor(joined<at::Half>(tiles, [e](const Tile& t) -> const auto& { return t.exemplars[e].acts; }),
                            at::kHalf, {found, L}));
  }
  return out;
}
