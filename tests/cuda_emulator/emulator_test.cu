// The CUDA emulator itself: kernels written as for nvcc (this file goes through the same launch
// rewrite as kernels/cuda) compute what they should, and the mistakes the emulator exists to
// catch are caught: a barrier or shuffle reached by part of a block or warp, a missing barrier,
// host access to device memory, writes past an allocation, host pointers handed to kernels,
// shared memory over the default limit without the opt-in, bad launch configurations, copies in
// the wrong direction, and cuBLAS's column-major rules.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mma.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace {

template <class T>
T* device_array(const std::vector<T>& host) {
  void* p = nullptr;
  EXPECT_EQ(cudaMallocAsync(&p, host.size() * sizeof(T), nullptr), cudaSuccess);
  EXPECT_EQ(cudaMemcpyAsync(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  return static_cast<T*>(p);
}

template <class T>
std::vector<T> to_host(const T* dev, size_t n) {
  std::vector<T> out(n);
  EXPECT_EQ(cudaMemcpyAsync(out.data(), dev, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

// Block sums through shared memory and warp shuffles.
__global__ void block_sum_kernel(const float* x, float* out) {
  __shared__ float warp_sums[32];
  float v = x[blockIdx.x * blockDim.x + threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += warp_sums[w];
    out[blockIdx.x] = s;
  }
}

// Each thread reads its right neighbour's value from shared memory, with or without a barrier.
__global__ void neighbour_kernel(int* out, int base, bool barrier) {
  __shared__ int cells[64];
  cells[threadIdx.x] = base + static_cast<int>(threadIdx.x);
  if (barrier) __syncthreads();
  out[threadIdx.x] = cells[(threadIdx.x + 1) % blockDim.x];
}

__global__ void early_exit_kernel(int* out) {
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_kernel(float* out) {
  float v = __shfl_xor_sync(0xffffffffu, static_cast<float>(threadIdx.x), 1);
  out[threadIdx.x] = v;
}

__global__ void write_kernel(float* out, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = 1.0f;
}

__global__ void dynamic_shared_kernel(float* out) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* s = reinterpret_cast<float*>(smem_raw);
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

TEST(CudaEmulator, BlockSumsWithSharedMemoryAndShuffles) {
  std::vector<float> x(4 * 128);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7);
  float* dx = device_array(x);
  float* dout = device_array(std::vector<float>(4));
  block_sum_kernel<<<4, 128>>>(dx, dout);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> got = to_host(dout, 4);
  for (int b = 0; b < 4; ++b) {
    float want = 0;
    for (int i = 0; i < 128; ++i) want += x[static_cast<size_t>(b * 128 + i)];
    EXPECT_EQ(got[static_cast<size_t>(b)], want) << "block " << b;
  }
  cudaFreeAsync(dx, nullptr);
  cudaFreeAsync(dout, nullptr);
}

TEST(CudaEmulator, AMissingBarrierReadsStaleSharedMemory) {
  int* dout = device_array(std::vector<int>(64));
  neighbour_kernel<<<1, 64>>>(dout, 100, true);
  std::vector<int> got = to_host(dout, 64);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], 100 + (i + 1) % 64);
  // Without the barrier, threads run to the end one after another: thread i reads thread
  // i + 1's cell before thread i + 1 has written it, and sees what the last launch left there.
  neighbour_kernel<<<1, 64>>>(dout, 200, false);
  got = to_host(dout, 64);
  int stale = 0;
  for (int i = 0; i < 64; ++i) stale += got[static_cast<size_t>(i)] == 100 + (i + 1) % 64;
  EXPECT_GT(stale, 0);
  cudaFreeAsync(dout, nullptr);
}

TEST(CudaEmulator, FreshDeviceMemoryIsNotZero) {
  void* p = nullptr;
  ASSERT_EQ(cudaMallocAsync(&p, 16 * sizeof(float), nullptr), cudaSuccess);
  const std::vector<float> got = to_host(static_cast<float*>(p), 16);
  for (float v : got) EXPECT_TRUE(std::isnan(v));
  cudaFreeAsync(p, nullptr);
}

TEST(CudaEmulator, DynamicSharedMemoryOver48KiBNeedsTheOptIn) {
  float* dout = device_array(std::vector<float>(64));
  dynamic_shared_kernel<<<1, 64, 64 * sizeof(float)>>>(dout);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> got = to_host(dout, 64);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], 63 - i);
  const size_t big = 64 * 1024;
  dynamic_shared_kernel<<<1, 64, big>>>(dout);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  ASSERT_EQ(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(big)),
            cudaSuccess);
  dynamic_shared_kernel<<<1, 64, big>>>(dout);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  cudaFreeAsync(dout, nullptr);
}

