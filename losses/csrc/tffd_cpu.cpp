// CPU kernels of the Tf-FD term (losses/tffd_fused.py) for contiguous float32 N x C x H x W features.
// Each makes one pass over a feature where the PyTorch ops it replaces make several, and each works
// one (n, c) map at a time, so a map is read from memory once and reused from the L1 cache.
// Loss values are bit-for-bit those of PyTorch: the same operations in the same order, no
// reassociation (built with -ffp-contract=off, so no fused multiply-add either).
// losses/tffd_cpu.py builds this file; tests/test_tffd.py holds it to the readable losses.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kGrain = 16;  // maps per task: enough work to be worth a thread

void check_feature(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 4 && t.is_contiguous(),
              "tffd_cpu: ", what, " must be a contiguous 4-d float32 CPU tensor, got ", t.sizes(), " ",
              t.scalar_type());
}

// Calls fn(kh, kw) with the window's sides as compile-time constants for the common square windows,
// so that the compiler unrolls and vectorises the loops over a window; as plain integers otherwise.
template <typename Fn>
void with_window(int64_t kh, int64_t kw, Fn&& fn) {
  using Two = std::integral_constant<int64_t, 2>;
  using Four = std::integral_constant<int64_t, 4>;
  using Eight = std::integral_constant<int64_t, 8>;
  if (kh == 2 && kw == 2) return fn(Two{}, Two{});
  if (kh == 4 && kw == 4) return fn(Four{}, Four{});
  if (kh == 8 && kw == 8) return fn(Eight{}, Eight{});
  fn(kh, kw);
}

// out = adaptive_avg_pool2d of one h x w map to out_h x out_w, windows kh x kw that tile the map:
// each window summed row by row, left to right, from 0, then divided by kh and by kw, as PyTorch does.
template <typename KH, typename KW>
void pool_map(const float* __restrict__ map, float* __restrict__ out, int64_t w, int64_t out_h, int64_t out_w,
              KH kh, KW kw) {
  for (int64_t oy = 0; oy < out_h; ++oy) {
    const float* window_row = map + oy * kh * w;
    for (int64_t ox = 0; ox < out_w; ++ox) {
      float sum = 0.0f;
      for (int64_t i = 0; i < kh; ++i)
        for (int64_t j = 0; j < kw; ++j) sum += window_row[i * w + ox * kw + j];
      out[oy * out_w + ox] = sum / kh / kw;
    }
  }
}

// g[y, x] += pooled_grad[y / kh, x / kw] / kh / kw over one h x w map: the gradient through the
// pooling (nearest upsampling, divided as PyTorch's backward divides). wide: a buffer of w floats.
template <typename KH, typename KW>
void add_pooling_grad_map(const float* __restrict__ pooled_grad, float* __restrict__ g, float* __restrict__ wide,
                          int64_t w, int64_t out_h, int64_t out_w, KH kh, KW kw) {
  for (int64_t oy = 0; oy < out_h; ++oy) {
    for (int64_t ox = 0; ox < out_w; ++ox) {
      const float share = pooled_grad[oy * out_w + ox] / kh / kw;
      for (int64_t j = 0; j < kw; ++j) wide[ox * kw + j] = share;
    }
    for (int64_t i = 0; i < kh; ++i) {
      float* __restrict__ row = g + (oy * kh + i) * w;
      for (int64_t x = 0; x < w; ++x) row[x] += wide[x];
    }
  }
}

// sum and sum of squares of n floats: float partial sums in 4 vectors of 4 lanes (independent
// additions, so they overlap; one running sum would wait on each addition in turn), added up in
// float64 at the end. GCC's and Clang's vector extension.
typedef float Float4 __attribute__((vector_size(16)));

