// Class embedding (conditional generation): a lookup table of num_classes rows of dim floats
// (pygan/ops/reference.py, embedding_forward / embedding_backward). indices are int64, n of them
// (the caller flattens any index shape; the wrappers convert other integer dtypes):
//   forward   y[i, j]       = weight[indices[i], j]                        y (n, dim)
//   backward  dweight[c, j] = sum_{i : indices[i] == c} dy[i, j]           dweight (num_classes, dim)
//             (a class named twice gets the sum; a class never named gets 0)
//
// Variants (forward and backward together; 0 picks the default):
//   1: a plain port. Forward: one thread per output element, grid-stride. Backward: zero dweight
//      (cudaMemsetAsync), then one thread per dy element atomicAdd-ing it into its class row. The
//      order of the adds into one row is the scheduler's: not bitwise reproducible when a class
//      repeats.
//   2: forward float4: one thread per 4 consecutive floats of a row, when dim % 4 == 0 and both
//      weight and y are 16-byte aligned (else variant 1's forward). Backward deterministic: one
//      block per class row (grid-stride over the classes), its threads over the row's columns,
//      scanning all n indices in order (staged through shared memory, one chunk of blockDim
//      indices at a time) and summing the dy rows of its class in index order: fixed-order sums,
//      no atomics, no memset (every element written). Costs O(num_classes * n) index reads, small
//      for class-conditional GANs (10-1000 classes, batches of a few hundred). Default (not yet
//      timed: no GPU on the CI machine; chosen for the reproducible backward).
//
// Out-of-range indices. The registry (pygan.ops) checks the range only for numpy arrays: reading
// a CuPy array's min/max would synchronise the device with the host on every step. So the kernels
// guard themselves and never use an index outside [0, num_classes) as an address: in the forward
// its y row is NaN; in the backward it makes ALL of dweight NaN (variant 1: each of its threads
// overwrites its column in every class row with NaN, atomically, so no later add can hide it;
// variant 2: every block sees it while scanning and writes its whole row as NaN). The mistake
// shows up as NaN loss and NaN weights instead of a silently wrong model or a memory fault.
#include "common.cuh"
#include "launchers.h"

namespace pygan {
namespace {

constexpr int kBlock = 256;

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fffffff); }

__device__ __forceinline__ bool in_range(std::int64_t k, std::int64_t num_classes) {
  return k >= 0 && k < num_classes;
}

// ---- variant 1: one thread per output element / atomic scatter ----------------------------------
__global__ void forward_direct(const float* weight, const std::int64_t* indices, float* y, std::int64_t n,
                               std::int64_t num_classes, std::int64_t dim) {
  const std::int64_t total = n * dim;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = idx / dim, j = idx % dim;
    const std::int64_t k = indices[i];
    y[idx] = in_range(k, num_classes) ? weight[k * dim + j] : quiet_nan();
  }
}

// dweight must be zero before the launch.
__global__ void backward_atomic(const float* dy, const std::int64_t* indices, float* dweight, std::int64_t n,
                                std::int64_t num_classes, std::int64_t dim) {
  const std::int64_t total = n * dim;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = idx / dim, j = idx % dim;
    const std::int64_t k = indices[i];
    if (in_range(k, num_classes)) {
      atomicAdd(dweight + k * dim + j, dy[idx]);
    } else {
      // Column j of every class row becomes NaN; NaN + anything stays NaN, so the order against
      // other threads' atomicAdds does not matter. The dim threads of this index cover every column.
      for (std::int64_t c = 0; c < num_classes; ++c) atomicExch(dweight + c * dim + j, quiet_nan());
    }
  }
}

// ---- variant 2: float4 forward / deterministic row-per-block backward ---------------------------
// dim % 4 == 0, weight and y 16-byte aligned: every row starts on a float4 boundary.
__global__ void forward_vec4(const float* weight, const std::int64_t* indices, float* y, std::int64_t n,
                             std::int64_t num_classes, std::int64_t dim) {
  const std::int64_t dim4 = dim / 4, total4 = n * dim4;
  const float4* w4 = reinterpret_cast<const float4*>(weight);
  float4* y4 = reinterpret_cast<float4*>(y);
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total4;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = idx / dim4, j4 = idx % dim4;
    const std::int64_t k = indices[i];
    const float nan = quiet_nan();
    y4[idx] = in_range(k, num_classes) ? w4[k * dim4 + j4] : make_float4(nan, nan, nan, nan);
  }
}

