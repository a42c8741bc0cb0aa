// `LlamaStep`'s decoding step (decode_step.py) in C++: the same computation, bit for bit, without
// Python between the ops. Built once per machine by models/native.py.
//
// The heavy ops are ATen's own, called as the Python step calls them: the int4 and oneDNN
// matmuls, SDPA, SiLU, and the sum inside RMSNorm's mean. The small elementwise ops around
// them (RMSNorm's scaling, rotary embedding, the residual adds, SiLU(gate) * up, the cache
// write, the query padding) are fused loops that round exactly as the ATen ops they replace:
// each op's result is computed in float32 and rounded to the model's dtype (bf16: round to
// nearest even), as ATen's CPU kernels compute every reduced-precision op. Compiled with
// -ffp-contract=off, so no multiply-add is fused where ATen rounds in between.
//
// Why: a batch-1 step of SmolLM2 is ~1,000 small ATen ops plus ~3,000 views; from Python each
// costs microseconds, together ~6 ms of a ~14 ms step. Here the step makes ~10 ATen calls per
// layer (docs/benchmarks.md, `decode-speed`).

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/utils/pybind.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using at::Tensor;
using c10::BFloat16;

// A value of the model's dtype as float32, and float32 rounded back, as ATen converts them.
template <typename T>
inline float widen(T v);
template <>
inline float widen<float>(float v) {
  return v;
}
template <>
inline float widen<BFloat16>(BFloat16 v) {
  uint32_t u = static_cast<uint32_t>(v.x) << 16;
  float r;
  std::memcpy(&r, &u, sizeof r);
  return r;
}
template <typename T>
inline T narrow(float v);
template <>
inline float narrow<float>(float v) {
  return v;
}
template <>
inline BFloat16 narrow<BFloat16>(float v) {
  // c10's round_to_nearest_even, in branch-free arithmetic the compiler vectorizes
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return BFloat16(static_cast<uint16_t>(std::isnan(v) ? 0x7FC0u : rounded), BFloat16::from_bits());
}

Tensor onednn_linear(const Tensor& x, const Tensor& packed) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
          .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                        c10::string_view, torch::List<std::optional<at::Scalar>>,
                        std::optional<c10::string_view>)>();
  return op.call(x, packed, std::nullopt, "none", torch::List<std::optional<at::Scalar>>(), "");
}

// One `Projection` / `Q4Projection` (decode_step.py, q4.py): x (M, K) -> (M, sum N_i). The kinds
// are native.py's PROJ_*.
struct Proj {
  enum Kind : int64_t { kLinear = 0, kOneDNN = 1, kInt4 = 2 };
  int64_t kind = kLinear;
  std::vector<Tensor> tensors;  // kLinear: weights (N_i, K); kOneDNN: one packed weight;
                                // kInt4: packed, scales_zeros for each map

  Tensor operator()(const Tensor& x) const {
    std::vector<Tensor> outs;
    if (kind == kOneDNN) return onednn_linear(x, tensors[0]);
    if (kind == kInt4) {
      for (size_t i = 0; i < tensors.size(); i += 2)
        outs.push_back(at::_weight_int4pack_mm_for_cpu(x, tensors[i], 32, tensors[i + 1]));
    } else {
      for (const auto& w : tensors) outs.push_back(at::linear(x, w));
    }
    return outs.size() == 1 ? outs[0] : at::cat(outs, -1);
  }
};

// `_rms_norm` of rows x (M, d) into out: float32 h = x; h * rsqrt(mean(h^2) + eps) rounded
// to T; weight * it. `squares` (M, 1, d) float32 is scratch; the sum is ATen's (the reduction
// `mean` runs), so it adds in ATen's order.
template <typename T>
void rms_norm(const T* x, const T* weight, T* out, int64_t M, int64_t d, float eps,
              Tensor& squares) {
  float* s = squares.data_ptr<float>();
  for (int64_t i = 0; i < M * d; ++i) {
    float h = widen(x[i]);
    s[i] = h * h;
  }
  Tensor sums = at::sum(squares, {-1}, true);  // (M, 1, 1)
  const float* total = sums.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) {
    float inv = 1.0f / std::sqrt(total[m] / static_cast<float>(d) + eps);
    for (int64_t j = 0; j < d; ++j) {
      T h = narrow<T>(widen(x[m * d + j]) * inv);
      out[m * d + j] = narrow<T>(widen(weight[j]) * widen(h));
    }
  }
}

