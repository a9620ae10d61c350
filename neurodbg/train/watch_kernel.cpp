// The training watcher's figures on a CPU (see watch_kernel.py). A site's output is read once,
// in its forward hook, for its sums, its saturated and non-finite values and each unit's largest
// value; at the end of a recorded step one call reads every gradient (and, on weight steps, every
// weight, keeping a copy for the update's size) for its norm and closes the sites' step into one
// record. Sums are taken in float lanes and added in double, so they cannot overflow; non-finite
// values are counted only where a row's sums are not finite.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

#include "vector_lanes.h"

// elements per task where a tensor is split across threads: a site's output is read right after the
// layer made it, a gradient after the backward pass (whose matrix products ran on every thread)
constexpr int64_t SITE_CHUNK = 1 << 16;
constexpr int64_t NORM_CHUNK = 1 << 14;
constexpr float SATURATION = 0.02f;       // site_stats.SATURATION
enum Kind : int64_t { OTHER = 0, RECTIFIER = 1, SIGMOID = 2, TANH = 3 };
struct Sums {
  double sum = 0, squares = 0, saturated = 0, nonfinite = 0;
};

// sum, sum of squares and (for squashers) saturated count of p[0..n), in float lanes
inline void run_sums(const float* p, int64_t n, int64_t kind, Sums& out) {
  vf s = {}, q = {};
  vi sat = {};
  const vf low = vf{} + SATURATION, high = vf{} + (1.0f - SATURATION);
  int64_t i = 0;
  if (kind == SIGMOID) {
    for (; i + LANES <= n; i += LANES) {
      const vf v = load(p + i);
      s += v;
      q += v * v;
      sat -= (v < low) | (v > high);      // a true comparison is -1 in every bit
    }
  } else if (kind == TANH) {
    for (; i + LANES <= n; i += LANES) {
      const vf v = load(p + i);
      s += v;
      q += v * v;
      sat -= (v > high) | (v < -high);
    }
  } else {
    for (; i + LANES <= n; i += LANES) {
      const vf v = load(p + i);
      s += v;
      q += v * v;
    }
  }
  double ds = 0, dq = 0, dsat = 0;
  for (int k = 0; k < LANES; ++k) {
    ds += s[k];
    dq += q[k];
    dsat += sat[k];
  }
  for (; i < n; ++i) {
    const float v = p[i];
    ds += v;
    dq += static_cast<double>(v) * v;
    if (kind == SIGMOID) dsat += (v < SATURATION) | (v > 1.0f - SATURATION);
    if (kind == TANH) dsat += std::fabs(v) > 1.0f - SATURATION;
  }
  if (!std::isfinite(dq)) {          // a float lane overflowed, or a value is NaN or infinite: redo in double
    ds = dq = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double v = p[j];
      if (!std::isfinite(v)) out.nonfinite += 1;
      ds += v;
      dq += v * v;
    }
  }
  out.sum += ds;
  out.squares += dq;
  out.saturated += dsat;
}

inline void run_peak(const float* p, int64_t n, float* peak) {
  int64_t u = 0;
  for (; u + LANES <= n; u += LANES) {
    const vf v = load(p + u), m = load(peak + u);
    const vf r = v > m ? v : m;
    std::memcpy(peak + u, &r, sizeof(r));
  }
  for (; u < n; ++u) peak[u] = std::max(peak[u], p[u]);
}

inline float block_max(const float* p, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  if (n >= LANES) {
    vf acc = load(p);
    for (i = LANES; i + LANES <= n; i += LANES) {
      const vf v = load(p + i);
      acc = v > acc ? v : acc;
    }
    for (int k = 0; k < LANES; ++k) m = std::max(m, acc[k]);
  }
  for (; i < n; ++i) m = std::max(m, p[i]);
  return m;
}

// rows [r0, r1) of x viewed as [outer, units, inner] (inner = 1 unless a conv output's maps)
void site_rows(const float* x, int64_t r0, int64_t r1, int64_t units, int64_t inner, int64_t kind, Sums& sums,
               float* peak) {
  const int64_t row = units * inner;
  for (int64_t r = r0; r < r1; ++r) {
    const float* p = x + r * row;
    run_sums(p, row, kind, sums);
    if (kind != RECTIFIER) continue;
    if (inner == 1) {
      run_peak(p, units, peak);
    } else {
      for (int64_t u = 0; u < units; ++u) peak[u] = std::max(peak[u], block_max(p + u * inner, inner));
    }
  }
}

}  // namespace

