// CPU memory ops (kernels/cpu/memory.cpp): allocation, fill, dtype-converting copy, row-block
// copies between [B, N, cols] tensors and host transfers, against plain loops.
#include "cpu_test_util.h"

namespace tls::test {
namespace {

template <class T>
class CpuMemoryTest : public KernelTest<T> {};
TYPED_TEST_SUITE(CpuMemoryTest, FloatTypes);

TEST(CpuMemory, FactoryAndDevice) {
  auto ops = make_cpu_ops();
  ASSERT_NE(ops, nullptr);
  EXPECT_EQ(ops->device(), Device::cpu);
  Tensor t = ops->empty({3, 5}, DType::i32);
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(t.dtype(), DType::i32);
}

TEST(CpuMemory, FillAndCopyIntegers) {
  auto ops = make_cpu_ops();
  Tensor t = ops->empty({7}, DType::i32);
  ops->fill(t, 42);
  EXPECT_EQ(ops->to_host(t), std::vector<double>(7, 42.0));
  Tensor d = ops->empty({7}, DType::f64);
  ops->copy(d, t);
  EXPECT_EQ(ops->to_host(d), std::vector<double>(7, 42.0));
}

TYPED_TEST(CpuMemoryTest, ZerosFillToHostFromHost) {
  Tensor z = this->ops->zeros({2, 3, 5}, this->dt);
  EXPECT_EQ(this->host(z), std::vector<double>(30, 0.0));
  this->ops->fill(z, -1.25);
  EXPECT_EQ(this->host(z), std::vector<double>(30, -1.25));
  std::vector<double> v = random_nonzero(30, 1);
  this->ops->from_host(z, v);
  expect_close(this->host(z), v, this->is_f64 ? 0.0 : 1e-7);
  expect_error([&] { this->ops->from_host(z, std::vector<double>(29)); }, "from_host");
}

TYPED_TEST(CpuMemoryTest, CopyConvertsDtypes) {
  Tensor src = this->rand({3, 7}, 2);
  const std::vector<double> want = this->host(src);
  for (DType to : {DType::f32, DType::f64}) {
    Tensor dst = this->ops->empty({21}, to);  // same numel, another shape
    this->ops->copy(dst, src);
    expect_close(this->ops->to_host(dst), want, to == DType::f32 ? 1e-7 : 0.0, dtype_name(to));
  }
  Tensor bad = this->ops->empty({20}, this->dt);
  expect_error([&] { this->ops->copy(bad, src); }, "copy");
}

TYPED_TEST(CpuMemoryTest, CopyRowsAndAddRows) {
  const int64_t B = 3, Ns = 7, Nd = 5, C = 11, n = 3, s0 = 4, d0 = 1;
  Tensor src = this->rand({B, Ns, C}, 3);
  Tensor dst = this->rand({B, Nd, C}, 4);
  const std::vector<double> s = this->host(src), d = this->host(dst);
  std::vector<double> copied = d, added = d;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < C; ++j) {
        const double v = s[(b * Ns + s0 + i) * C + j];
        copied[(b * Nd + d0 + i) * C + j] = v;
        added[(b * Nd + d0 + i) * C + j] += v;
      }
  Tensor a = this->tensor({B, Nd, C}, d);
  this->ops->copy_rows(dst, d0, src, s0, n);
  expect_close(this->host(dst), copied, 0.0, "copy_rows");
  this->ops->add_rows(a, d0, src, s0, n);
  expect_close(this->host(a), added, this->tol, "add_rows");
  expect_error([&] { this->ops->copy_rows(dst, 3, src, 0, 3); }, "copy_rows");
  expect_error([&] { this->ops->add_rows(dst, 0, src, 5, 3); }, "add_rows");
  Tensor wrong = this->rand({B, Nd, C + 1}, 5);
  expect_error([&] { this->ops->copy_rows(wrong, 0, src, 0, 1); }, "copy_rows");
}

TYPED_TEST(CpuMemoryTest, CopyRowsOneRow) {
  Tensor src = this->rand({1, 1, 3}, 6);
  Tensor dst = this->zeros({1, 2, 3});
  this->ops->copy_rows(dst, 1, src, 0, 1);
  std::vector<double> want(6, 0.0);
  const std::vector<double> s = this->host(src);
  std::copy(s.begin(), s.end(), want.begin() + 3);
  expect_close(this->host(dst), want, 0.0);
}

}  // namespace
}  // namespace tls::test