// `_rotate` of one head's vector (D): x * cos + cat(-x2, x1) * sin, each op rounded to T.
template <typename T>
inline void rotate(const T* x, const T* cos, const T* sin, T* out, int64_t D) {
  const int64_t half = D / 2;
  for (int64_t j = 0; j < D; ++j) {
    float turned = j < half ? -widen(x[j + half]) : widen(x[j - half]);
    T a = narrow<T>(widen(x[j]) * widen(cos[j]));
    T b = narrow<T>(turned * widen(sin[j]));
    out[j] = narrow<T>(widen(a) + widen(b));
  }
}

// x += y, rounded to T (a residual add).
template <typename T>
inline void add_into(T* x, const T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = narrow<T>(widen(x[i]) + widen(y[i]));
}

struct Layer {
  Tensor norm_in, norm_post;  // (d,)
  Proj qkv, out, gate_up, down;
};

class Step {
 public:
  Step(int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t group_rows, double scaling,
       double eps)
      : H(heads), Hkv(kv_heads), D(head_dim), scaling(scaling), eps(static_cast<float>(eps)) {
    group = H / Hkv;
    G = group % group_rows ? group + group_rows - group % group_rows : group;
  }

  void add_layer(Tensor norm_in, Tensor norm_post, std::vector<int64_t> kinds,
                 std::vector<std::vector<Tensor>> projections) {
    TORCH_CHECK(kinds.size() == 4 && projections.size() == 4, "qkv, out, gate_up, down");
    Layer layer{norm_in.contiguous(), norm_post.contiguous()};
    Proj* slots[4] = {&layer.qkv, &layer.out, &layer.gate_up, &layer.down};
    for (int i = 0; i < 4; ++i) *slots[i] = Proj{kinds[i], projections[i]};
    layers.push_back(std::move(layer));
  }

  void set_head(Tensor norm_weight, int64_t kind, std::vector<Tensor> tensors) {
    norm = norm_weight.contiguous();
    head = Proj{kind, std::move(tensors)};
  }

  // x (B, 1, d) the rows' token embeddings; cos, sin (B, D) at each row's position; the runs
  // of `StaticKV.runs` as first rows, stops and additive masks (rows, 1, 1, w); keys, values
  // (L, B, Hkv, C, D) the whole cache; lengths (B,) each row's next column. Writes that
  // column of every layer; returns the last-position logits (B, V).
  Tensor operator()(const Tensor& x, const Tensor& cos, const Tensor& sin,
                    const std::vector<int64_t>& run_first, const std::vector<int64_t>& run_stop,
                    const std::vector<Tensor>& run_mask, const Tensor& keys, const Tensor& values,
                    const Tensor& lengths) {
    TORCH_CHECK(x.device().is_cpu() && keys.is_contiguous() && values.is_contiguous(),
                "the native step runs on a CPU over a contiguous cache");
    TORCH_CHECK(keys.size(0) == static_cast<int64_t>(layers.size()), "one cache layer per layer");
    if (x.scalar_type() == at::kBFloat16) return run<BFloat16>(x, cos, sin, run_first, run_stop,
                                                              run_mask, keys, values, lengths);
    TORCH_CHECK(x.scalar_type() == at::kFloat, "the native step computes bf16 or float32");
    return run<float>(x, cos, sin, run_first, run_stop, run_mask, keys, values, lengths);
  }

 private:
  int64_t H, Hkv, D, group, G;
  double scaling;
  float eps;
  std::vector<Layer> layers;
  Tensor norm;
  Proj head;