// One forward call's values x (contiguous float32 CPU) of a site added to its step's sums and, for
// rectifiers, to each unit's largest value (peak, one per unit). The units are the last axis, or
// axis 1 of a 4-D (conv) output. Large outputs are split into row blocks across threads.
void add_values(const at::Tensor& x, int64_t kind, Sums& total, float* peak) {
  const int64_t n = x.numel();
  int64_t units, inner = 1;
  if (x.dim() == 4) {
    units = x.size(1);
    inner = x.size(2) * x.size(3);
  } else {
    units = x.dim() >= 1 ? x.size(-1) : 1;
  }
  const int64_t row = std::max<int64_t>(units * inner, 1);
  const int64_t rows = n / row;
  const float* data = x.data_ptr<float>();
  const int64_t rows_per_task = std::max<int64_t>(1, SITE_CHUNK / row);
  const int64_t tasks = (rows + rows_per_task - 1) / rows_per_task;
  if (tasks <= 1) {
    site_rows(data, 0, rows, units, inner, kind, total, peak);
    return;
  }
  std::vector<Sums> part(tasks);
  std::vector<float> peaks(kind == RECTIFIER ? tasks * units : 0, -std::numeric_limits<float>::infinity());
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      site_rows(data, t * rows_per_task, std::min(rows, (t + 1) * rows_per_task), units, inner, kind, part[t],
                kind == RECTIFIER ? peaks.data() + t * units : nullptr);
  });
  for (int64_t t = 0; t < tasks; ++t) {
    total.sum += part[t].sum;
    total.squares += part[t].squares;
    total.saturated += part[t].saturated;
    total.nonfinite += part[t].nonfinite;
    if (kind == RECTIFIER) run_peak(peaks.data() + t * units, units, peak);
  }
}

inline int64_t units_of(const at::Tensor& x) {
  return x.dim() == 4 ? x.size(1) : x.dim() >= 1 ? x.size(-1) : 1;
}

// sum of squares of p[0..n) (of p - q when q is given), in float lanes per NORM_CHUNK, the chunks
// across threads for large tensors and added in double in order (the same result on any thread count)
double squares(const float* p, const float* q, int64_t n) {
  const int64_t tasks = std::max<int64_t>((n + NORM_CHUNK - 1) / NORM_CHUNK, 1);
  std::vector<double> part(tasks, 0.0);
  auto run = [&](int64_t k) {
    const int64_t start = k * NORM_CHUNK, len = std::min(NORM_CHUNK, n - start);
    if (q == nullptr) {
      Sums sums;
      run_sums(p + start, len, OTHER, sums);
      part[k] = sums.squares;
      return;
    }
    vf acc = {};
    int64_t i = 0;
    for (; i + LANES <= len; i += LANES) {
      const vf d = load(p + start + i) - load(q + start + i);
      acc += d * d;
    }
    double total = 0;
    for (int j = 0; j < LANES; ++j) total += acc[j];
    for (; i < len; ++i) {
      const double d = static_cast<double>(p[start + i]) - q[start + i];
      total += d * d;
    }
    part[k] = total;
  };
  if (tasks == 1) {
    run(0);
  } else {
    at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t k = t0; k < t1; ++k) run(k);
    });
  }
  double total = 0;
  for (double x : part) total += x;
  return total;
}

inline void check_floats(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), what,
              ": contiguous float32 CPU tensors");
}

// The L2 norm of each tensor (contiguous float32 CPU), in double: an infinite norm means an
// infinite value, NaN a NaN, never an overflow of the sum.
std::vector<double> norms(const std::vector<at::Tensor>& tensors) {
  for (const auto& t : tensors) check_floats(t, "norms");
  std::vector<double> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(std::sqrt(squares(t.data_ptr<float>(), nullptr, t.numel())));
  return out;
}

