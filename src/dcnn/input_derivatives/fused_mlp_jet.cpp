// Fused Taylor-mode pass of an MLP on CPU: forward propagation of values and derivative slabs and
// its hand-written backward pass, with each layer's elementwise work done in one sweep over its
// rows (the Python version in dcnn/input_derivatives/fused_mlp.py makes about ten sweeps and 25 torch calls per
// layer). Built and loaded by dcnn/input_derivatives/native.py; the math and the row-block layout are those of
// fused_mlp._FusedMLPJet:
//
//   rows 0..N-1 are values (the first n of them jet points), then M = K + S slabs of n rows each:
//   K first derivatives along the directions, S pure second derivatives along the requested ones.
//   A hidden layer computes pre = [z = h W^T + b; p W^T], then
//   out = [s(z); s'(z) pre_slab], out_second_k += s''(z) pre_first[q_k]^2.
// Each layer runs block by block (256 value rows and their slab rows) in one parallel region per
// direction: the block's products, then its elementwise terms (and in the backward pass its
// weight-gradient share), while the block is in cache.
// A layer keeps only its output block and its slabs' pre-activations (IReLU also z); s' and the
// higher terms are formed again from s (tanh) or z (IReLU) in the backward pass, which keeps the
// memory a training step streams through small.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/library.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <type_traits>
#include <vector>

namespace {

// Activation codes, shared with dcnn/input_derivatives/native.py.
constexpr int64_t kTanh = 0;
constexpr int64_t kIrelu = 1;

struct Shape {
  int64_t rows, n, first, second, width;  // N, n, K, S, H
  int64_t slabs() const { return first + second; }
};

// e^x in float32 without a library call, so that loops over it vectorise: x = k ln 2 + r with
// |r| <= ln 2 / 2, e^r by its Taylor polynomial to degree 7 (truncation error below 1e-8
// relative, under float32's rounding), times 2^k formed in the exponent bits. |x| is capped at 87,
// where float32 would leave the normal range; NaN stays NaN. Vectorised with -fno-trapping-math.
inline float exp_float(float x) {
  x = x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x);
  const float k = std::floor(x * 1.44269504f + 0.5f);
  const float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;  // ln 2 in two parts
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 +
                                          r * (1.0f / 720 + r * (1.0f / 5040)))))));
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// tanh(z) = (1 - e^(-2 z)) / (1 + e^(-2 z)); torch's own tanh is about 5x slower than this on AVX2.
template <typename T>
inline T tanh_value(T z) {
  T e;
  if constexpr (std::is_same_v<T, float>) {
    e = exp_float(-2.0f * z);
  } else {
    e = std::exp(T(-2) * z);
  }
  return (T(1) - e) / (T(1) + e);
}

// An activation's terms over `count` elements. Forward: from the pre-activation z.
// Backward: from what the forward pass kept, s for tanh and z for IReLU; nothing else is stored.
// The highest term (s'' forward, s''' backward) is formed only for second derivatives (`Second`).
template <int64_t Act, typename T>
struct Terms {
  template <bool Second>
  static void forward(const T* __restrict__ in, T* __restrict__ s, T* __restrict__ ds,
                      T* __restrict__ d2, int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
      if constexpr (Act == kTanh) {
        const T value = tanh_value(in[i]);
        s[i] = value;
        ds[i] = T(1) - value * value;
        if constexpr (Second) d2[i] = T(-2) * value * ds[i];
      } else {
        const T r = in[i] > T(0) ? in[i] : T(0);
        s[i] = T(0.5) * r * r;
        ds[i] = r;
        if constexpr (Second) d2[i] = in[i] > T(0) ? T(1) : T(0);
      }
    }
  }
  // First to third derivative. tanh: 1 - s^2, -2 s s1, s1 (4 - 6 s1); IReLU: max(z, 0), [z > 0], 0.
  template <bool Second>
  static void backward(const T* __restrict__ kept, T* __restrict__ ds, T* __restrict__ d2,
                       T* __restrict__ d3, int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
      if constexpr (Act == kTanh) {
        ds[i] = T(1) - kept[i] * kept[i];
        d2[i] = T(-2) * kept[i] * ds[i];
        if constexpr (Second) d3[i] = ds[i] * (T(4) - T(6) * ds[i]);
      } else {
        ds[i] = kept[i] > T(0) ? kept[i] : T(0);
        d2[i] = kept[i] > T(0) ? T(1) : T(0);
        if constexpr (Second) d3[i] = T(0);
      }
    }
  }
};

