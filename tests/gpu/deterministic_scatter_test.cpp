// The GPU's scatter-adds are deterministic (kernels/sorted_scatter.h, the LayerNorm slices): each is
// run three times from the same inputs under heavy contention (many copies per target row) and
// must give the same bits every time, and match its CPU reference (moe::combine_rows /
// scatter_add_rows, cpu::embedding_backward, cpu::layernorm_backward: sequential sums) within fp32
// rounding. This is what lets tests/gpu/model_gpu_test compare a captured step with an uncaptured
// one bit for bit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "backend/cpu/embedding.h"
#include "backend/cpu/layernorm.h"
#include "gpu_test_support.h"
#include "kernels/embedding.h"
#include "kernels/layernorm.h"
#include "kernels/permute.h"
#include "kernels/sorted_scatter.h"
#include "model/memory_plan.h"
#include "model/moe/dispatcher.h"

namespace finemoe::gpu_test {
namespace {

using DeterministicScatter = GpuTest;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST_F(DeterministicScatter, CombineAndScatterAddRowsRepeatBitForBit) {
  const int64_t tokens = 97, copies = 60001;  // about 600 copies per token
  const int width = 64;
  const auto rows = random_ints(size_t(copies), int32_t(tokens), 80);
  const auto gate = random_vector(size_t(copies), 81), back = random_vector(size_t(copies) * width, 82);
  const auto y0 = random_vector(size_t(tokens) * width, 83);
  auto y = y0, dx = y0;
  moe::combine_rows(back.data(), rows.data(), gate.data(), copies, width, y.data());
  moe::scatter_add_rows(back.data(), rows.data(), copies, width, dx.data());
  auto dev_rows = on_device(rows);
  auto dev_gate = on_device(gate), dev_back = on_device(back);
  std::vector<float> first_y, first_dx;
  for (int run = 0; run < 3; ++run) {
    auto dev_y = on_device(y0), dev_dx = on_device(y0);
    cuda::combine_rows(dev_back.data(), dev_rows.data(), dev_gate.data(), copies, width, dev_y.data());
    cuda::scatter_add_rows(dev_back.data(), dev_rows.data(), copies, width, dev_dx.data());
    const auto got_y = dev_y.download(), got_dx = dev_dx.download();
    if (run == 0) {
      // Sums of ~600 terms in the CPU's order; only fused multiply-adds may round differently.
      EXPECT_LE(relative_max_error(got_y, y), 1e-5);
      EXPECT_LE(relative_max_error(got_dx, dx), 1e-5);
      first_y = got_y;
      first_dx = got_dx;
    } else {
      EXPECT_TRUE(same_bits(got_y, first_y)) << "combine_rows, run " << run;
      EXPECT_TRUE(same_bits(got_dx, first_dx)) << "scatter_add_rows, run " << run;
    }
  }
}

// sorted_scatter_add itself on the rows that stress its per-row chain: one hot row taking most copies
// (a frequent token) and rows of 1 .. 40 copies (around the kernel's 8-copy load batches), in random
// order, a width that is not a multiple of 32. Ungated, the sum is the CPU loop's additions in the
// same order: bit for bit, fp32 and bf16 sources. Gated, within fused multiply-add rounding of the
// CPU loop. Three runs repeat bit for bit. Runtime: well under a second on a GPU.
TEST_F(DeterministicScatter, HotRowSumsInCopyOrder) {
  const int width = 45, hot = 17, rows_out = 50;
  std::vector<int32_t> rows(20011, hot);
  for (int32_t r = 0; r < 40; ++r)
    if (r != hot) rows.insert(rows.end(), size_t(r + 1), r);
  std::shuffle(rows.begin(), rows.end(), std::mt19937(92));
  const int64_t n = int64_t(rows.size());
  const auto src = round_to_bf16(random_vector(size_t(n) * width, 93));  // exact in bf16 as well
  const auto gate = random_vector(size_t(n), 94);
  const auto y0 = random_vector(size_t(rows_out) * width, 95);
  auto plain = y0, gated = y0;  // the CPU loop: copies in ascending order
  for (int64_t c = 0; c < n; ++c)
    for (int col = 0; col < width; ++col) {
      plain[size_t(rows[c]) * width + col] += src[size_t(c) * width + col];
      gated[size_t(rows[c]) * width + col] += gate[c] * src[size_t(c) * width + col];
    }
  auto dev_rows = on_device(rows);
  auto dev_src = on_device(src), dev_gate = on_device(gate);
  auto dev_src16 = on_device(to_bf16(src));
  std::vector<float> first_plain, first_gated;
  for (int run = 0; run < 3; ++run) {
    auto dev_plain = on_device(y0), dev_plain16 = on_device(y0), dev_gated = on_device(y0);
    cuda::sorted_scatter_add<float>(dev_src.data(), dev_rows.data(), nullptr, n, width, dev_plain.data(), nullptr);
    cuda::sorted_scatter_add<bf16>(dev_src16.data(), dev_rows.data(), nullptr, n, width, dev_plain16.data(), nullptr);
    cuda::sorted_scatter_add<float>(dev_src.data(), dev_rows.data(), dev_gate.data(), n, width, dev_gated.data(),
                                    nullptr);
    const auto got_plain = dev_plain.download(), got_plain16 = dev_plain16.download();
    const auto got_gated = dev_gated.download();
    EXPECT_TRUE(same_bits(got_plain, plain)) << "fp32 source, run " << run << ": not the CPU loop's sums";
    EXPECT_TRUE(same_bits(got_plain16, plain)) << "bf16 source, run " << run << ": not the CPU loop's sums";
    if (run == 0) {
      EXPECT_LE(relative_max_error(got_gated, gated), 1e-5);  // 20011 terms, fused multiply-adds
      first_plain = got_plain;
      first_gated = got_gated;
    } else {
      EXPECT_TRUE(same_bits(got_plain, first_plain)) << "run " << run;
      EXPECT_TRUE(same_bits(got_gated, first_gated)) << "gated, run " << run;
    }
  }
}

// The scratch the memory plan counts for a scatter-add (sorted_scatter_scratch_bound) holds what the
// kernel takes on this device (CUB's sort storage queried here), from 1 copy to 4M. Size queries only:
// well under a second (not yet run: no GPU here).
TEST_F(DeterministicScatter, ScratchWithinThePlansBound) {
  for (const int64_t n : {int64_t(1), int64_t(1000), int64_t(32768), int64_t(262144), int64_t(1) << 22}) {
    const double bytes = double(cuda::sorted_scatter_scratch_bytes(n, nullptr));
    const double bound = sorted_scatter_scratch_bound(double(n));
    EXPECT_LE(bytes, bound) << n << " copies";
    std::printf("  scatter-add scratch for %lld copies: %.0f bytes (plan's bound %.0f)\n", static_cast<long long>(n),
                bytes, bound);
  }
}

TEST_F(DeterministicScatter, EmbeddingBackwardRepeatsBitForBit) {
  const int n_seq = 16, context = 256, d = 96, vocab = 7;  // ~600 rows per token id
  const auto tokens = random_ints(size_t(n_seq) * context, vocab, 84);
  const auto dout = random_vector(size_t(n_seq) * context * d, 85);
  const auto dwte0 = random_vector(size_t(vocab) * d, 86), dwpe0 = random_vector(size_t(context) * d, 87);
  auto dwte = dwte0, dwpe = dwpe0;
  cpu::embedding_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), n_seq, context, d);
  auto dev_tokens = on_device(tokens);
  auto dev_dout = on_device(dout);
  std::vector<float> first;
  for (int run = 0; run < 3; ++run) {
    auto dev_dwte = on_device(dwte0), dev_dwpe = on_device(dwpe0);
    cuda::embedding_backward(dev_dwte.data(), dev_dwpe.data(), dev_dout.data(), dev_tokens.data(), n_seq, context, d);
    const auto got = dev_dwte.download();
    if (run == 0) {
      EXPECT_LE(relative_max_error(got, dwte), 1e-5);
      EXPECT_TRUE(same_bits(got, dwte)) << "the same additions in the same order as the CPU";
      first = got;
    } else {
      EXPECT_TRUE(same_bits(got, first)) << "run " << run;
    }
  }
}