void sum_and_squares(const float* __restrict__ x, int64_t n, double& sum, double& squares) {
  Float4 lane_sum[4] = {}, lane_squares[4] = {};
  int64_t k = 0;
  for (; k + 16 <= n; k += 16)
    for (int j = 0; j < 4; ++j) {
      Float4 v;
      std::memcpy(&v, x + k + 4 * j, sizeof v);
      lane_sum[j] += v;
      lane_squares[j] += v * v;
    }
  sum = squares = 0.0;
  for (int j = 0; j < 4; ++j)
    for (int lane = 0; lane < 4; ++lane) {
      sum += lane_sum[j][lane];
      squares += lane_squares[j][lane];
    }
  for (; k < n; ++k) {
    sum += x[k];
    squares += static_cast<double>(x[k]) * x[k];
  }
}

// One pass over the feature for what the forward needs before the channel order is known:
//   [0] the channels by descending salience (int64, C), ties in channel order. The salience of channel
//       c is the mean of its L2-normalised maps, as losses/salience.py defines it: the mean over n of
//       sum(feature[n, c]) / max(||feature[n, c]||_2, eps), over H W; here from sum_and_squares;
//   [1 + k] F.adaptive_avg_pool2d(feature[:, :channels[k]], sizes[k]) for each k, windows tiling the map.
std::vector<at::Tensor> scan(const at::Tensor& feature, double eps, at::IntArrayRef channels, at::IntArrayRef sizes) {
  check_feature(feature, "feature");
  const int64_t n_ = feature.size(0), c_ = feature.size(1), h_ = feature.size(2), w_ = feature.size(3);
  const int64_t hw = h_ * w_;
  TORCH_CHECK(sizes.size() == 2 * channels.size(), "tffd_cpu.scan: one (height, width) per channel count");
  std::vector<at::Tensor> outs{at::empty({c_}, feature.options().dtype(at::kLong))};
  for (size_t k = 0; k < channels.size(); ++k) {
    const int64_t oh = sizes[2 * k], ow = sizes[2 * k + 1];
    TORCH_CHECK(0 < channels[k] && channels[k] <= c_ && oh > 0 && ow > 0 && h_ % oh == 0 && w_ % ow == 0,
                "tffd_cpu.scan: channel count out of range or windows that do not tile the map");
    outs.push_back(at::empty({n_, channels[k], oh, ow}, feature.options()));
  }
  std::vector<float*> pooled_data;
  for (size_t k = 1; k < outs.size(); ++k) pooled_data.push_back(outs[k].mutable_data_ptr<float>());
  std::vector<double> normalised_sum(n_ * c_);  // sum of the normalised map, per (n, c)
  const float* in = feature.const_data_ptr<float>();
  at::parallel_for(0, n_ * c_, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t map = begin; map < end; ++map) {
      const float* __restrict__ src = in + map * hw;
      double sum = 0.0, squares = 0.0;
      sum_and_squares(src, hw, sum, squares);
      normalised_sum[map] = sum / std::max(std::sqrt(squares), eps);
      const int64_t n = map / c_, c = map % c_;
      for (size_t k = 0; k < channels.size(); ++k) {
        if (c >= channels[k]) continue;
        const int64_t oh = sizes[2 * k], ow = sizes[2 * k + 1];
        float* out = pooled_data[k] + (n * channels[k] + c) * oh * ow;
        with_window(h_ / oh, w_ / ow, [&](auto kh, auto kw) { pool_map(src, out, w_, oh, ow, kh, kw); });
      }
    }
  });
  std::vector<double> salience(c_, 0.0);
  for (int64_t n = 0; n < n_; ++n)
    for (int64_t c = 0; c < c_; ++c) salience[c] += normalised_sum[n * c_ + c];
  int64_t* order = outs[0].mutable_data_ptr<int64_t>();
  std::iota(order, order + c_, int64_t{0});
  std::stable_sort(order, order + c_, [&](int64_t a, int64_t b) { return salience[a] > salience[b]; });
  return outs;
}