// A layer's slab pre-activations on a chunk of jet rows: rows of the (M, n, H) block of a hidden
// layer, or for the first layer (whose input x has derivative v_k) the columns v_k W^T, the same
// for every row, copied into a chunk-sized buffer so that every loop below runs over one flat
// range of (rows x H) elements.
template <typename T>
class SlabRows {
 public:
  SlabRows(const Shape& shape, const T* slab_pre, const T* columns, int64_t chunk_rows)
      : shape_(shape), slab_pre_(slab_pre), columns_(columns) {
    if (columns) expanded_.resize(shape.first * chunk_rows * shape.width);
  }
  bool has_second() const { return columns_ == nullptr; }  // the first layer's are zero
  void select(int64_t begin, int64_t end) {  // jet rows [begin, end)
    begin_ = begin;
    if (!columns_) return;
    const int64_t H = shape_.width, rows = end - begin;
    for (int64_t k = 0; k < shape_.first; ++k) {
      for (int64_t r = 0; r < rows; ++r) {
        std::copy(columns_ + k * H, columns_ + (k + 1) * H, expanded_.data() + (k * rows + r) * H);
      }
    }
    rows_ = rows;
  }
  const T* slab(int64_t m) const {
    if (columns_) return expanded_.data() + m * rows_ * shape_.width;
    return slab_pre_ + (m * shape_.n + begin_) * shape_.width;
  }

 private:
  const Shape& shape_;
  const T* slab_pre_;
  const T* columns_;
  std::vector<T> expanded_;
  int64_t begin_ = 0, rows_ = 0;
};

constexpr int64_t kChunkRows = 32;  // rows whose temporaries stay in L1 together

// Forward on value rows [begin, end): out = s(z) there and, for the jet rows among them,
// out_slab_m = s' pre_m (pre of the first layer's second slabs is zero), then
// out_second_k += s'' pre_first[q_k]^2.
template <int64_t Act, typename T>
void activate_rows(const Shape& shape, const T* in, T* out, const T* slab_pre, const T* columns,
                   const int64_t* requested, int64_t begin, int64_t end) {
  const int64_t H = shape.width, n = shape.n, N = shape.rows;
  std::vector<T> buffer(2 * kChunkRows * H);
  T *ds = buffer.data(), *d2 = ds + kChunkRows * H;
  SlabRows<T> src(shape, slab_pre, columns, kChunkRows);
  for (int64_t b = begin; b < end; b += kChunkRows) {
    const int64_t e = std::min(end, b + kChunkRows);
    if (shape.second > 0) {
      Terms<Act, T>::template forward<true>(in + b * H, out + b * H, ds, d2, (e - b) * H);
    } else {
      Terms<Act, T>::template forward<false>(in + b * H, out + b * H, ds, d2, (e - b) * H);
    }
    const int64_t jet_end = std::min(e, n);
    if (b >= jet_end) continue;
    const int64_t count = (jet_end - b) * H;
    src.select(b, jet_end);
    for (int64_t m = 0; m < shape.slabs(); ++m) {
      T* __restrict__ o = out + N * H + (m * n + b) * H;
      if (m >= shape.first && !src.has_second()) {
        std::fill(o, o + count, T(0));
        continue;
      }
      const T* __restrict__ p = src.slab(m);
      for (int64_t i = 0; i < count; ++i) o[i] = ds[i] * p[i];
    }
    for (int64_t k = 0; k < shape.second; ++k) {
      T* __restrict__ o = out + N * H + ((shape.first + k) * n + b) * H;
      const T* __restrict__ p = src.slab(requested[k]);
      for (int64_t i = 0; i < count; ++i) o[i] += d2[i] * p[i] * p[i];
    }
  }
}