TEST_F(DeterministicScatter, LayerNormParameterGradientsRepeatBitForBit) {
  const int64_t rows = 8192;
  const int cols = 200;
  const auto x = random_vector(size_t(rows) * cols, 88), dy = random_vector(size_t(rows) * cols, 89);
  const auto w = random_vector(cols, 90), b = random_vector(cols, 91);
  std::vector<float> y(x.size()), mean(rows), rstd(rows), dx(x.size(), 0.0f), dw(cols, 0.0f), db(cols, 0.0f);
  cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, cols, 1e-5f);
  cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(),
                          rows, cols);
  auto dev_x = on_device(x), dev_dy = on_device(dy), dev_w = on_device(w);
  auto dev_mean = on_device(mean), dev_rstd = on_device(rstd);
  std::vector<float> first_w, first_b;
  for (int run = 0; run < 3; ++run) {
    cuda::DeviceBuffer<float> dev_dx(std::vector<float>(x.size(), 0.0f)), dev_dw(std::vector<float>(cols, 0.0f)),
        dev_db(std::vector<float>(cols, 0.0f));
    cuda::layernorm_backward<float>(dev_dx.data(), dev_dw.data(), dev_db.data(), dev_dy.data(), dev_x.data(),
                                    dev_w.data(), dev_mean.data(), dev_rstd.data(), rows, cols);
    const auto got_w = dev_dw.download(), got_b = dev_db.download();
    if (run == 0) {
      EXPECT_LE(relative_max_error(got_w, dw), 1e-4);  // 8192-term sums in another order
      EXPECT_LE(relative_max_error(got_b, db), 1e-4);
      first_w = got_w;
      first_b = got_b;
    } else {
      EXPECT_TRUE(same_bits(got_w, first_w)) << "dweight, run " << run;
      EXPECT_TRUE(same_bits(got_b, first_b)) << "dbias, run " << run;
    }
  }
}

}  // namespace
}  // namespace finemoe::gpu_test
