#pragma once
// finemoe-bench's GPU subcommands (issue 10, GPU half), bench/bench_gpu.cpp:
//   gpu-expert-gemm  expert GEMMs across G at fixed FLOPs: cuda::GroupedGemm (token choice), its loop
//                    fallback and gemm_strided_batched (expert choice) vs one dense cublasGemmEx
//   gpu-ffn-epilogue the experts' first product with gelu_tanh: cuBLASLt's GELU_AUX / DGELU epilogues
//                    (cuda::GemmEpilogue) vs the product then the activation kernel vs the product
//                    alone, forward and backward, on the expert-choice shapes (h100-100m by default)
//   gpu-alltoall     NcclCommunicator all_to_all vs all_to_all_v (equal counts), and the permute /
//                    unpermute kernels around the exchange, across message sizes
//   gpu-preflight    driver and runtime versions, a 1 GiB cudaMalloc, a bf16 cuBLAS GEMM checked
//                    against float64 (gpu-check.sh's first stage)
//   gpu-peak         large dense GEMMs (bf16, TF32, fp32) and a device-to-device copy: the ceilings
//                    that MFU and bandwidth figures are held against
// Compiled only into CUDA builds (FINEMOE_BENCH_GPU); elsewhere the subcommands say so and fail.
// Without a CUDA device they fail at once (exit status 3) with a message.
#include <cstdio>
#include <string>

#define FINEMOE_BENCH_GPU_USAGE                                                                               \
  "  gpu-expert-gemm [--G 1,2,4,8,16,32,64] [--d-model 1024] [--tokens 8192] [--E 8]\n"                        \
  "               [--precision trainer-bf16,bf16,tf32,fp32] [--paths grouped,batched,loop] [--token-counts equal|multinomial]\n" \
  "  gpu-ffn-epilogue [--G 1,8] [--d-model 768] [--tokens 32768] [--E 8] [--precision bf16,trainer-bf16]\n"          \
  "  gpu-alltoall [--rows-per-expert 1,4,16,64,256,1024] [--experts 64] [--d-model 1024] [--G 8] [--dtype f32,bf16]\n" \
  "  gpu-preflight\n"                                                                                           \
  "  gpu-peak     [--size 4096,8192,16384] [--precision trainer-bf16,bf16,tf32,fp32] [--copy-mib 2048]\n"     \
  "               (gpu-*: CUDA builds, a CUDA device; --device N, --reps 20, --warmup 3, --sample-ms 2)\n"

namespace finemoe::bench {

inline bool is_gpu_subcommand(const std::string& sub) { return sub.rfind("gpu-", 0) == 0; }

#ifdef FINEMOE_BENCH_GPU
// argv[1] is the subcommand. Initialises MPI itself (gpu-alltoall runs one rank per GPU).
int run_gpu(int argc, char** argv);
#else
inline int run_gpu(int argc, char** argv) {
  std::fprintf(stderr,
               "finemoe-bench %s: this finemoe-bench was built without the CUDA backend; configure with "
               "-DFINEMOE_CUDA=ON (scripts/gpu-check.sh does)\n",
               argc > 1 ? argv[1] : "gpu-*");
  return 2;
}
#endif

}  // namespace finemoe::bench