// Backward through one activation on value rows [begin, end): turns the gradient block `grad`
// (w.r.t. the layer's outputs) into the gradient w.r.t. its pre-activations, in place. For the
// first layer (`grad_columns` given) the slab gradients are not needed further; instead their
// contributions to the gradient of the columns v_k W^T are added to `grad_columns` (K, H).
template <int64_t Act, typename T>
void activation_backward_rows(const Shape& shape, const T* kept, const T* slab_pre,
                              const T* columns, const int64_t* requested, T* grad,
                              T* grad_columns, int64_t begin, int64_t end) {
  const int64_t H = shape.width, n = shape.n, N = shape.rows, S = shape.second;
  const int64_t chunk = kChunkRows * H;
  std::vector<T> buffer((5 + S) * chunk);
  T *ds = buffer.data(), *d2 = ds + chunk, *d3 = d2 + chunk, *coupling = d3 + chunk;
  T *product = coupling + chunk, *cross = product + chunk;
  SlabRows<T> src(shape, slab_pre, columns, kChunkRows);
  // out_m = s' pre_m: d/dz gets s'' sum_m g_m pre_m (the first layer's second slabs have pre 0).
  const int64_t coupled = src.has_second() ? shape.slabs() : shape.first;
  T* grad_slabs = grad + N * H;
  for (int64_t b = begin; b < end; b += kChunkRows) {
    const int64_t e = std::min(end, b + kChunkRows);
    if (S > 0) {
      Terms<Act, T>::template backward<true>(kept + b * H, ds, d2, d3, (e - b) * H);
    } else {
      Terms<Act, T>::template backward<false>(kept + b * H, ds, d2, d3, (e - b) * H);
    }
    const int64_t jet_end = std::max(b, std::min(e, n));
    T* __restrict__ gv = grad + b * H;
    for (int64_t i = (jet_end - b) * H; i < (e - b) * H; ++i) gv[i] *= ds[i];  // value-only rows
    if (b == jet_end) continue;
    const int64_t count = (jet_end - b) * H;
    src.select(b, jet_end);
    std::fill(coupling, coupling + count, T(0));
    if (S > 0) std::fill(product, product + count, T(0));
    for (int64_t m = 0; m < coupled; ++m) {
      const T* __restrict__ g = grad_slabs + (m * n + b) * H;
      const T* __restrict__ p = src.slab(m);
      for (int64_t i = 0; i < count; ++i) coupling[i] += g[i] * p[i];
    }
    // out_second_k += s'' p_q^2: d/dz gets s''' p_q^2 g, d/dp_q gets 2 s'' p_q g.
    for (int64_t k = 0; k < S; ++k) {
      const T* __restrict__ g = grad_slabs + ((shape.first + k) * n + b) * H;
      const T* __restrict__ p = src.slab(requested[k]);
      T* __restrict__ c = cross + k * chunk;
      for (int64_t i = 0; i < count; ++i) {
        product[i] += g[i] * p[i] * p[i];
        c[i] = T(2) * d2[i] * p[i] * g[i];
      }
    }
    if (S > 0) {
      for (int64_t i = 0; i < count; ++i) {
        gv[i] = ds[i] * gv[i] + d2[i] * coupling[i] + d3[i] * product[i];
      }
    } else {
      for (int64_t i = 0; i < count; ++i) gv[i] = ds[i] * gv[i] + d2[i] * coupling[i];
    }
    if (grad_columns) {  // d/dcolumn_k = sum over rows of s' g_k (+ the cross terms)
      for (int64_t r = 0; r < jet_end - b; ++r) {
        for (int64_t k = 0; k < shape.first; ++k) {
          const T* __restrict__ g = grad_slabs + (k * n + b + r) * H;
          T* __restrict__ gc = grad_columns + k * H;
          for (int64_t h = 0; h < H; ++h) gc[h] += ds[r * H + h] * g[h];
        }
        for (int64_t k = 0; k < S; ++k) {
          T* __restrict__ gc = grad_columns + requested[k] * H;
          for (int64_t h = 0; h < H; ++h) gc[h] += cross[k * chunk + r * H + h];
        }
      }
      continue;
    }
    for (int64_t m = 0; m < shape.slabs(); ++m) {
      T* __restrict__ g = grad_slabs + (m * n + b) * H;
      for (int64_t i = 0; i < count; ++i) g[i] *= ds[i];
    }
    for (int64_t k = 0; k < S; ++k) {
      T* __restrict__ g = grad_slabs + (requested[k] * n + b) * H;
      const T* __restrict__ c = cross + k * chunk;
      for (int64_t i = 0; i < count; ++i) g[i] += c[i];
    }
  }
}

