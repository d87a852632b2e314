#pragma once
// Causal multi-head self-attention through cuDNN's fused scaled-dot-product attention (flash
// attention: no T x T score matrix is stored), built with cudnn-frontend's graph API (`sdpa`,
// `sdpa_backward`): bf16 inputs and outputs, fp32 accumulation and softmax statistics.
// Compiled where CMake found cuDNN's headers and cudnn-frontend (FINEMOE_WITH_CUDNN; elsewhere the
// same interface says "not built"). libcudnn is loaded at run time (dlopen: $FINEMOE_CUDNN_LIBRARY,
// else libcudnn.so.9 on the loader's path), so a binary still starts where it is missing and runs
// the cuBLAS path (backend/cuda/attention.h), which stays the reference.
// Layouts as cuda::attention_forward's: qkv [n_seq * T, 3d] (head h of Q, K, V at columns h hs,
// d + h hs, 2d + h hs), out [n_seq * T, d]; stats [n_seq, n_heads, T] (per-row log-sum-exp of the
// scaled scores, what the backward needs instead of the probabilities).
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <string>

namespace finemoe::cuda {

class FusedAttention {
 public:
  // Loads cuDNN once per process, makes a handle on `stream` and builds and checks (check_support)
  // the forward and backward graphs for n_seq sequences. Never throws for a missing library or an
  // unsupported graph: usable() is then false and description() says why.
  FusedAttention(cudaStream_t stream, int n_seq, int context, int n_heads, int d);
  ~FusedAttention();
  FusedAttention(const FusedAttention&) = delete;
  FusedAttention& operator=(const FusedAttention&) = delete;

  bool usable() const;
  // "cuDNN 9.19.0 (libcudnn.so.9: <path>), cudnn-frontend 1.32.0" or the reason it is not usable.
  const std::string& description() const;
  // Builds (once) the graphs for another sequence count (evaluation batches); false if unsupported.
  bool supports(int n_seq);
  // Device workspace both graphs of n_seq need (bytes).
  size_t workspace_bytes(int n_seq);

  void forward(__nv_bfloat16* out, float* stats, const __nv_bfloat16* qkv, int n_seq, void* workspace);
  // dout [n_seq * T, d] -> dqkv [n_seq * T, 3d] (overwritten), from the forward's qkv, out, stats.
  void backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                const __nv_bfloat16* out, const float* stats, int n_seq, void* workspace);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace finemoe::cuda