// One block per class row c (grid-stride over the classes), thread t over columns j0 + t. Loop
// bounds depend only on block-uniform values, so every thread reaches every __syncthreads().
__global__ void backward_rows(const float* dy, const std::int64_t* indices, float* dweight, std::int64_t n,
                              std::int64_t num_classes, std::int64_t dim) {
  PYGAN_SHARED(std::int64_t, chunk, [kBlock]);
  const std::int64_t width = blockDim.x;
  for (std::int64_t c = blockIdx.x; c < num_classes; c += gridDim.x) {
    for (std::int64_t j0 = 0; j0 < dim; j0 += width) {
      const std::int64_t j = j0 + threadIdx.x;
      float acc = 0.0f;
      bool bad = false;
      for (std::int64_t i0 = 0; i0 < n; i0 += width) {
        const std::int64_t count = n - i0 < width ? n - i0 : width;
        __syncthreads();  // the previous chunk has been read by every thread
        if (threadIdx.x < count) chunk[threadIdx.x] = indices[i0 + threadIdx.x];
        __syncthreads();
        for (std::int64_t t = 0; t < count; ++t) {
          const std::int64_t k = chunk[t];
          bad |= !in_range(k, num_classes);
          if (k == c && j < dim) acc += dy[(i0 + t) * dim + j];
        }
      }
      if (j < dim) dweight[c * dim + j] = bad ? quiet_nan() : acc;
    }
  }
}

// Blocks for a grid-stride loop over `work` items of `per_block` each: enough to fill the device.
int grid_for(std::int64_t work, std::int64_t per_block) {
  const std::int64_t cap = static_cast<std::int64_t>(sm_count()) * 32;
  const std::int64_t blocks = ceil_div<std::int64_t>(work, per_block);
  return static_cast<int>(blocks < cap ? blocks : cap);
}

int resolve(int variant) {
  if (variant == 0) variant = 2;
  check_variant(variant, 2, "embedding");
  return variant;
}

void check_sizes(std::int64_t n, std::int64_t num_classes, std::int64_t dim) {
  if (n < 0 || num_classes < 0 || dim < 0)
    throw std::invalid_argument("embedding: n, num_classes and dim must be >= 0");
}

}  // namespace

std::vector<std::string> embedding_variants() {
  return {"direct: one thread per output element; atomicAdd scatter backward",
          "float4 forward (dim % 4 == 0, aligned; else variant 1); deterministic backward, one block per class "
          "row scanning the indices"};
}

void embedding_forward(const float* weight, const std::int64_t* indices, float* y, std::int64_t n,
                       std::int64_t num_classes, std::int64_t dim, int variant, std::uintptr_t stream) {
  variant = resolve(variant);
  check_sizes(n, num_classes, dim);
  if (n == 0 || dim == 0) return;
  const cudaStream_t st = stream_from(stream);
  if (variant == 2 && dim % 4 == 0 && is_aligned(weight, 16) && is_aligned(y, 16)) {
    PYGAN_LAUNCH(forward_vec4, grid_for(n * (dim / 4), kBlock), kBlock, 0, st, weight, indices, y, n, num_classes,
                 dim);
  } else {
    PYGAN_LAUNCH(forward_direct, grid_for(n * dim, kBlock), kBlock, 0, st, weight, indices, y, n, num_classes, dim);
  }
}

void embedding_backward(const float* dy, const std::int64_t* indices, float* dweight, std::int64_t n,
                        std::int64_t num_classes, std::int64_t dim, int variant, std::uintptr_t stream) {
  variant = resolve(variant);
  check_sizes(n, num_classes, dim);
  if (num_classes == 0 || dim == 0) return;  // dweight is empty
  const cudaStream_t st = stream_from(stream);
  if (variant == 1) {
    CUDA_CHECK(cudaMemsetAsync(dweight, 0, static_cast<std::size_t>(num_classes * dim) * sizeof(float), st));
    if (n == 0) return;
    PYGAN_LAUNCH(backward_atomic, grid_for(n * dim, kBlock), kBlock, 0, st, dy, indices, dweight, n, num_classes,
                 dim);
  } else {
    // Threads per block: the row's columns rounded up to a warp, at most kBlock (n == 0: zeros).
    const std::int64_t width = dim < kBlock ? ceil_div<std::int64_t>(dim, 32) * 32 : kBlock;
    PYGAN_LAUNCH(backward_rows, grid_for(num_classes, 1), static_cast<int>(width), 0, st, dy, indices, dweight, n,
                 num_classes, dim);
  }
}

}  // namespace pygan