// (feature[:, redundant] - feature[:, salient]) ** 2, where order lists the h salient channels then
// the h redundant ones: the elementwise part of F.mse_loss(redundant, salient), whose mean() is the loss.
at::Tensor intra_squared_error(const at::Tensor& feature, const at::Tensor& order) {
  check_feature(feature, "feature");
  TORCH_CHECK(order.scalar_type() == at::kLong && order.dim() == 1 && order.size(0) % 2 == 0,
              "tffd_cpu.intra_squared_error: order must be an even-length int64 vector");
  const int64_t n_ = feature.size(0), c_ = feature.size(1), hw = feature.size(2) * feature.size(3);
  const int64_t half = order.size(0) / 2;
  const at::Tensor rank_tensor = order.contiguous();
  const int64_t* rank = rank_tensor.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < 2 * half; ++i) TORCH_CHECK(0 <= rank[i] && rank[i] < c_, "tffd_cpu: channel out of range");
  auto out = at::empty({n_, half, feature.size(2), feature.size(3)}, feature.options());
  const float* in = feature.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  at::parallel_for(0, n_ * half, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t n = pair / half, i = pair % half;
      const float* __restrict__ salient = in + (n * c_ + rank[i]) * hw;
      const float* __restrict__ redundant = in + (n * c_ + rank[half + i]) * hw;
      float* __restrict__ d = dst + pair * hw;
      for (int64_t k = 0; k < hw; ++k) {
        const float diff = redundant[k] - salient[k];
        d[k] = diff * diff;
      }
    }
  });
  return out;
}