// Matrix products of row blocks. float32 ones run on oneDNN's small-matrix kernel
// (cpublas::brgemm): on (256 x 40) x (40 x 40) blocks it measured 70-78 GFLOP/s per core where
// MKL's sgemm behind at::mm gave 45-67 (AMD EPYC, AVX2). float64 (the tests' reference dtype) and
// torch builds without that kernel use at::mm on views of the block. torch announces the
// float32 kernel with CPUBLAS_BRGEMM_F32F32F32; older releases (torch >= 2.4 is allowed) lack it.
// c (M, N) = a (M, K) b (K, N), plus c if `add`; row-major with leading dimensions.
void brgemm_float(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
                  bool add, const float* a, const float* b, float* c) {
#ifdef CPUBLAS_BRGEMM_F32F32F32
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add, a, b, c, false);
#else
  TORCH_CHECK(false, "dcnn fused MLP jet: this torch has no float32 brgemm");
#endif
}

bool brgemm_available() {
  static const bool available = [] {
    try {
      float a = 2.0f, b = 3.0f, c = 0.0f;
      brgemm_float(1, 1, 1, 1, 1, 1, false, &a, &b, &c);
      return c == 6.0f;
    } catch (const std::exception&) {
      return false;
    }
  }();
  return available;
}

constexpr int64_t kProductRows = 256;  // rows per block: products and terms run on it in cache

// Runs f(begin, end) on ranges of value rows that split the work evenly between the threads: a
// jet row comes with its M slab rows, so an even split of the rows would load the threads that
// take the jet rows more (by a third at 1,000 jet and 600 value-only points).
template <typename F>
void parallel_rows(const Shape& shape, const F& f) {
  const int64_t per_jet_row = 1 + shape.slabs(), jet_work = shape.n * per_jet_row;
  const int64_t total = jet_work + shape.rows - shape.n;
  const int64_t parts = std::clamp<int64_t>(total / kProductRows, 1, at::get_num_threads());
  auto boundary = [&](int64_t part) {  // first row of a part
    const int64_t work = total * part / parts;
    return work <= jet_work ? work / per_jet_row : shape.n + (work - jet_work);
  };
  at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
    for (int64_t part = first; part < last; ++part) f(boundary(part), boundary(part + 1));
  });
}

// out (rows, N) = a (rows, K) b (K, N) on one thread (inside a parallel task), row-major.
template <typename T>
void block_product(const T* a, int64_t rows, int64_t K, const T* b, int64_t N, T* out) {
  if (rows == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (brgemm_available()) {
      brgemm_float(rows, N, K, K, N, N, false, a, b, out);
      return;
    }
  }
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor result = at::from_blob(out, {rows, N}, options);
  at::mm_out(result, at::from_blob(const_cast<T*>(a), {rows, K}, options),
             at::from_blob(const_cast<T*>(b), {K, N}, options));
}

// Forward through one hidden layer, block by block of value rows (with their jet rows' slabs):
// z = h W^T + b, the slabs' p W^T (the first layer has its columns instead), then the activation,
// while the block is still in cache. `h` has `inputs` columns.
template <typename T>
void forward_layer(int64_t act, const Shape& shape, const T* h, int64_t inputs,
                   const T* weight_t, const T* bias, T* z, T* slab_pre, T* out,
                   const T* columns, const int64_t* requested) {
  const int64_t H = shape.width, N = shape.rows, n = shape.n;
  parallel_rows(shape, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b += kProductRows) {
      const int64_t e = std::min(end, b + kProductRows), jet_end = std::min(e, n);
      block_product(h + b * inputs, e - b, inputs, weight_t, H, z + b * H);
      for (int64_t r = b; r < e; ++r) {
        T* __restrict__ row = z + r * H;
        for (int64_t j = 0; j < H; ++j) row[j] += bias[j];
      }
      for (int64_t m = 0; !columns && m < shape.slabs() && b < jet_end; ++m) {
        const int64_t row = m * n + b;
        block_product(h + (N + row) * inputs, jet_end - b, inputs, weight_t, H,
                      slab_pre + row * H);
      }
      if (act == kTanh) {
        activate_rows<kTanh, T>(shape, z, out, slab_pre, columns, requested, b, e);
      } else {
        activate_rows<kIrelu, T>(shape, z, out, slab_pre, columns, requested, b, e);
      }
    }
  });
}

