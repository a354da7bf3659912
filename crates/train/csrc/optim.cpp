// libtorch ops that tch does not bind, behind a C ABI. Tensors arrive as tch's handles
// (`at::Tensor*`); exceptions become an error message, never an unwind into Rust.
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_fused_adamw.h>

#include <cstring>
#include <exception>
#include <vector>

namespace {
std::vector<at::Tensor> gather(at::Tensor** handles, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*handles[i]);
  return out;
}

int fail(const char* what, char* err, size_t err_len) {
  if (err_len > 0) {
    std::strncpy(err, what, err_len - 1);
    err[err_len - 1] = '\0';
  }
  return 1;
}
}  // namespace

extern "C" {

// One AdamW step (Loshchilov & Hutter 2019) over n parameters with PyTorch's fused kernel,
// exactly what `torch.optim.AdamW(fused=True)` runs: steps are incremented first, then the
// kernel updates params, exp_avgs and exp_avg_sqs in place. Returns 0, or 1 with `err` set.
int leo_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                    at::Tensor** exp_avg_sqs, at::Tensor** steps, size_t n, double lr,
                    double beta1, double beta2, double weight_decay, double eps, char* err,
                    size_t err_len) {
  try {
    auto p = gather(params, n);
    auto g = gather(grads, n);
    auto m = gather(exp_avgs, n);
    auto v = gather(exp_avg_sqs, n);
    auto s = gather(steps, n);
    at::_foreach_add_(s, 1);
    at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what(), err, err_len);
  }
}

// `param.grad = None` for each tensor (PyTorch's `zero_grad(set_to_none=True)`): the next
// backward pass then hands its gradient over instead of adding it to zeros.
int leo_grads_to_none(at::Tensor** params, size_t n, char* err, size_t err_len) {
  try {
    for (size_t i = 0; i < n; ++i) params[i]->mutable_grad().reset();
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what(), err, err_len);
  }
}

// Enters CUDA autocast to `dtype` (0: bfloat16, 1: float16), as `torch.autocast("cuda", dtype)`:
// matrix multiplications run in that dtype, reductions and norms in f32.
int leo_autocast_enter(int dtype, char* err, size_t err_len) {
  try {
    at::autocast::set_autocast_dtype(at::kCUDA, dtype == 0 ? at::kBFloat16 : at::kHalf);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what(), err, err_len);
  }
}

// Leaves autocast and drops its cache of cast weights when the outermost region ends.
int leo_autocast_exit(char* err, size_t err_len) {
  try {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what(), err, err_len);
  }
}
}