// The feature's whole gradient, in one buffer: the Tf-FD part, plus the network's gradient
// `incoming` if given. With order listing the channels by salience (the first h salient, the next h
// redundant, h = C / 2) and d = feature[n, s] - feature[n, r] for the i-th pair (s, r) = (order[i], order[h + i]):
//   intra-layer (left out if coefficient is empty):  d * coefficient[s] into channel s,
//                                                    -(d * coefficient[r]) into channel r,
//                                                    0 into a channel an odd C leaves out;
//   inter-layer, added for each k with c < pooled_grads[k].size(1): the gradient through the pooling,
//     pooled_grads[k][n, c] / kh / kw upsampled (nearest) to the feature's size;
//   then incoming[n, c] + that, as autograd would add the two.
// coefficient holds the intra loss's 2 / numel times its incoming gradient (0 for a channel that gets
// none). Each pair of maps is read once and written once.
at::Tensor feature_grad(const at::Tensor& feature, const at::Tensor& order, const at::Tensor& coefficient,
                        at::TensorList pooled_grads, const std::optional<at::Tensor>& incoming) {
  check_feature(feature, "feature");
  const int64_t n_ = feature.size(0), c_ = feature.size(1), h_ = feature.size(2), w_ = feature.size(3);
  const int64_t hw = h_ * w_, half = c_ / 2;
  const bool intra = coefficient.numel() > 0;
  TORCH_CHECK(order.scalar_type() == at::kLong && order.numel() == c_ &&
                  (!intra || (coefficient.scalar_type() == at::kFloat && coefficient.numel() == c_)),
              "tffd_cpu.feature_grad: order and coefficient need one entry per channel");
  const at::Tensor order_c = order.contiguous(), coefficient_c = coefficient.contiguous();
  const int64_t* rank = order_c.const_data_ptr<int64_t>();
  std::vector<char> seen(c_, 0);
  for (int64_t i = 0; i < c_; ++i) {
    TORCH_CHECK(0 <= rank[i] && rank[i] < c_ && !seen[rank[i]],
                "tffd_cpu: order must be a permutation of the channels");
    seen[rank[i]] = 1;
  }
  for (const at::Tensor& pooled_grad : pooled_grads) {
    check_feature(pooled_grad, "pooled_grad");
    TORCH_CHECK(pooled_grad.size(0) == n_ && pooled_grad.size(1) <= c_ && h_ % pooled_grad.size(2) == 0 &&
                    w_ % pooled_grad.size(3) == 0,
                "tffd_cpu.feature_grad: a pooled gradient does not fit the feature");
  }
  const float* add = nullptr;
  if (incoming.has_value()) {
    check_feature(*incoming, "incoming");
    TORCH_CHECK(incoming->sizes() == feature.sizes(), "tffd_cpu.feature_grad: incoming is not the feature's shape");
    add = incoming->const_data_ptr<float>();
  }
  auto grad = at::empty_like(feature);
  const float* in = feature.const_data_ptr<float>();
  float* out = grad.mutable_data_ptr<float>();
  const float* coef = intra ? coefficient_c.const_data_ptr<float>() : nullptr;

  // The inter-layer gradients as plain numbers, read once here rather than from the tensors per map.
  struct InterGrad {
    const float* data;
    int64_t channels, out_h, out_w;
  };
  std::vector<InterGrad> inter_grads;
  for (const at::Tensor& pooled_grad : pooled_grads)
    inter_grads.push_back({pooled_grad.const_data_ptr<float>(), pooled_grad.size(1), pooled_grad.size(2),
                           pooled_grad.size(3)});
  // The inter-layer part and the incoming gradient of map (n, c), added to its Tf-FD gradient g.
  auto finish_map = [&](int64_t n, int64_t c, float* __restrict__ g, float* wide) {
    for (const InterGrad& inter : inter_grads) {
      if (c >= inter.channels) continue;
      const float* p = inter.data + (n * inter.channels + c) * inter.out_h * inter.out_w;
      with_window(h_ / inter.out_h, w_ / inter.out_w, [&](auto kh, auto kw) {
        add_pooling_grad_map(p, g, wide, w_, inter.out_h, inter.out_w, kh, kw);
      });
    }
    if (add == nullptr) return;
    const float* __restrict__ a = add + (n * c_ + c) * hw;
    for (int64_t k = 0; k < hw; ++k) g[k] = a[k] + g[k];
  };
  // Tasks per sample: the h channel pairs, then the channel an odd C leaves out.
  const int64_t tasks = half + c_ % 2;
  at::parallel_for(0, n_ * tasks, kGrain / 2, [&](int64_t begin, int64_t end) {
    std::vector<float> wide(w_);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / tasks, i = task % tasks;
      if (i == half) {  // the left-out channel
        const int64_t c = rank[2 * half];
        float* __restrict__ g = out + (n * c_ + c) * hw;
        for (int64_t k = 0; k < hw; ++k) g[k] = 0.0f;
        finish_map(n, c, g, wide.data());
        continue;
      }
      const int64_t s = rank[i], r = rank[half + i];
      float* __restrict__ gs = out + (n * c_ + s) * hw;
      float* __restrict__ gr = out + (n * c_ + r) * hw;
      if (intra) {
        const float* __restrict__ fs = in + (n * c_ + s) * hw;
        const float* __restrict__ fr = in + (n * c_ + r) * hw;
        const float cs = coef[s], cr = coef[r];
        for (int64_t k = 0; k < hw; ++k) {
          const float d = fs[k] - fr[k];
          gs[k] = d * cs;
          gr[k] = -(d * cr);
        }
      } else {
        for (int64_t k = 0; k < hw; ++k) gs[k] = gr[k] = 0.0f;
      }
      finish_map(n, s, gs, wide.data());
      finish_map(n, r, gr, wide.data());
    }
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY(tffd_cpu, m) {
  m.def("scan(Tensor feature, float eps, int[] channels, int[] sizes) -> Tensor[]", &scan);
  m.def("intra_squared_error(Tensor feature, Tensor order) -> Tensor", &intra_squared_error);
  m.def("feature_grad(Tensor feature, Tensor order, Tensor coefficient, Tensor[] pooled_grads, "
        "Tensor? incoming) -> Tensor", &feature_grad);
}