// The watcher's state on the C++ side: each watched site's step (sums, each rectifier unit's
// largest value, its last recorded step with a firing) and, for the usual recorded step, the
// whole record — gradient norms read from the parameters' own .grad, weight norms and the copy
// for the update's size, learning rates and every site's figures — appended to a buffer of
// doubles that the run writer takes at a flush. A step's Python work is then one call before the
// optimizer's update and one after (weight steps).
//
// A record is [step, time, grad norm × P, weight norm × P, update norm × P, lr × G, and per site
// (its place in the step's forward order or -1, sum, sum of squares, values, units fired within
// the window or -1, saturated, non-finite, units)]; NaN where a figure was not taken.
class Recorder {
 public:
  Recorder(std::vector<at::Tensor> params, std::vector<int64_t> kinds, int64_t groups)
      : params_(std::move(params)), kinds_(std::move(kinds)), groups_(groups),
        sums_(kinds_.size()), peaks_(kinds_.size()), last_(kinds_.size()) {}

  int64_t width() const { return 2 + 3 * static_cast<int64_t>(params_.size()) + groups_ + 8 * sites(); }

  // One forward call's output of site i; -1 (nothing added) unless x is a contiguous float32 CPU
  // tensor: the caller converts it and calls again.
  int64_t site_add(int64_t i, const at::Tensor& x) {
    TORCH_CHECK(i >= 0 && i < sites(), "site_add: no site ", i);
    if (!(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous())) return -1;
    const int64_t units = units_of(x);
    float* peak = nullptr;
    if (kinds_[i] == RECTIFIER) {
      if (static_cast<int64_t>(peaks_[i].size()) != units) {    // first seen, or the units changed: afresh
        peaks_[i].assign(units, -std::numeric_limits<float>::infinity());
        last_[i].assign(units, NEVER);
      }
      peak = peaks_[i].data();
    }
    if (std::find(order_.begin(), order_.end(), i) == order_.end()) order_.push_back(i);
    Site& site = sums_[i];
    add_values(x, kinds_[i], site.sums, peak);
    site.values += static_cast<double>(x.numel());
    site.units = units;
    return units;
  }

  // The first site, in forward order, with a NaN or infinity in its output this step; -1 if none.
  int64_t first_nonfinite() const {
    for (int64_t i : order_)
      if (sums_[i].sums.nonfinite > 0) return i;
    return -1;
  }

  // The step's figures of the sites it reached, in forward order: (site, sum, sum of squares,
  // values, fired within the window or -1, saturated, non-finite, units) each; the sites start afresh.
  std::vector<double> end_sites(int64_t now, int64_t window) {
    std::vector<double> out;
    out.reserve(order_.size() * 8);
    for (int64_t i : order_) {
      const std::array<double, 7> f = finish(i, now, window);
      out.push_back(static_cast<double>(i));
      out.insert(out.end(), f.begin(), f.end());
    }
    order_.clear();
    return out;
  }

  void discard() {
    for (int64_t i : order_) {
      sums_[i] = Site();
      std::fill(peaks_[i].begin(), peaks_[i].end(), -std::numeric_limits<float>::infinity());
    }
    order_.clear();
  }

  // The usual recorded step, before the optimizer's update: false (nothing changed) where a
  // parameter has no gradient, a tensor is not contiguous float32 on the CPU, or the learning
  // rates are not one per group — the caller then takes the general path.
  bool record(int64_t step, double time, int64_t now, int64_t window, bool weights, const std::vector<double>& lrs) {
    if (static_cast<int64_t>(lrs.size()) != groups_) return false;
    std::vector<at::Tensor> grads;
    grads.reserve(params_.size());
    for (const auto& p : params_) {
      const at::Tensor& g = p.grad();
      if (!g.defined() || !floats(g) || (weights && !floats(p))) return false;
      grads.push_back(g);
    }
    const size_t base = records_.size();
    records_.resize(base + width(), std::numeric_limits<double>::quiet_NaN());
    double* r = records_.data() + base;
    const int64_t P = static_cast<int64_t>(params_.size());
    r[0] = static_cast<double>(step);
    r[1] = time;
    for (int64_t k = 0; k < P; ++k) r[2 + k] = std::sqrt(squares(grads[k].data_ptr<float>(), nullptr, grads[k].numel()));
    has_snapshot_ = false;
    if (weights) {
      if (snapshot_.size() != params_.size()) {
        snapshot_.clear();
        for (const auto& p : params_) snapshot_.push_back(at::empty({p.numel()}, p.options()));
      }
      for (int64_t k = 0; k < P; ++k) {
        const float* w = params_[k].data_ptr<float>();
        r[2 + P + k] = std::sqrt(squares(w, nullptr, params_[k].numel()));
        copy(snapshot_[k].data_ptr<float>(), w, params_[k].numel());
      }
      has_snapshot_ = true;
      last_record_ = static_cast<int64_t>(base);
    }
    for (int64_t g = 0; g < groups_; ++g) r[2 + 3 * P + g] = lrs[g];
    double* s = r + 2 + 3 * P + groups_;
    for (int64_t i = 0; i < sites(); ++i) s[8 * i] = -1;
    for (size_t pos = 0; pos < order_.size(); ++pos) {
      const int64_t i = order_[pos];
      const std::array<double, 7> f = finish(i, now, window);
      s[8 * i] = static_cast<double>(pos);
      std::copy(f.begin(), f.end(), s + 8 * i + 1);
    }
    order_.clear();
    return true;
  }