  template <typename T>
  Tensor run(const Tensor& x_in, const Tensor& cos_in, const Tensor& sin_in,
             const std::vector<int64_t>& run_first, const std::vector<int64_t>& run_stop,
             const std::vector<Tensor>& run_mask, const Tensor& keys, const Tensor& values,
             const Tensor& lengths_in) {
    const int64_t B = x_in.size(0), d = x_in.size(-1), row = (H + 2 * Hkv) * D;
    const auto opts = x_in.options();
    Tensor x = x_in.reshape({B, d}).clone();  // the residual stream, updated in place
    Tensor normed = at::empty({B, d}, opts);
    Tensor squares = at::empty({B, 1, d}, opts.dtype(at::kFloat));
    Tensor queries = at::zeros({B, Hkv, G, D}, opts);  // GQA-packed, each group padded to G
    Tensor attended = at::empty({B, H * D}, opts);
    const Tensor cos = cos_in.contiguous(), sin = sin_in.contiguous();
    const Tensor lengths = lengths_in.to(at::kLong).contiguous();
    const int64_t* len = lengths.data_ptr<int64_t>();
    T* X = x.data_ptr<T>();
    T* N = normed.data_ptr<T>();
    T* Q = queries.data_ptr<T>();
    T* A = attended.data_ptr<T>();
    const T* C = cos.data_ptr<T>();
    const T* S = sin.data_ptr<T>();
    const auto ks = keys.strides();  // the same as values'
    for (size_t i = 0; i < layers.size(); ++i) {
      const Layer& layer = layers[i];
      Tensor layer_keys = keys.select(0, i), layer_values = values.select(0, i);
      T* K = layer_keys.data_ptr<T>();
      T* V = layer_values.data_ptr<T>();

      // attention block: norm, q|k|v, rotary q and k, the cache's new column
      rms_norm<T>(X, layer.norm_in.data_ptr<T>(), N, B, d, eps, squares);
      Tensor qkv = layer.qkv(normed);  // (B, (H + 2 Hkv) D)
      const T* P = qkv.data_ptr<T>();
      for (int64_t b = 0; b < B; ++b) {
        const T *p = P + b * row, *c = C + b * D, *s = S + b * D;
        for (int64_t h = 0; h < H; ++h)
          rotate<T>(p + h * D, c, s, Q + ((b * Hkv + h / group) * G + h % group) * D, D);
        for (int64_t h = 0; h < Hkv; ++h) {
          const int64_t col = b * ks[1] + h * ks[2] + len[b] * ks[3];
          rotate<T>(p + (H + h) * D, c, s, K + col, D);
          std::memcpy(V + col, p + (H + Hkv + h) * D, D * sizeof(T));
        }
      }
      for (size_t r = 0; r < run_first.size(); ++r) {  // one SDPA call per run of one width
        const int64_t a = run_first[r], rows = run_stop[r] - a, w = run_mask[r].size(-1);
        Tensor o = at::scaled_dot_product_attention(
                       queries.narrow(0, a, rows), layer_keys.narrow(0, a, rows).narrow(2, 0, w),
                       layer_values.narrow(0, a, rows).narrow(2, 0, w), run_mask[r], 0.0, false,
                       scaling)
                       .contiguous();  // (rows, Hkv, G, D)
        const T* O = o.data_ptr<T>();
        for (int64_t b = 0; b < rows; ++b)
          for (int64_t h = 0; h < H; ++h)
            std::memcpy(A + ((a + b) * H + h) * D, O + ((b * Hkv + h / group) * G + h % group) * D,
                        D * sizeof(T));
      }
      Tensor o = layer.out(attended);  // (B, d)
      add_into<T>(X, o.data_ptr<T>(), B * d);

      // MLP block: norm, gate|up, SiLU(gate) * up, down
      rms_norm<T>(X, layer.norm_post.data_ptr<T>(), N, B, d, eps, squares);
      Tensor gate_up = layer.gate_up(normed);  // (B, 2 I)
      const int64_t I = gate_up.size(1) / 2;
      Tensor act = at::silu(gate_up.narrow(1, 0, I));  // (B, I), ATen's SiLU
      Tensor product = at::empty({B, I}, opts);
      const T *SA = act.data_ptr<T>(), *GU = gate_up.data_ptr<T>();
      T* M = product.data_ptr<T>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < I; ++j)
          M[b * I + j] = narrow<T>(widen(SA[b * I + j]) * widen(GU[b * 2 * I + I + j]));
      Tensor down = layer.down(product);  // (B, d)
      add_into<T>(X, down.data_ptr<T>(), B * d);
    }
    rms_norm<T>(X, norm.data_ptr<T>(), N, B, d, eps, squares);
    return head(normed);  // (B, V)
  }
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  py::class_<Step>(m, "Step")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, double, double>())
      .def("add_layer", &Step::add_layer)
      .def("set_head", &Step::set_head)
      .def("__call__", &Step::operator(), py::call_guard<py::gil_scoped_release>());
}