TEST(CudaEmulator, BadLaunchConfigurationsAreLaunchErrors) {
  float* dout = device_array(std::vector<float>(64));
  write_kernel<<<1, 2048>>>(dout, 64);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  write_kernel<<<dim3(1, 70000), 32>>>(dout, 64);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  write_kernel<<<0, 32>>>(dout, 64);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the error is cleared once read";
  cudaFreeAsync(dout, nullptr);
}

TEST(CudaEmulator, CopiesCheckTheirDirection) {
  std::vector<float> host(8, 1.0f);
  float* dev = device_array(host);
  EXPECT_EQ(cudaMemcpyAsync(dev, host.data(), 32, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpyAsync(host.data(), dev, 32, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpyAsync(dev, host.data(), 64, cudaMemcpyHostToDevice), cudaErrorInvalidValue)
      << "past the end of the allocation";
  cudaGetLastError();
  cudaFreeAsync(dev, nullptr);
}

using CudaEmulatorDeathTest = ::testing::Test;

TEST(CudaEmulatorDeathTest, BarrierReachedByPartOfTheBlock) {
  int* dout = device_array(std::vector<int>(32));
  EXPECT_DEATH(early_exit_kernel<<<1, 32>>>(dout), "__syncthreads was reached by 16 of 32 threads");
  cudaFreeAsync(dout, nullptr);
}

TEST(CudaEmulatorDeathTest, FullMaskShuffleInAPartialWarp) {
  float* dout = device_array(std::vector<float>(48));
  EXPECT_DEATH(shuffle_kernel<<<1, 48>>>(dout), "partial warp 1");
  cudaFreeAsync(dout, nullptr);
}

TEST(CudaEmulatorDeathTest, HostCodeTouchingDeviceMemory) {
  float* dev = device_array(std::vector<float>(8, 2.0f));
  EXPECT_DEATH(
      {
        volatile float v = dev[0];
        (void)v;
      },
      "host code touched device memory");
  cudaFreeAsync(dev, nullptr);
}

TEST(CudaEmulatorDeathTest, KernelWritingPastItsAllocation) {
  float* dout = device_array(std::vector<float>(64));
  EXPECT_DEATH(write_kernel<<<1, 64>>>(dout, 64 + 1024), "outside a device allocation");
  cudaFreeAsync(dout, nullptr);
}

TEST(CudaEmulatorDeathTest, HostPointerHandedToAKernel) {
  std::vector<float> host(64);
  EXPECT_DEATH(write_kernel<<<1, 64>>>(host.data(), 64), "argument 1 .* is not device memory");
}

TEST(CudaEmulator, CublasIsColumnMajorAndChecksLeadingDimensions) {
  // A (2x3, column-major, lda 2) = [1 3 5; 2 4 6], B (3x2, ldb 3) = [1 4; 2 5; 3 6].
  float* a = device_array(std::vector<float>{1, 2, 3, 4, 5, 6});
  float* b = device_array(std::vector<float>{1, 2, 3, 4, 5, 6});
  float* c = device_array(std::vector<float>(4, 100.0f));
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const float one = 1, zero = 0;
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, 2, b, 3, &zero, c, 2),
            CUBLAS_STATUS_SUCCESS);
  // C = A B = [22 49; 28 64], column-major.
  EXPECT_EQ(to_host(c, 4), (std::vector<float>{22, 28, 49, 64}));
  // op(A) = A^T (3x2) needs lda >= 3 when A is stored 3 x 2.
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, 2, 2, 3, &one, a, 2, b, 3, &zero, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, 2, b, 3, &zero, c, 1),
            CUBLAS_STATUS_INVALID_VALUE);
  cublasDestroy(h);
  for (float* p : {a, b, c}) cudaFreeAsync(p, nullptr);
}

}  // namespace

namespace {

using namespace nvcuda;

// C [M x N] = A [M x K] B [K x N] (row-major float32 in device memory, rounded to bf16 in shared
// memory): one warp per 16x16 output tile, the block's warps striding over the tiles.
template <int M, int N, int K>
__global__ void wmma_matmul_kernel(const float* a, const float* b, float* c, bool b_col_major) {
  __shared__ __align__(32) __nv_bfloat16 as[M * K];
  __shared__ __align__(32) __nv_bfloat16 bs[K * N];
  __shared__ __align__(32) float cs[M * N];
  for (unsigned i = threadIdx.x; i < M * K; i += blockDim.x) as[i] = __float2bfloat16_rn(a[i]);
  for (unsigned i = threadIdx.x; i < K * N; i += blockDim.x) {
    const unsigned k = i / N, n = i % N;  // B col-major: element (k, n) at n * K + k
    bs[b_col_major ? n * K + k : i] = __float2bfloat16_rn(b[i]);
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  for (int tile = warp; tile < (M / 16) * (N / 16); tile += n_warps) {
    const int tm = tile / (N / 16), tn = tile % (N / 16);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int k0 = 0; k0 < K; k0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
      wmma::load_matrix_sync(fa, as + tm * 16 * K + k0, K);
      if (b_col_major) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
        wmma::load_matrix_sync(fb, bs + tn * 16 * K + k0, K);
        wmma::mma_sync(acc, fa, fb, acc);
      } else {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
        wmma::load_matrix_sync(fb, bs + k0 * N + tn * 16, N);
        wmma::mma_sync(acc, fa, fb, acc);
      }
    }
    wmma::store_matrix_sync(cs + tm * 16 * N + tn * 16, acc, N, wmma::mem_row_major);
  }
  __syncthreads();
  for (unsigned i = threadIdx.x; i < M * N; i += blockDim.x) c[i] = cs[i];
}

