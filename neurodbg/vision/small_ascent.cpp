// A small image's activation-maximisation step outside autograd (small_ascent.py): the spectrum's
// synthesis, the sigmoid and the step's view of the pixels in one call; the gradient of
// variation - objective back to the spectrum and torch's Adam update in another. The matrices
// are tiny (an 8x8 digit: 80 spectrum coordinates, 64 pixels, 98 differences), so plain loops;
// what this saves is the ~10 tensor operations of each, ~4 us apiece inside a step.
#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace {

const float* floats(const at::Tensor& t, int64_t numel, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == numel,
              what, ": expected a contiguous float32 CPU tensor of ", numel, " values");
  return t.data_ptr<float>();
}

}  // namespace

struct SmallAscent {
  // synthesis [P, K]; differences [Q, P]; spectrum, m, v [K]; seen [P]: the model input, written here
  at::Tensor synthesis, differences, spectrum, m, v, seen;
  int64_t channels, pixels, coords, rows;
  double lr, beta1, beta2, eps;
  int64_t steps = 0;
  std::vector<float> p, grad;

  SmallAscent(at::Tensor synthesis_, at::Tensor differences_, at::Tensor spectrum_, at::Tensor m_, at::Tensor v_,
              at::Tensor seen_, int64_t channels_, double lr_, double beta1_, double beta2_, double eps_)
      : synthesis(synthesis_), differences(differences_), spectrum(spectrum_), m(m_), v(v_), seen(seen_),
        channels(channels_), lr(lr_), beta1(beta1_), beta2(beta2_), eps(eps_) {
    const int64_t total = synthesis.size(0);
    coords = synthesis.size(1);
    rows = differences.size(0);
    pixels = total / channels;
    floats(synthesis, total * coords, "synthesis");
    floats(differences, rows * total, "differences");
    floats(spectrum, coords, "spectrum");
    floats(m, coords, "m");
    floats(v, coords, "v");
    floats(seen, total, "seen");
    p.assign(total, 0.0f);
    grad.assign(total, 0.0f);
  }

  // view [pixels, pixels]: row k is where basis pixel k lands in the view
  const float* view_of(const at::Tensor& views, int64_t step) const {
    TORCH_CHECK(views.dim() == 3 && step >= 0 && step < views.size(0), "small ascent: no view for step ", step);
    return floats(views, views.numel(), "views") + step * pixels * pixels;
  }

  // pixels = sigmoid(synthesis @ spectrum); seen[c] = pixels[c] @ view
  void input(const at::Tensor& views, int64_t step) {
    const float* view = view_of(views, step);
    const float* F = synthesis.data_ptr<float>();
    const float* s = spectrum.data_ptr<float>();
    const int64_t total = channels * pixels;
    for (int64_t i = 0; i < total; ++i) {
      float acc = 0.0f;
      const float* row = F + i * coords;
      for (int64_t k = 0; k < coords; ++k) acc += row[k] * s[k];
      p[i] = 1.0f / (1.0f + std::exp(-acc));
    }
    float* out = seen.data_ptr<float>();
    for (int64_t c = 0; c < channels; ++c) {
      float* o = out + c * pixels;
      for (int64_t j = 0; j < pixels; ++j) o[j] = 0.0f;
      for (int64_t k = 0; k < pixels; ++k) {
        const float pk = p[c * pixels + k];
        const float* row = view + k * pixels;
        for (int64_t j = 0; j < pixels; ++j) o[j] += pk * row[j];
      }
    }
  }

  // the spectrum's gradient of |differences @ pixels|_1 - objective (grad_input: the objective's
  // gradient on seen), then one Adam step on the spectrum (torch's fused update's formula)
  void update(const at::Tensor& views, int64_t step, const at::Tensor& grad_input) {
    const float* view = view_of(views, step);
    const int64_t total = channels * pixels;
    const float* gin = floats(grad_input, total, "grad_input");
    const float* D = differences.data_ptr<float>();
    for (int64_t i = 0; i < total; ++i) grad[i] = 0.0f;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = D + r * total;
      float d = 0.0f;
      for (int64_t i = 0; i < total; ++i) d += row[i] * p[i];
      const float sign = d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f);
      if (sign != 0.0f)
        for (int64_t i = 0; i < total; ++i) grad[i] += sign * row[i];
    }
    for (int64_t c = 0; c < channels; ++c) {
      const float* g = gin + c * pixels;
      for (int64_t k = 0; k < pixels; ++k) {
        const float* row = view + k * pixels;
        float acc = 0.0f;
        for (int64_t j = 0; j < pixels; ++j) acc += row[j] * g[j];
        grad[c * pixels + k] -= acc;
      }
    }
    for (int64_t i = 0; i < total; ++i) grad[i] *= p[i] - p[i] * p[i];
    const float* F = synthesis.data_ptr<float>();
    float* s = spectrum.data_ptr<float>();
    float* mm = m.data_ptr<float>();
    float* vv = v.data_ptr<float>();
    ++steps;
    const double step_size = lr / (1.0 - std::pow(beta1, static_cast<double>(steps)));
    const double correction2 = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(steps)));
    for (int64_t k = 0; k < coords; ++k) {
      float g = 0.0f;
      for (int64_t i = 0; i < total; ++i) g += F[i * coords + k] * grad[i];
      mm[k] += static_cast<float>(1.0 - beta1) * (g - mm[k]);
      vv[k] = static_cast<float>(beta2) * vv[k] + static_cast<float>(1.0 - beta2) * g * g;
      const double denom = std::sqrt(static_cast<double>(vv[k])) / correction2 + eps;
      s[k] -= static_cast<float>(step_size * mm[k] / denom);
    }
  }
};

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  pybind11::class_<SmallAscent>(module, "SmallAscent")
      .def(pybind11::init<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, int64_t, double,
                          double, double, double>())
      .def("input", &SmallAscent::input)
      .def("update", &SmallAscent::update);
}