// out (cols, rows) = in (rows, cols)^T, row-major. With AVX2 in 8 x 8 tiles held in registers
// (unpack, shuffle, then swap 128-bit halves); an element loop does the edges.
inline void transpose(const float* in, int64_t rows, int64_t cols, float* out) {
  int64_t tiled_rows = 0, tiled_cols = 0;
#ifdef __AVX2__
  tiled_rows = rows / 8 * 8;
  tiled_cols = cols / 8 * 8;
  for (int64_t i = 0; i < tiled_rows; i += 8) {
    for (int64_t j = 0; j < tiled_cols; j += 8) {
      __m256 r[8], t[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(in + (i + k) * cols + j);
      for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
      }
      for (int k = 0; k < 8; k += 4) {
        r[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
      }
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(out + (j + k) * rows + i, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
        _mm256_storeu_ps(out + (j + k + 4) * rows + i,
                         _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
      }
    }
  }
#endif
  for (int64_t j = 0; j < cols; ++j) {
    const int64_t first_row = j < tiled_cols ? tiled_rows : 0;
    for (int64_t i = first_row; i < rows; ++i) out[j * rows + i] = in[i * cols + j];
  }
}

// out (G, X) += g^T x for row blocks g (rows, G) and x (rows, X), on one thread. The small-matrix
// kernel takes no transposes: g is transposed into a buffer first, while it is in cache.
template <typename T>
void add_transposed_product(const T* g, int64_t rows, int64_t G, const T* x, int64_t X, T* out) {
  if (rows == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (brgemm_available()) {
      thread_local std::vector<float> g_t;
      g_t.resize(G * rows);
      transpose(g, rows, G, g_t.data());
      brgemm_float(G, X, rows, rows, X, X, true, g_t.data(), x, out);
      return;
    }
  }
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor result = at::from_blob(out, {G, X}, options);
  at::addmm_out(result, result, at::from_blob(const_cast<T*>(g), {rows, G}, options).t(),
                at::from_blob(const_cast<T*>(x), {rows, X}, options));
}

// The output layer, whose backward pass runs inside the blocks of the top hidden layer.
template <typename T>
struct OutputLayer {
  const T* grad_value = nullptr;        // (N, C) gradient w.r.t. the values; null: not the top
  const T* grad_derivatives = nullptr;  // (M n, C) gradient w.r.t. the derivative rows
  const T* weight = nullptr;            // (C, H)
  int64_t width = 0;                    // C
  T* grad_weight = nullptr;             // (C, H), summed into
  const T* grad_rows(int64_t row, int64_t N) const {  // of row `row` of the (R, C) layout
    return row < N ? grad_value + row * width : grad_derivatives + (row - N) * width;
  }
};

// Backward through one hidden layer, block by block. For the top hidden layer the block's
// gradient w.r.t. the layer's outputs `out` is formed first from the output layer's (`top`), with
// that layer's weight-gradient share. The activation's terms turn it into the gradient w.r.t. the
// pre-activations (in place, in `grad`); then, while the block is in cache, the parameter
// gradients (grad_weight += grad^T h with the layer's input h (R, inputs), grad_bias += the value
// rows' sums) and the gradient w.r.t. h, next = grad W. The first layer (h = x) leaves all three
// to its caller and sums its column gradients into `grad_columns` (K, H) instead.
template <typename T>
void backward_layer(int64_t act, const Shape& shape, const T* kept, const T* out,
                    const T* slab_pre, const T* columns, const int64_t* requested, T* grad,
                    const T* weight, const T* h, int64_t inputs, T* next, T* grad_weight,
                    T* grad_bias, T* grad_columns, const OutputLayer<T>& top) {
  const int64_t H = shape.width, N = shape.rows, n = shape.n, C = top.width;
  std::mutex merge;
  parallel_rows(shape, [&](int64_t begin, int64_t end) {
    // Parameter and column gradients are sums over rows: each task sums its rows, then merges.
    std::vector<T> partial(grad_columns ? shape.first * H : 0, T(0));
    std::vector<T> weight_share(next ? H * inputs : 0, T(0)), bias_share(next ? H : 0, T(0));
    std::vector<T> top_share(top.grad_value ? C * H : 0, T(0)), block_sum(H);
    T* partial_ptr = grad_columns ? partial.data() : nullptr;
    for (int64_t b = begin; b < end; b += kProductRows) {
      const int64_t e = std::min(end, b + kProductRows), jet_end = std::min(e, n);
      // The block's rows: values [b, e), then for each slab its rows of jet points [b, jet_end).
      auto for_each_segment = [&](const auto& f) {
        f(b, e - b);
        for (int64_t m = 0; m < shape.slabs() && b < jet_end; ++m) f(N + m * n + b, jet_end - b);
      };
      if (top.grad_value) {
        for_each_segment([&](int64_t row, int64_t rows) {
          const T* grad_out = top.grad_rows(row, N);
          add_transposed_product(grad_out, rows, C, out + row * H, H, top_share.data());
          block_product(grad_out, rows, C, top.weight, H, grad + row * H);
        });
      }
      if (act == kTanh) {
        activation_backward_rows<kTanh, T>(shape, kept, slab_pre, columns, requested, grad,
                                           partial_ptr, b, e);
      } else {
        activation_backward_rows<kIrelu, T>(shape, kept, slab_pre, columns, requested, grad,
                                            partial_ptr, b, e);
      }
      if (!next) continue;
      std::fill(block_sum.begin(), block_sum.end(), T(0));  // summed per block: less rounding
      for (int64_t r = b; r < e; ++r) {
        for (int64_t j = 0; j < H; ++j) block_sum[j] += grad[r * H + j];
      }
      for (int64_t j = 0; j < H; ++j) bias_share[j] += block_sum[j];
      for_each_segment([&](int64_t row, int64_t rows) {
        add_transposed_product(grad + row * H, rows, H, h + row * inputs, inputs,
                               weight_share.data());
        block_product(grad + row * H, rows, H, weight, inputs, next + row * inputs);
      });
    }
    std::lock_guard<std::mutex> lock(merge);
    for (size_t i = 0; i < partial.size(); ++i) grad_columns[i] += partial[i];
    for (size_t i = 0; i < weight_share.size(); ++i) grad_weight[i] += weight_share[i];
    for (size_t i = 0; i < bias_share.size(); ++i) grad_bias[i] += bias_share[i];
    for (size_t i = 0; i < top_share.size(); ++i) top.grad_weight[i] += top_share[i];
  });
}

// Width of the widest hidden layer (all but the output layer).
int64_t widest_hidden(at::TensorList weights) {
  int64_t widest = 0;
  for (size_t i = 0; i + 1 < weights.size(); ++i) widest = std::max(widest, weights[i].size(0));
  return widest;
}

// What a layer keeps for the backward pass besides its output (see Terms): IReLU keeps its z.
bool keeps_z(int64_t act) { return act == kIrelu; }

void check_inputs(const at::Tensor& x, const at::Tensor& directions, int64_t n_jet,
                  at::IntArrayRef activations, at::IntArrayRef requested, at::TensorList weights,
                  at::TensorList biases) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(),
              "dcnn fused MLP jet: x must be a contiguous 2-D CPU tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "dcnn fused MLP jet: float32 or float64 expected, got ", x.scalar_type());
  TORCH_CHECK(0 <= n_jet && n_jet <= x.size(0), "dcnn fused MLP jet: n_jet ", n_jet,
              " outside 0..", x.size(0));
  TORCH_CHECK(weights.size() >= 2 && weights.size() == biases.size() &&
                  activations.size() + 1 == weights.size(),
              "dcnn fused MLP jet: expected L weights, L biases and L - 1 activations");
  TORCH_CHECK(directions.dim() == 2 && directions.size(1) == x.size(1) &&
                  directions.is_contiguous() && directions.scalar_type() == x.scalar_type(),
              "dcnn fused MLP jet: directions must be contiguous (K, D) of x's dtype");
  for (int64_t k : requested) {
    TORCH_CHECK(0 <= k && k < directions.size(0), "dcnn fused MLP jet: requested direction ", k,
                " outside 0..", directions.size(0) - 1);
  }
  for (int64_t act : activations) {
    TORCH_CHECK(act == kTanh || act == kIrelu, "dcnn fused MLP jet: unknown activation ", act);
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    TORCH_CHECK(weights[i].is_contiguous() && biases[i].is_contiguous() &&
                    weights[i].scalar_type() == x.scalar_type() &&
                    biases[i].scalar_type() == x.scalar_type(),
                "dcnn fused MLP jet: parameters must be contiguous and of x's dtype");
  }
}

// Elements of the forward workspace: per hidden layer z (N, H) if kept, the slabs'
// pre-activations (M n, H) except in the first layer, out (R, H); then one (N, max H) buffer
// for the z of layers that do not keep it.
int64_t forward_elements(int64_t rows, int64_t n, int64_t slabs, at::IntArrayRef activations,
                         at::TensorList weights) {
  const int64_t block = rows + slabs * n;
  int64_t total = 0;
  for (size_t i = 0; i + 1 < weights.size(); ++i) {
    const int64_t kept_rows = (keeps_z(activations[i]) ? rows : 0) + (i > 0 ? slabs * n : 0);
    total += (kept_rows + block) * weights[i].size(0);
  }
  return total + rows * widest_hidden(weights);
}

// Forward pass. Returns [value (N, C), derivatives (M, n, C), then per hidden layer z (or an
// empty tensor), the slabs' pre-activations (empty in the first layer) and out]: views into
// `workspace` that the backward pass reads.
std::vector<at::Tensor> mlp_jet_forward(const at::Tensor& x, const at::Tensor& directions,
                                        int64_t n_jet, at::IntArrayRef activations,
                                        at::IntArrayRef requested, at::TensorList weights,
                                        at::TensorList biases, const at::Tensor& workspace) {
  check_inputs(x, directions, n_jet, activations, requested, weights, biases);
  const int64_t N = x.size(0), n = n_jet, K = directions.size(0);
  const int64_t S = static_cast<int64_t>(requested.size()), M = K + S, R = N + M * n;
  TORCH_CHECK(workspace.is_contiguous() && workspace.scalar_type() == x.scalar_type() &&
                  workspace.numel() >= forward_elements(N, n, M, activations, weights),
              "dcnn fused MLP jet: workspace too small or of the wrong dtype");
  int64_t offset = 0;
  auto carve = [&](int64_t r, int64_t c) {
    at::Tensor view = workspace.narrow(0, offset, r * c).view({r, c});
    offset += r * c;
    return view;
  };
  const at::Tensor empty = at::empty({0}, x.options());

  std::vector<at::Tensor> saved;
  at::Tensor h = x;
  const size_t L = weights.size();
  const int64_t scratch_offset = workspace.numel() - N * widest_hidden(weights);
  for (size_t i = 0; i + 1 < L; ++i) {
    const int64_t H = weights[i].size(0), act = activations[i];
    at::Tensor z = keeps_z(act)
        ? carve(N, H)
        : workspace.narrow(0, scratch_offset, N * H).view({N, H});
    at::Tensor slab_pre = i > 0 ? carve(M * n, H) : empty;
    at::Tensor out = carve(R, H);
    const at::Tensor weight_t = weights[i].t().contiguous();
    // The first layer's input x has derivative v_k along direction k: its slabs' pre-activations
    // are the columns v_k W^T (K, H), the same for every row.
    const at::Tensor columns = i == 0 ? at::mm(directions, weight_t).contiguous() : empty;
    const Shape shape{N, n, K, S, H};
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dcnn_mlp_jet_forward", [&] {
      forward_layer<scalar_t>(act, shape, h.data_ptr<scalar_t>(), h.size(1),
                              weight_t.data_ptr<scalar_t>(), biases[i].data_ptr<scalar_t>(),
                              z.data_ptr<scalar_t>(), slab_pre.data_ptr<scalar_t>(),
                              out.data_ptr<scalar_t>(),
                              i == 0 ? columns.data_ptr<scalar_t>() : nullptr, requested.data());
    });
    saved.insert(saved.end(), {keeps_z(act) ? z : empty, slab_pre, out});
    h = out;
  }
  at::Tensor value = at::addmm(biases[L - 1], h.narrow(0, 0, N), weights[L - 1].t());
  at::Tensor derivatives =
      at::mm(h.narrow(0, N, M * n), weights[L - 1].t()).view({M, n, weights[L - 1].size(0)});
  std::vector<at::Tensor> result{value, derivatives};
  result.insert(result.end(), saved.begin(), saved.end());
  return result;
}