  // After the optimizer's update of a weight step: ‖w − w before‖ into the record.
  void record_deltas() {
    if (!has_snapshot_) return;
    has_snapshot_ = false;
    const int64_t P = static_cast<int64_t>(params_.size());
    double* r = records_.data() + last_record_;
    for (int64_t k = 0; k < P; ++k) {
      if (!floats(params_[k])) return;
      r[2 + 2 * P + k] = std::sqrt(squares(params_[k].data_ptr<float>(), snapshot_[k].data_ptr<float>(),
                                           params_[k].numel()));
    }
  }

  int64_t pending() const { return static_cast<int64_t>(records_.size()) / width(); }

  // The buffered records as a [records, width] float64 tensor; the buffer starts afresh.
  at::Tensor take() {
    const int64_t n = pending();
    at::Tensor out = at::empty({n, width()}, at::kDouble);
    if (n) std::memcpy(out.data_ptr<double>(), records_.data(), records_.size() * sizeof(double));
    records_.clear();
    has_snapshot_ = false;
    return out;
  }

 private:
  struct Site {
    Sums sums;
    double values = 0;
    int64_t units = 0;
  };
  static constexpr int64_t NEVER = -(int64_t(1) << 40);   // "last fired" of a unit that has not fired yet

  int64_t sites() const { return static_cast<int64_t>(kinds_.size()); }

  // a large tensor's copy in blocks across threads (a language model's weights are hundreds of MB)
  static void copy(float* to, const float* from, int64_t n) {
    at::parallel_for(0, n, NORM_CHUNK * 16, [&](int64_t a, int64_t b) {
      std::memcpy(to + a, from + a, (b - a) * sizeof(float));
    });
  }

  static bool floats(const at::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
  }

  // (sum, sum of squares, values, fired within the window or -1, saturated, non-finite, units),
  // and site i starts afresh; a unit fired when its largest value this step is positive
  std::array<double, 7> finish(int64_t i, int64_t now, int64_t window) {
    Site& site = sums_[i];
    double fired = -1;
    if (kinds_[i] == RECTIFIER) {
      int64_t count = 0;
      for (size_t u = 0; u < peaks_[i].size(); ++u) {
        if (peaks_[i][u] > 0) last_[i][u] = now;
        count += last_[i][u] > now - window;
        peaks_[i][u] = -std::numeric_limits<float>::infinity();
      }
      fired = static_cast<double>(count);
    }
    const std::array<double, 7> out = {site.sums.sum, site.sums.squares, site.values, fired,
                                       site.sums.saturated, site.sums.nonfinite, static_cast<double>(site.units)};
    site = Site();
    return out;
  }

  std::vector<at::Tensor> params_;
  std::vector<int64_t> kinds_;
  int64_t groups_;
  std::vector<Site> sums_;
  std::vector<std::vector<float>> peaks_;
  std::vector<std::vector<int64_t>> last_;
  std::vector<int64_t> order_;
  std::vector<at::Tensor> snapshot_;
  bool has_snapshot_ = false;
  int64_t last_record_ = 0;
  std::vector<double> records_;
};

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("norms", &norms);
  py::class_<Recorder>(m, "Recorder")
      .def(py::init<std::vector<at::Tensor>, std::vector<int64_t>, int64_t>())
      .def("width", &Recorder::width)
      .def("site_add", &Recorder::site_add)
      .def("first_nonfinite", &Recorder::first_nonfinite)
      .def("end_sites", &Recorder::end_sites)
      .def("discard", &Recorder::discard)
      .def("record", &Recorder::record)
      .def("record_deltas", &Recorder::record_deltas)
      .def("pending", &Recorder::pending)
      .def("take", &Recorder::take);
}