// Assumes the accumulator's x[i] of lane l is row l / 2, column (l % 2) * 8 + i (a row-major
// split): the emulator's own fragment layout must make this wrong.
__global__ void wmma_assumed_layout_kernel(float* out) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  const int lane = threadIdx.x % 32;
  for (int i = 0; i < 8; ++i) acc.x[i] = static_cast<float>((lane / 2) * 16 + (lane % 2) * 8 + i);
  __shared__ __align__(32) float tile[256];
  wmma::store_matrix_sync(tile, acc, 16, wmma::mem_row_major);
  __syncthreads();
  for (int i = lane; i < 256; i += 32) out[i] = tile[i];
}

__global__ void wmma_partial_warp_kernel() {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 1.0f);
  __shared__ __align__(32) float tile[256];
  if (threadIdx.x < 16) wmma::store_matrix_sync(tile, acc, 16, wmma::mem_row_major);
}

__global__ void wmma_misaligned_kernel() {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 1.0f);
  __shared__ __align__(32) float tile[300];
  wmma::store_matrix_sync(tile + 4, acc, 16, wmma::mem_row_major);
}

float bf16_round(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

template <int M, int N, int K>
void check_wmma_matmul(bool b_col_major) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> a(M * K), b(K * N);
  for (auto& x : a) x = u(gen);
  for (auto& x : b) x = u(gen);
  float *da = device_array(a), *db = device_array(b), *dc = device_array(std::vector<float>(M * N));
  wmma_matmul_kernel<M, N, K><<<1, 128>>>(da, db, dc, b_col_major);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> c = to_host(dc, M * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      // The plain product of the bf16-rounded operands, in double: the emulator's float32
      // accumulation of K exact products differs from it by float32 rounding only.
      double want = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        const double p = double{bf16_round(a[m * K + k])} * bf16_round(b[k * N + n]);
        want += p;
        mag += std::abs(p);
      }
      EXPECT_NEAR(c[m * N + n], want, 2 * K * 6e-8 * mag) << "element " << m << ", " << n;
    }
  cudaFreeAsync(da, nullptr);
  cudaFreeAsync(db, nullptr);
  cudaFreeAsync(dc, nullptr);
}

}  // namespace

TEST(CudaEmulatorWmma, MatchesAPlainMatmulOfTheBf16Operands) {
  check_wmma_matmul<32, 48, 64>(false);
  check_wmma_matmul<48, 32, 32>(true);
}

TEST(CudaEmulatorWmma, Bf16ConversionRoundsToNearestEven) {
  const float ulp = std::ldexp(1.0f, -7);                        // of bf16 at 1
  EXPECT_EQ(bf16_round(1.0f + ulp / 2), 1.0f);                   // tie: to the even 1.0
  EXPECT_EQ(bf16_round(1.0f + 3 * ulp / 2), 1.0f + 2 * ulp);     // tie: to the even 1 + 2 ulp
  EXPECT_EQ(bf16_round(1.0f + ulp / 2 + ulp / 64), 1.0f + ulp);  // above the tie: up
  EXPECT_EQ(bf16_round(-(1.0f + ulp / 2 - ulp / 64)), -1.0f);    // below the tie: down
  EXPECT_TRUE(std::isnan(bf16_round(std::nanf(""))));
  EXPECT_TRUE(std::isinf(bf16_round(3.4e38f)));  // rounds past the largest bf16
}

TEST(CudaEmulatorWmma, FragmentLayoutIsNotRowMajor) {
  float* d = device_array(std::vector<float>(256));
  wmma_assumed_layout_kernel<<<1, 32>>>(d);
  const std::vector<float> got = to_host(d, 256);
  int in_place = 0;
  for (int i = 0; i < 256; ++i) in_place += got[i] == static_cast<float>(i);
  EXPECT_LT(in_place, 16);  // a layout-assuming kernel scrambles its tile
  cudaFreeAsync(d, nullptr);
}

TEST(CudaEmulatorDeathTest, WmmaInPartOfAWarp) {
  EXPECT_DEATH(wmma_partial_warp_kernel<<<1, 32>>>(), "16 of the 32 lanes of warp 0");
}

TEST(CudaEmulatorDeathTest, WmmaOnAMisalignedPointer) {
  EXPECT_DEATH(wmma_misaligned_kernel<<<1, 32>>>(), "not 256-bit aligned");
}