// Backward pass. `saved` is what the forward pass returned after its two outputs; `scratch`
// holds two (R, max H) gradient blocks. Returns [grad_x (empty unless input_grad), then
// grad_weight, grad_bias per layer].
std::vector<at::Tensor> mlp_jet_backward(const at::Tensor& grad_value,
                                         const at::Tensor& grad_derivatives, const at::Tensor& x,
                                         const at::Tensor& directions, int64_t n_jet,
                                         at::IntArrayRef activations, at::IntArrayRef requested,
                                         at::TensorList weights, at::TensorList saved,
                                         const at::Tensor& scratch, bool input_grad) {
  const int64_t N = x.size(0), n = n_jet, K = directions.size(0);
  const int64_t S = static_cast<int64_t>(requested.size()), M = K + S, R = N + M * n;
  const size_t L = weights.size();
  TORCH_CHECK(saved.size() == 3 * (L - 1),
              "dcnn fused MLP jet: expected 3 saved tensors per layer");
  TORCH_CHECK(grad_value.is_contiguous() && grad_derivatives.is_contiguous() &&
                  grad_value.scalar_type() == x.scalar_type() &&
                  grad_derivatives.scalar_type() == x.scalar_type(),
              "dcnn fused MLP jet: output gradients must be contiguous and of x's dtype");
  const int64_t widest = widest_hidden(weights);
  TORCH_CHECK(scratch.is_contiguous() && scratch.scalar_type() == x.scalar_type() &&
                  scratch.numel() >= 2 * R * widest,
              "dcnn fused MLP jet: scratch too small or of the wrong dtype");
  at::Tensor buffers[2] = {scratch.narrow(0, 0, R * widest),
                           scratch.narrow(0, R * widest, R * widest)};
  auto block = [&](int which, int64_t width) {
    return buffers[which].narrow(0, 0, R * width).view({R, width});
  };

  std::vector<at::Tensor> grads(2 * L + 1);
  grads[1 + 2 * (L - 1)] = at::zeros_like(weights[L - 1]);  // summed by the top hidden layer
  grads[2 + 2 * (L - 1)] = grad_value.sum(0);
  int current = 0;
  at::Tensor grad = block(current, weights[L - 1].size(1));  // formed by the top hidden layer
  for (size_t i = L - 1; i-- > 0;) {
    const at::Tensor &z = saved[3 * i], &slab_pre = saved[3 * i + 1], &out = saved[3 * i + 2];
    const int64_t H = weights[i].size(0);
    const Shape shape{N, n, K, S, H};
    const at::Tensor& kept = keeps_z(activations[i]) ? z : out;
    at::Tensor columns, grad_columns, next, inputs;
    if (i == 0) {
      columns = at::mm(directions, weights[0].t()).contiguous();
      grad_columns = at::zeros({K, H}, x.options());
    } else {
      current = 1 - current;
      next = block(current, weights[i].size(1));
      inputs = saved[3 * (i - 1) + 2];
      grads[1 + 2 * i] = at::zeros_like(weights[i]);
      grads[2 + 2 * i] = at::zeros({H}, x.options());
    }
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dcnn_mlp_jet_backward", [&] {
      auto pointer = [](const at::Tensor& t) {
        return t.defined() ? t.data_ptr<scalar_t>() : nullptr;  // undefined: not this layer's
      };
      OutputLayer<scalar_t> top;
      if (i == L - 2) {
        top = {grad_value.data_ptr<scalar_t>(), grad_derivatives.data_ptr<scalar_t>(),
               weights[L - 1].data_ptr<scalar_t>(), weights[L - 1].size(0),
               grads[1 + 2 * (L - 1)].data_ptr<scalar_t>()};
      }
      backward_layer<scalar_t>(activations[i], shape, pointer(kept), pointer(out),
                               pointer(slab_pre), pointer(columns), requested.data(),
                               pointer(grad), pointer(weights[i]), pointer(inputs),
                               weights[i].size(1), pointer(next), pointer(grads[1 + 2 * i]),
                               pointer(grads[2 + 2 * i]), pointer(grad_columns), top);
    });
    if (i == 0) {
      at::Tensor grad_values = grad.narrow(0, 0, N);
      // x^T G is much faster than G^T x for the few input columns.
      grads[1] = at::addmm(at::mm(directions.t(), grad_columns), x.t(), grad_values).t();
      grads[2] = grad_values.sum(0);
      grads[0] = input_grad ? at::mm(grad_values, weights[0]) : at::empty({0}, x.options());
      break;
    }
    grad = next;
  }
  return grads;
}

}  // namespace

TORCH_LIBRARY(dcnn_native, m) {
  m.def(
      "mlp_jet_forward(Tensor x, Tensor directions, int n_jet, int[] activations, "
      "int[] requested, Tensor[] weights, Tensor[] biases, Tensor workspace) -> Tensor[]",
      &mlp_jet_forward);
  m.def(
      "mlp_jet_backward(Tensor grad_value, Tensor grad_derivatives, Tensor x, "
      "Tensor directions, int n_jet, int[] activations, int[] requested, Tensor[] weights, "
      "Tensor[] saved, Tensor scratch, bool input_grad) -> Tensor[]",
      &mlp_jet_backward);
  m.def(
      "mlp_jet_forward_elements(int rows, int n_jet, int slabs, int[] activations, "
      "Tensor[] weights) -> int",
      &forward_elements);
}
